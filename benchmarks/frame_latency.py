"""Per-frame latency of exported models in the service's ONNX Runtime engine.

    python -m benchmarks.frame_latency --model models/demo/model.onnx --model OTHER.onnx \
        --frames DIR [--runs 30]

Each model runs `Engine.run_frame` (resize to its card's input size, pad, graph, boxes back to
the frame) on the same frames, the models interleaved frame by frame so that a busy machine
slows them alike (ONNX Runtime's default threads: one per core). After a warm-up of three
frames per model the figures are the median and the 10th/90th percentiles in ms per frame, and
the detections per frame at the card's search score threshold. Torch-free.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from time import perf_counter

import numpy as np

from inference.engine import Engine
from inference.preprocess import load_rgb

WARM_UP = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.frame_latency")
    parser.add_argument("--model", type=Path, action="append", required=True)
    parser.add_argument("--frames", type=Path, required=True, help="folder of .jpg frames")
    parser.add_argument("--runs", type=int, default=30, help="timed frames per model")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    paths = sorted(args.frames.glob("*.jpg"))[: WARM_UP + args.runs]
    if len(paths) < WARM_UP + 1:
        parser.error(f"{args.frames}: needs at least {WARM_UP + 1} .jpg frames")
    frames = [load_rgb(path) for path in paths]
    engines = [Engine(path, ["cpu"]) for path in args.model]
    times: list[list[float]] = [[] for _ in engines]
    found: list[list[int]] = [[] for _ in engines]
    for index, frame in enumerate(frames):
        for slot, engine in enumerate(engines):
            started = perf_counter()
            outputs = engine.run_frame(frame)
            if index >= WARM_UP:
                times[slot].append((perf_counter() - started) * 1000)
                kept = outputs.detections.scores >= engine.min_score
                found[slot].append(int(kept.sum()))
    rows = []
    for path, engine, samples, counts in zip(args.model, engines, times, found, strict=True):
        p10, p50, p90 = np.percentile(samples, [10, 50, 90])
        long_side, short_side = engine.card.max_size
        rows.append(
            {
                "model": str(path),
                "input": f"{long_side}x{short_side}",
                "frames": len(samples),
                "p50_ms": round(float(p50), 1),
                "p10_ms": round(float(p10), 1),
                "p90_ms": round(float(p90), 1),
                "detections_per_frame": round(float(np.mean(counts)), 1),
            }
        )
    if args.json:
        print(json.dumps(rows))
        return 0
    print("| model | input | frames | p50 ms | p10 ms | p90 ms | detections/frame |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(str(value) for value in row.values()) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
