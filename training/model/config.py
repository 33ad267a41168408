"""Named ROI-AlignPS* configurations.

`r50` is the paper's network; `r18` a smaller demo model; `tiny` a narrow network that trains
in minutes on a CPU (tests, CI). Use `dataclasses.replace` to derive variants (e.g. another norm).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

Block = Literal["basic", "bottleneck"]  # ResNet-18/34 blocks, ResNet-50 blocks
Norm = Literal["frozen_bn", "bn", "gn"]
BLOCKS: tuple[Block, ...] = get_args(Block)
NORMS: tuple[Norm, ...] = get_args(Norm)


@dataclass(frozen=True)
class ModelConfig:
    """Everything that shapes the network; thresholds used at inference are part of it."""

    name: str
    block: Block
    layers: tuple[int, int, int, int]  # blocks per stage, torchvision layer1..layer4
    base_width: int = 64  # channels of layer1 before expansion (64 = torchvision)
    norm: Norm = "frozen_bn"
    neck_channels: int = 256  # P3 channels = AlignPS embedding dimension
    head_convs: int = 4  # convs per FCOS tower
    roi_emb_dim: int = 256  # ROI embedding dimension (two projections of half this size)
    # RPN (training only)
    rpn_pre_nms: int = 12000
    rpn_post_nms: int = 2000
    rpn_batch: int = 256
    # ROI sampling (training only)
    roi_batch: int = 128
    roi_pos_fraction: float = 0.5
    # OIM / triplet
    fcos_oim_scale: float = 10.0
    fcos_oim_focal: bool = False  # the reference AlignPS head's -(1-p)^2 log p variant
    fcos_queue_dims: int = 0  # dims of a feature written to the FCOS queue; 0 = all, ref 64
    roi_oim_scale: float = 30.0
    oim_momentum: float = 0.5
    triplet_margin: float = 0.3
    # crop queries (docs/ARCHITECTURE.md, "Crop queries"): this many labelled people per batch
    # are cut out and embedded alone, as the service embeds an operator's crop, with OIM against
    # the same lookup tables (task crop_reid); 0 = off, the reference's training
    crop_queries: int = 0
    crop_jitter: float = 0.1  # each side of a cut moves by up to this fraction of its box
    # inference
    pre_nms_top: int = 1000
    cls_threshold: float = 0.05
    nms_iou: float = 0.5
    max_detections: int = 100
    # anchor sizes for the RPN on C4
    anchor_sizes: tuple[int, ...] = field(default=(32, 64, 128, 256, 512))

    def __post_init__(self) -> None:
        # the choices are Literals, which a dict from JSON or the command line is not checked for
        for name, value, choices in (("block", self.block, BLOCKS), ("norm", self.norm, NORMS)):
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """A config from ``to_dict``'s JSON object; a key that is no field raises TypeError."""
        tuples = {"layers", "anchor_sizes"}
        values: dict[str, Any] = {k: tuple(v) if k in tuples else v for k, v in data.items()}
        return cls(**values)


CONFIGS: dict[str, ModelConfig] = {
    "r50": ModelConfig(name="r50", block="bottleneck", layers=(3, 4, 6, 3)),
    "r18": ModelConfig(name="r18", block="basic", layers=(2, 2, 2, 2), norm="bn"),
    "tiny": ModelConfig(
        name="tiny",
        block="basic",
        layers=(1, 1, 1, 1),
        base_width=16,
        norm="gn",
        neck_channels=32,
        head_convs=2,
        roi_emb_dim=32,
        rpn_pre_nms=600,
        rpn_post_nms=100,
        rpn_batch=128,
        roi_batch=16,
        anchor_sizes=(16, 32, 64, 128, 256),
    ),
}


def resolve_config(config: str | ModelConfig | Mapping[str, Any]) -> ModelConfig:
    """A config from its name, a dict (as stored in checkpoints) or itself."""
    if isinstance(config, ModelConfig):
        return config
    if isinstance(config, Mapping):
        return ModelConfig.from_dict(config)
    if config not in CONFIGS:
        raise ValueError(f"unknown model config {config!r}; choose one of {sorted(CONFIGS)}")
    return CONFIGS[config]
