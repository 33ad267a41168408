"""Training throughput of a run from its log: ``python -m training.throughput RUN [RUN ...]``.

Every step record of ``train_log.jsonl`` holds ``images_per_second``: the global batch's images
trained per second since the previous record. This prints, per run and phase, their mean
weighted by time (total images over total seconds), leaving out the first ``--skip`` records
(start-up: data loader, first allocations). It is how docs/BENCHMARKS.md compares one process
with several (``torchrun --nproc_per_node N``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def phase_throughput(log_path: Path, skip: int = 1) -> dict[str, float]:
    """Per phase, images per second over its step records after the first ``skip`` (>= 1:
    the first record has no interval before it)."""
    if skip < 1:
        raise ValueError(f"skip must be >= 1, got {skip}")
    records = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines()]
    by_phase: dict[str, list[dict]] = {}
    for record in records:
        if record.get("event") == "step" and "images_per_second" in record:
            by_phase.setdefault(record["phase"], []).append(record)
    result = {}
    for phase, steps in by_phase.items():
        # consecutive records' times give each interval's length; its rate gives its images
        timed = steps[skip:]
        seconds = [b["time"] - a["time"] for a, b in zip(steps[skip - 1 : -1], timed, strict=True)]
        if not seconds or sum(seconds) <= 0:
            continue
        images = sum(s * r["images_per_second"] for s, r in zip(seconds, timed, strict=True))
        result[phase] = images / sum(seconds)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.throughput", description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (--out of a run)")
    parser.add_argument("--skip", type=int, default=1, help="first step records left out (>= 1)")
    args = parser.parse_args(argv)
    if args.skip < 1:
        parser.error("--skip must be >= 1 (the first record has no interval before it)")
    for run in args.runs:
        log_path = run / "train_log.jsonl"
        if not log_path.is_file():
            print(f"error: {log_path}: no such training log", file=sys.stderr)
            return 2
        for phase, rate in phase_throughput(log_path, args.skip).items():
            print(f"{run}\t{phase}\t{rate:.3f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
