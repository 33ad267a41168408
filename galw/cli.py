"""Command line: ``python -m galw group --gradients gradients.json --groups G [--out groups.json]``.

Groups tasks from a recorded probe (gradients.json) without retraining. G is a number of
groups or "auto" (the cut of the dendrogram with the best silhouette). Without ``--out`` the
groups.json content is printed to stdout.
"""

import argparse
import json
import sys
from collections.abc import Sequence

from galw.grouping import LINKAGES, SCORINGS, group_tasks
from galw.probe import GradientHistory


def _n_groups(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m galw", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    group = commands.add_parser("group", help="group tasks from a gradients.json")
    group.add_argument("--gradients", required=True, help="gradients.json from a probe run")
    group.add_argument("--groups", required=True, type=_n_groups, help="G, or 'auto'")
    group.add_argument("--out", help="where to write groups.json (default: stdout)")
    group.add_argument("--linkage", default="ward", choices=LINKAGES, help="default: ward")
    group.add_argument(
        "--scoring",
        default=SCORINGS[0],
        choices=SCORINGS,
        help="reading of Eq. 8: log-standardised (default, independent of the magnitudes' "
        "units) or literal (s / (1 + |s|))",
    )
    return parser


def run_group(args: argparse.Namespace) -> None:
    history = GradientHistory.load(args.gradients)
    grouping = group_tasks(history.magnitudes, args.groups, args.linkage, args.scoring)
    if args.out:
        grouping.save(args.out)
        print(f"{len(grouping.groups)} groups written to {args.out}", file=sys.stderr)
    else:
        print(json.dumps(grouping.to_dict(), indent=2))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        run_group(args)
    except (ValueError, OSError) as error:  # GalwFileError is a ValueError
        parser.exit(2, f"python -m galw group: error: {error}\n")
    return 0
