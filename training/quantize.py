"""Int8 copy of an exported model for the CPU: ONNX Runtime static quantisation of its convs.

    python -m training.quantize --model model.onnx --out int8/model.onnx --frames DIR [--count 8]

Weights per output channel (int8, 7-bit range: x86 CPUs without VNNI, such as the AMD EPYC the
benchmarks first ran on, saturate full-range u8 x s8 products; with VNNI it costs a bit of
precision and nothing else) and activations (uint8) from min/max calibration on frames (the
first ``--count`` .jpg under ``--frames``, prepared as the engine prepares them). Only Conv is
quantised (DeformConv has no int8 kernel, and rewriting it into quantisable ops is slower:
``benchmarks.deform_conv``; RoIAlign, NMS and the embedding heads stay fp32), and
not all of them (``KEEP_FP32``).
The card beside the output is the source's with ``precision: int8`` and the new checksum.
``python -m benchmarks.latency --int8`` measures what it costs in accuracy and gains in time.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from inference.boxes import box_iou
from inference.card import ModelCard, load_model_card
from inference.engine import Engine
from inference.preprocess import load_rgb, resize_and_pad

QUANTISED_OPS = ("Conv",)
# Convs left in fp32, by weight-name prefix: the deformable convs' offset predictors (their
# outputs are sampling positions; 18 channels, cheap) and the ROI branch's res5 (K crops of
# 14x14, a few % of the time). Measured on the demo model (docs/BENCHMARKS.md): with the ROI
# branch in int8 the worst embedding fell to cosine 0.989 of fp32, without it 0.999.
KEEP_FP32 = ("model.neck.", "model.roi_head.")
MATCH_IOU = 0.5  # an int8 detection at least this close to an fp32 one is the same person


class _Frames(CalibrationDataReader):
    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def calibration_feeds(card: ModelCard, frames: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Graph inputs for HxWx3 uint8 frames, resized and padded as the engine does."""
    feeds = []
    for frame in frames:
        prepared = resize_and_pad(
            frame, card.max_size, card.size_divisor, pad_colour=card.pad_colour
        )
        feeds.append({"image": prepared.image[None], "boxes": np.zeros((0, 4), np.float32)})
    return feeds


def quantize_int8(
    model_path: Path,
    out_path: Path,
    frames: Sequence[np.ndarray],
    keep_fp32: Sequence[str] = KEEP_FP32,
) -> ModelCard:
    """Write the int8 graph and its card; returns the card. Convs whose weight's name starts
    with one of ``keep_fp32`` stay fp32."""
    source = load_model_card(model_path)
    if source.card.precision != "fp32":
        raise ValueError(f"{model_path} is {source.card.precision}; quantise an fp32 export")
    if not frames:
        raise ValueError("calibration needs at least one frame")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    quantize_static(
        str(model_path),
        str(out_path),
        _Frames(calibration_feeds(source.card, frames)),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(QUANTISED_OPS),
        per_channel=True,
        reduce_range=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=_convs_named(model_path, keep_fp32),
    )
    card = dataclasses.replace(source.card, precision="int8").with_onnx(out_path)
    card.write(out_path)
    return card


def _convs_named(model_path: Path, prefixes: Sequence[str]) -> list[str]:
    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [
        node.name
        for node in graph.node
        if node.op_type == "Conv"
        and len(node.input) > 1
        and node.input[1].startswith(tuple(prefixes))
    ]


def agreement(fp32: Engine, int8: Engine, frames: Sequence[np.ndarray]) -> dict[str, float]:
    """How far the int8 graph is from fp32 on the same frames, each at its engine's min_score:
    the share of fp32 detections that int8 finds too (IoU >= 0.5) and of int8 detections that
    fp32 finds, the largest score gap of such pairs, and the cosine between embeddings of the
    same boxes (the fp32 detections' boxes given to both graphs as query boxes)."""
    cosines: list[float] = []
    gaps: list[float] = [0.0]
    found = matched = int8_only = 0
    for frame in frames:
        reference, candidate = fp32.detect(frame), int8.detect(frame)
        overlap = box_iou(reference.boxes, candidate.boxes)  # [fp32, int8]
        if overlap.size:
            best = overlap.argmax(axis=1)
            hit = overlap.max(axis=1) >= MATCH_IOU
            gaps.extend(np.abs(reference.scores[hit] - candidate.scores[best[hit]]).tolist())
            matched += int(hit.sum())
            int8_only += int((overlap.max(axis=0) < MATCH_IOU).sum())
        else:
            int8_only += len(candidate.boxes)
        found += len(reference.boxes)
        ours = fp32.run_frame(frame, reference.boxes).box_embeddings
        theirs = int8.run_frame(frame, reference.boxes).box_embeddings
        cosines.extend(np.sum(ours * theirs, axis=1).tolist())
    return {
        "fp32_detections": found,
        "found_by_int8": round(matched / max(found, 1), 3),
        "int8_only": int8_only,
        "max_score_gap": round(max(gaps), 4),
        "min_cosine": round(min(cosines, default=1.0), 4),
        "median_cosine": round(float(np.median(cosines)) if cosines else 1.0, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="fp32 model.onnx")
    parser.add_argument("--out", type=Path, required=True, help="int8 model.onnx to write")
    parser.add_argument("--frames", type=Path, required=True, help="folder of .jpg frames")
    parser.add_argument("--count", type=int, default=8, help="calibration frames")
    args = parser.parse_args(argv)
    paths = sorted(args.frames.glob("*.jpg"))[: args.count]
    if not paths:
        parser.error(f"no .jpg frames in {args.frames}")
    quantize_int8(args.model, args.out, [load_rgb(path) for path in paths])
    print(f"wrote {args.out} (int8 convs, {len(paths)} calibration frames) and model.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
