"""`python -m training.evaluate`: score a results file on a PRW or CUHK-SYSU test split.

    python -m training.evaluate --dataset prw --data-root data/PRW --results R.json --json

Gallery images missing from the results file count as having no detections (a warning says how
many); a results file with the wrong number of queries, or none of the test images, is an error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from training.data import load_dataset
from training.data.base import DatasetError
from training.evaluate.protocol import evaluate_dataset
from training.evaluate.results import ResultsError, load_results

DEFAULT_CUHK_GALLERY = 100


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="Person search mAP / top-k and detection AP / recall of a results file.",
    )
    parser.add_argument("--dataset", required=True, choices=["prw", "cuhk"])
    parser.add_argument("--data-root", required=True, type=Path, help="dataset root folder")
    parser.add_argument("--results", required=True, type=Path, help="results JSON file")
    parser.add_argument(
        "--gallery-size",
        type=int,
        help=f"CUHK-SYSU gallery size (50..4000, -1 = full pool; default {DEFAULT_CUHK_GALLERY})",
    )
    parser.add_argument(
        "--cross-camera", action="store_true", help="PRW: only other cameras' frames in gallery"
    )
    parser.add_argument(
        "--det-thresh", type=float, default=0.5, help="drop detections scoring below (0.5)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    gallery_size = _gallery_size(parser, args)
    if args.cross_camera and args.dataset == "cuhk":
        parser.error("--cross-camera is a PRW protocol; CUHK-SYSU has no cameras")
    try:
        results = load_results(args.results)
        dataset = load_dataset(args.dataset, args.data_root, "test")
        _check_overlap(results, dataset, args.results)
        metrics = evaluate_dataset(
            dataset, results, gallery_size, args.cross_camera, args.det_thresh
        )
    except DatasetError as error:
        return _fail(str(error))
    except ResultsError as error:
        message = str(error)
        return _fail(
            message if message.startswith(str(args.results)) else f"{args.results}: {message}"
        )
    if metrics["missing_gallery_images"]:
        print(
            f"warning: {args.results} has no entry for {metrics['missing_gallery_images']} of "
            f"{metrics['num_gallery_images']} test images; scored as having no detections",
            file=sys.stderr,
        )
    print(json.dumps(metrics) if args.json else format_table(metrics))
    return 0


def format_table(metrics: dict[str, Any]) -> str:
    """A readable summary of evaluate_dataset's output."""
    lines = [
        f"{metrics['dataset']} test, {_describe_gallery(metrics)}, "
        f"detections scoring >= {metrics['det_thresh']:g}, {metrics['num_queries']} queries",
        f"  search mAP          {metrics['mAP']:7.2%}",
    ]
    lines += [f"  search top-{k:<2d}       {metrics[f'top{k}']:7.2%}" for k in (1, 5, 10)]
    lines += [
        f"  detection AP@{metrics['det_iou']:g}    {metrics['det_ap']:7.2%}",
        f"  detection recall    {metrics['det_recall']:7.2%}",
        f"  recall (labelled)   {metrics['det_recall_labelled']:7.2%}",
    ]
    if metrics["queries_without_gt"]:
        lines.append(f"  ({metrics['queries_without_gt']} queries without ground truth left out)")
    return "\n".join(lines)


def _describe_gallery(metrics: dict[str, Any]) -> str:
    if metrics["dataset"] == "prw":
        return (
            "gallery: other cameras' frames" if metrics["cross_camera"] else "gallery: all frames"
        )
    size = metrics["gallery_size"]
    return "gallery: full pool" if size is None else f"gallery size {size}"


def _gallery_size(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int | None:
    if args.dataset == "prw":
        if args.gallery_size is not None:
            parser.error("--gallery-size is a CUHK-SYSU protocol; PRW's gallery is every frame")
        return None
    if args.gallery_size is None:
        return DEFAULT_CUHK_GALLERY
    if args.gallery_size == -1:
        return None
    if args.gallery_size <= 0:
        parser.error("--gallery-size must be positive, or -1 for the full pool")
    return args.gallery_size


def _check_overlap(results: dict[str, Any], dataset: Any, path: Path) -> None:
    """A results file sharing no image with the test split is for another dataset."""
    gallery = results.get("gallery")
    if isinstance(gallery, dict) and not any(image.name in gallery for image in dataset.images):
        raise ResultsError(
            f"{path}: none of the {len(dataset.images)} {dataset.name} test images is in "
            "'gallery' (results for another dataset or split?)"
        )


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
