"""python -m training.synth --out DIR --format prw|cuhk [--frames N] [--size WxH|prw|...] ..."""

from __future__ import annotations

import argparse
import sys
import time

from training.synth.generate import WRITERS, generate
from training.synth.sizes import SPEC_HELP, SizeMix, parse_size


def _size(text: str) -> SizeMix:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


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
    parser.add_argument(
        "--size",
        type=_size,
        default="640x360",
        help=f"frame size per camera: {SPEC_HELP} (prw: 73%% 1920x1080, 27%% 720x576)",
    )
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
