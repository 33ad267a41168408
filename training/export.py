"""Export a ROI-AlignPS* model to one ONNX graph plus its model card (`model.json` beside it).

    python -m training.export --config NAME [--checkpoint CKPT] --out model.onnx [--fp16]
        [--embedding alignps|roi|concat]

Graph inputs: `image` uint8 [1,3,H,W] RGB (resized and padded to a multiple of 32; normalised
inside the graph) and `boxes` float32 [Q,4] (query boxes in input pixels, Q may be 0).
Outputs: `det_boxes` [K,4], `det_scores` [K], `det_embeddings` [K,D], `box_embeddings` [Q,D].
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.model import build_model
from training.model.config import resolve_config
from training.model.network import PersonSearchModel
from training.preprocess import DEFAULT_MAX_SIZE, PIXEL_MEAN, PIXEL_STD, SIZE_DIVISOR

OPSET = 19
EMBEDDINGS = ("concat", "alignps", "roi")
INPUT_NAMES = ["image", "boxes"]
OUTPUT_NAMES = ["det_boxes", "det_scores", "det_embeddings", "box_embeddings"]


class ExportWrapper(nn.Module):
    """The inference path with ONNX-friendly inputs and the chosen embedding."""

    def __init__(self, model: PersonSearchModel, embedding: str) -> None:
        super().__init__()
        self.model, self.embedding = model, embedding

    def forward(self, image: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        out = self.model.detect_and_embed(image, boxes)
        return (
            out["boxes"],
            out["scores"],
            self._pick(out["emb_alignps"], out["emb_roi"]),
            self._pick(out["query_alignps"], out["query_roi"]),
        )

    def _pick(self, alignps: Tensor, roi: Tensor) -> Tensor:
        if self.embedding == "alignps":
            return alignps
        if self.embedding == "roi":
            return roi
        return F.normalize(torch.cat([alignps, roi], dim=1), dim=1)


def embedding_dim(model: PersonSearchModel, embedding: str) -> int:
    dims = model.embedding_dims
    return dims["alignps"] + dims["roi"] if embedding == "concat" else dims[embedding]


def export_onnx(
    model: PersonSearchModel,
    out_path: Path,
    embedding: str = "concat",
    fp16: bool = False,
    card_extra: dict | None = None,
) -> dict:
    """Write the ONNX graph and `model.json` beside it; returns the model card."""
    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {embedding!r}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportWrapper(half_precision(model) if fp16 else model.eval().cpu(), embedding)
    image = torch.randint(0, 256, (1, 3, 256, 320), dtype=torch.uint8)
    boxes = torch.tensor([[16.0, 16.0, 80.0, 200.0], [100.0, 40.0, 180.0, 240.0]])
    height, width = torch.export.Dim("h32", min=2, max=200), torch.export.Dim("w32", min=2, max=200)
    dynamic_shapes = {
        "image": {2: SIZE_DIVISOR * height, 3: SIZE_DIVISOR * width},
        "boxes": {0: torch.export.Dim("q", min=0, max=4096)},
    }
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapper,
            (image, boxes),
            dynamo=True,
            opset_version=OPSET,
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
    program.save(str(out_path))
    card = json.dumps(model_card(model, out_path, embedding, fp16, card_extra or {}), indent=2)
    out_path.with_name("model.json").write_text(card)
    return json.loads(card)


def half_precision(model: PersonSearchModel) -> PersonSearchModel:
    """An fp16 copy for export; normalisation, RoIAlign, NMS and the outputs stay fp32."""
    half = copy.deepcopy(model).eval().cpu().half()
    half.pixel_mean, half.pixel_std = model.pixel_mean.float(), model.pixel_std.float()
    return half


def model_card(
    model: PersonSearchModel, onnx_path: Path, embedding: str, fp16: bool, extra: dict
) -> dict:
    config = model.config
    card = {
        "format": "onnx",
        "onnx_file": onnx_path.name,
        "onnx_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "exporter": f"torch.onnx dynamo (torch {torch.__version__})",
        "opset": OPSET,
        "precision": "fp16" if fp16 else "fp32",
        "config": config.to_dict(),
        "num_ids": model.num_ids,
        "queue_size": model.queue_size,
        "attr_dim": model.attr_dim,
        "inputs": {
            "image": "uint8 [1,3,H,W] RGB, resized to fit max_size and zero-padded "
            "(bottom/right) to a multiple of size_divisor",
            "boxes": "float32 [Q,4] x1,y1,x2,y2 in input pixels (Q may be 0)",
        },
        "outputs": {
            "det_boxes": "float32 [K,4] x1,y1,x2,y2 in input pixels",
            "det_scores": "float32 [K] sigmoid(cls) * sigmoid(centerness)",
            "det_embeddings": "float32 [K,D] L2-normalised",
            "box_embeddings": "float32 [Q,D] L2-normalised",
        },
        "max_size": list(DEFAULT_MAX_SIZE),
        "size_divisor": SIZE_DIVISOR,
        "pixel_mean": list(PIXEL_MEAN),
        "pixel_std": list(PIXEL_STD),
        "embedding": embedding,
        "embedding_dim": embedding_dim(model, embedding),
        "score": "cls*ctr",
        "thresholds": {
            "cls_threshold": config.cls_threshold,
            "pre_nms_top": config.pre_nms_top,
            "nms_iou": config.nms_iou,
            "max_detections": config.max_detections,
        },
        "random_weights": True,
    }
    card.update(extra)
    return card


def load_checkpoint_model(path: Path) -> tuple[PersonSearchModel, dict]:
    """Rebuild the model a training checkpoint describes and load its weights (eval mode)."""
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=False)
    missing = {"model", "config", "num_ids", "queue_size"} - set(ckpt)
    if missing:
        raise ValueError(f"checkpoint {path} lacks {sorted(missing)}")
    model = build_model(
        resolve_config(ckpt["config"]), ckpt["num_ids"], ckpt["queue_size"], ckpt.get("attr_dim", 0)
    )
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="model config name (from the checkpoint if omitted)")
    parser.add_argument("--checkpoint", type=Path, help="training checkpoint (.pt)")
    parser.add_argument("--out", type=Path, required=True, help="output .onnx path")
    parser.add_argument("--fp16", action="store_true", help="half-precision graph")
    parser.add_argument("--embedding", choices=EMBEDDINGS, default="concat")
    args = parser.parse_args(argv)
    extra: dict = {}
    if args.checkpoint is not None:
        model, ckpt = load_checkpoint_model(args.checkpoint)
        if args.config and args.config != model.config.name:
            parser.error(f"--config {args.config} but the checkpoint is {model.config.name}")
        extra = {"random_weights": False, "checkpoint": args.checkpoint.name}
        extra.update({k: ckpt[k] for k in ("metrics", "dataset") if k in ckpt})
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
    print(f"wrote {args.out} ({card['embedding']} {card['embedding_dim']}-d) and model.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
