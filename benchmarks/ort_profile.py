"""Where an exported graph spends its time in ONNX Runtime: kernel time per op type.

    python -m benchmarks.ort_profile MODEL.onnx [MODEL.onnx ...] [--size 1500x900] [--runs 3]
        [--threads 2]

Each graph (with its model.json beside it) runs ``--runs`` times on one random frame of
``--size``, prepared as the service's engine prepares it, with ONNX Runtime's profiler on; the
table gives each op type's kernel milliseconds per run and share of the total, largest first.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from inference.card import OUTPUT_NAMES, load_model_card
from inference.preprocess import resize_and_pad

SHOWN = 8  # op types per graph; the rest are summed


def kernel_ms(model: Path, frame: np.ndarray, runs: int, threads: int) -> dict[str, float]:
    """Kernel milliseconds per run of each op type."""
    card = load_model_card(model).card
    image = resize_and_pad(frame, card.max_size, card.size_divisor, pad_colour=card.pad_colour)
    feeds = {"image": image.image[None], "boxes": np.zeros((0, 4), np.float32)}
    with tempfile.TemporaryDirectory() as work:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(work) / "profile")
        session = ort.InferenceSession(str(model), options, ["CPUExecutionProvider"])
        for _ in range(runs):
            session.run(list(OUTPUT_NAMES), feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1000 / runs
    return dict(per_op)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="exported model.onnx files")
    parser.add_argument("--size", default="1500x900", help="frame WxH")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    for model in args.models:
        per_op = kernel_ms(model, frame, args.runs, args.threads)
        total = sum(per_op.values())
        ranked = sorted(per_op.items(), key=lambda item: -item[1])
        shown = ranked[:SHOWN] + [("(the rest)", sum(ms for _, ms in ranked[SHOWN:]))]
        print(f"{model}: {total:.0f} ms of kernels per run ({args.threads} threads, {args.size})")
        print("| op | ms/run | share |\n|---|---:|---:|")
        for op, ms in shown:
            print(f"| {op} | {ms:.0f} | {100 * ms / total:.0f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
