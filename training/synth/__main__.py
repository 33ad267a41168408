"""python -m training.synth --out DIR --format prw|cuhk [--frames N] [--identities K] ..."""

from __future__ import annotations

import argparse
import sys
import time

from training.synth.generate import WRITERS, generate


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected WxH such as 640x360, got {text!r}") from error
    return width, height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.synth",
        description="Write a synthetic person-search dataset in the PRW or CUHK-SYSU layout.",
    )
    parser.add_argument("--out", required=True, help="output folder (new or empty)")
    parser.add_argument("--format", choices=sorted(WRITERS), default="prw")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--identities", type=int, default=50, help="half train, half test")
    parser.add_argument("--cameras", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=_size, default=(640, 360), help="frame WxH")
    parser.add_argument("--test-fraction", type=float, default=0.5, help="share of test frames")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        out = generate(
            args.out,
            args.format,
            args.frames,
            args.identities,
            args.cameras,
            args.seed,
            args.size,
            args.test_fraction,
            progress=not args.quiet,
        )
    except (ValueError, FileExistsError) as error:
        parser.error(str(error))
    elapsed = time.perf_counter() - started
    print(f"wrote {args.frames} {args.format} frames to {out} in {elapsed:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
