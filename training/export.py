"""Export a ROI-AlignPS* model to one ONNX graph plus its model card (`model.json` beside it).

    python -m training.export --config NAME [--checkpoint CKPT] --out model.onnx [--fp16]
        [--embedding alignps|roi|concat]

Graph inputs: `image` uint8 [1,3,H,W] RGB (resized and padded to a multiple of 32; normalised
inside the graph) and `boxes` float32 [Q,4] (query boxes in input pixels, Q may be 0).
Outputs: `det_boxes` [K,4], `det_scores` [K], `det_embeddings` [K,D], `box_embeddings` [Q,D].
The names and the card's fields are defined in `inference.card`.

A checkpoint written at the end of `python -m training.galw` holds the card fields its run
exported with (input size, search threshold, training summary, metrics) in its header
(`training.checkpoint.CheckpointHeader`), so re-exporting it writes the same card.
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inference.card import (
    BATCH_OUTPUT,
    BATCH_OUTPUT_DOC,
    INPUT_NAMES,
    OUTPUT_DOCS,
    OUTPUT_NAMES,
    ModelCard,
)
from inference.preprocess import PAD_COLOUR, PIXEL_MEAN, PIXEL_STD, SIZE_DIVISOR
from training.checkpoint import CheckpointError, CheckpointHeader, load_checkpoint
from training.model import build_model
from training.model.network import PersonSearchModel

OPSET = 19
MAX_BATCH = 64  # images per run the graph accepts
# the graph's embedding: both branches' (concatenated, renormalised) or one branch's
Embedding = Literal["concat", "alignps", "roi"]
EMBEDDINGS: tuple[Embedding, ...] = get_args(Embedding)


class ExportWrapper(nn.Module):
    """The inference path with ONNX-friendly inputs and the chosen embedding."""

    def __init__(self, model: PersonSearchModel, embedding: Embedding) -> None:
        super().__init__()
        self.model, self.embedding = model, embedding

    def forward(
        self, image: Tensor, boxes: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        out = self.model.detect_and_embed(image, boxes)
        return (
            out["boxes"],
            out["scores"],
            self._pick(out["emb_alignps"], out["emb_roi"]),
            self._pick(out["query_alignps"], out["query_roi"]),
            out["images"],
        )

    def _pick(self, alignps: Tensor, roi: Tensor) -> Tensor:
        if self.embedding == "alignps":
            return alignps
        if self.embedding == "roi":
            return roi
        return F.normalize(torch.cat([alignps, roi], dim=1), dim=1)


def embedding_dim(model: PersonSearchModel, embedding: Embedding) -> int:
    dims = model.embedding_dims
    return dims["alignps"] + dims["roi"] if embedding == "concat" else dims[embedding]


def export_onnx(
    model: PersonSearchModel,
    out_path: Path,
    embedding: Embedding = "concat",
    fp16: bool = False,
    card_fields: Mapping[str, Any] | None = None,
) -> ModelCard:
    """Write the ONNX graph and `model.json` beside it; returns the model card.

    ``card_fields`` are card keys (fields of ``inference.card.ModelCard``, or extra notes) that
    override what the model itself says, e.g. max_size and search_score_threshold.
    """
    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {embedding!r}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportWrapper(half_precision(model) if fp16 else model.eval().cpu(), embedding)
    # two images: an example batch of one would fix the batch dimension at 1
    image = torch.randint(0, 256, (2, 3, 256, 320), dtype=torch.uint8)
    boxes = torch.tensor([[16.0, 16.0, 80.0, 200.0], [100.0, 40.0, 180.0, 240.0]])
    height, width = torch.export.Dim("h32", min=2, max=200), torch.export.Dim("w32", min=2, max=200)
    dynamic_shapes = {
        "image": {
            0: torch.export.Dim("b", min=1, max=MAX_BATCH),
            2: SIZE_DIVISOR * height,
            3: SIZE_DIVISOR * width,
        },
        "boxes": {0: torch.export.Dim("q", min=0, max=4096)},
    }
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapper,
            (image, boxes),
            dynamo=True,
            opset_version=OPSET,
            input_names=list(INPUT_NAMES),
            output_names=[*OUTPUT_NAMES, BATCH_OUTPUT],
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
    assert program is not None  # the dynamo exporter always returns its program
    program.save(str(out_path))
    card = model_card(model, embedding, fp16, card_fields or {}).with_onnx(out_path)
    card.write(out_path)
    return card


def half_precision(model: PersonSearchModel) -> PersonSearchModel:
    """An fp16 copy for export; normalisation, RoIAlign, NMS and the outputs stay fp32."""
    half = copy.deepcopy(model).eval().cpu().half()
    half.pixel_mean, half.pixel_std = model.pixel_mean.float(), model.pixel_std.float()
    return half


def model_card(
    model: PersonSearchModel, embedding: Embedding, fp16: bool, fields: Mapping[str, Any]
) -> ModelCard:
    """The card of an export of ``model``; ``fields`` override or add card keys."""
    config = model.config
    base = ModelCard(
        exporter=f"torch.onnx dynamo (torch {torch.__version__})",
        opset=OPSET,
        precision="fp16" if fp16 else "fp32",
        config=config.to_dict(),
        num_ids=model.num_ids,
        queue_size=model.queue_size,
        attr_dim=model.attr_dim,
        size_divisor=SIZE_DIVISOR,
        pad_colour=PAD_COLOUR,
        pixel_mean=PIXEL_MEAN,
        pixel_std=PIXEL_STD,
        embedding=embedding,
        embedding_dim=embedding_dim(model, embedding),
        thresholds={
            "cls_threshold": config.cls_threshold,
            "pre_nms_top": config.pre_nms_top,
            "nms_iou": config.nms_iou,
            "max_detections": config.max_detections,
        },
        random_weights=True,
        batch=True,
        outputs={**OUTPUT_DOCS, BATCH_OUTPUT: BATCH_OUTPUT_DOC},
    )
    return ModelCard.from_dict({**base.to_dict(), **fields})


def checkpoint_card_fields(header: CheckpointHeader, checkpoint: Path) -> dict[str, Any]:
    """The card fields of a checkpoint's export: those its run exported with when it holds
    them (final checkpoints of ``python -m training.galw``), else what its header records."""
    if header.card is not None:
        return dict(header.card)
    fields: dict[str, Any] = {"random_weights": False, "checkpoint": checkpoint.name}
    for key in ("metrics", "dataset", "max_size"):
        if getattr(header, key) is not None:
            fields[key] = getattr(header, key)
    if header.metrics is not None and header.metrics.get("det_thresh") is not None:
        fields["search_score_threshold"] = header.metrics["det_thresh"]
    return fields


def load_checkpoint_model(path: Path) -> tuple[PersonSearchModel, CheckpointHeader]:
    """Rebuild the model a training checkpoint describes and load its weights (eval mode);
    CheckpointError when the file is not one."""
    state = load_checkpoint(path)
    header = CheckpointHeader.from_state(state, path)
    if "model" not in state:
        raise CheckpointError(f"{path}: holds no weights (key 'model')")
    model = build_model(header.config, header.num_ids, header.queue_size, header.attr_dim)
    model.load_state_dict(state["model"])
    return model.eval(), header


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="model config name (from the checkpoint if omitted)")
    parser.add_argument("--checkpoint", type=Path, help="training checkpoint (.pt)")
    parser.add_argument("--out", type=Path, required=True, help="output .onnx path")
    parser.add_argument("--fp16", action="store_true", help="half-precision graph")
    parser.add_argument("--embedding", choices=EMBEDDINGS, default="concat")
    args = parser.parse_args(argv)
    extra: dict[str, Any] = {}
    if args.checkpoint is not None:
        try:
            model, header = load_checkpoint_model(args.checkpoint)
        except CheckpointError as error:
            parser.error(str(error))
        if args.config and args.config != model.config.name:
            parser.error(f"--config {args.config} but the checkpoint is {model.config.name}")
        extra = checkpoint_card_fields(header, args.checkpoint)
    elif args.config:
        print(
            "WARNING: no --checkpoint: exporting RANDOM WEIGHTS (for tests and speed benchmarks "
            "only; this model finds nobody)",
            file=sys.stderr,
        )
        model = build_model(args.config, num_ids=1, queue_size=0)
    else:
        parser.error("give --config or --checkpoint")
    card = export_onnx(model, args.out, args.embedding, args.fp16, extra)
    print(f"wrote {args.out} ({card.embedding} {card.embedding_dim}-d) and model.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
