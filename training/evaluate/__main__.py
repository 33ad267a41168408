"""`python -m training.evaluate`: score a results file, or an exported model, on a PRW or
CUHK-SYSU test split.

    python -m training.evaluate --dataset prw --data-root data/PRW --results R.json --json
    python -m training.evaluate --dataset prw --data-root data/PRW --model model.onnx \
        [--save-results R.json] [--query-mode frame|crop|stored|all] --json

With --model the ONNX graph runs over every test image through the engine the service uses
(``inference.engine``, at the size its card names), and its results are scored (and saved with
--save-results). Gallery images missing from a results file count as having no detections (a
warning says how many); a results file with the wrong number of queries, or none of the test
images, is an error. Without --det-thresh, detections scoring below the reference's threshold
for the dataset (PRW 0.15, CUHK-SYSU 0.2) are dropped.

--query-mode (with --model) says how each query is asked, as the service can be asked: within
its whole frame (``frame``, the protocol's query), as the person's crop alone (``crop``, an
operator's upload to POST /search) or as the stored detection on the person (``stored``);
``all`` reports the three side by side (``training.evaluate.query_modes``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from training.data import load_dataset
from training.data.base import DatasetError
from training.evaluate.collect import QUERY_EMBEDDINGS
from training.evaluate.protocol import SearchDataset, evaluate_dataset
from training.evaluate.query_modes import (
    QUERY_MODES,
    QueryMode,
    engine_query_modes,
    record_in_card,
)
from training.evaluate.results import ResultsError, load_results, save_results

DEFAULT_CUHK_GALLERY = 100
# AlignPS's search score thresholds (of cls x ctr scores).
REFERENCE_SEARCH_THRESHOLDS = {"prw": 0.15, "cuhk": 0.2}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="Person search mAP / top-k and detection AP / recall of a results file or "
        "of an exported model.",
    )
    parser.add_argument("--dataset", required=True, choices=["prw", "cuhk"])
    parser.add_argument("--data-root", required=True, type=Path, help="dataset root folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--results", type=Path, help="results JSON file")
    source.add_argument("--model", type=Path, help="exported model.onnx (its model.json beside)")
    parser.add_argument(
        "--embedding",
        choices=("concat", "alignps", "roi"),
        default="concat",
        help="--model: score the graph's concatenated embedding, or one branch's part of it",
    )
    parser.add_argument(
        "--save-results", type=Path, help="--model: also write the results file here"
    )
    parser.add_argument(
        "--query-embedding",
        choices=QUERY_EMBEDDINGS,
        default="detection",
        help="--model: embed each query from the detection overlapping its box most (the "
        "reference), or from the box itself",
    )
    parser.add_argument(
        "--query-mode",
        choices=(*QUERY_MODES, "all"),
        default="frame",
        help="--model: ask each query within its frame (the protocol), as its crop alone (an "
        "operator's upload), as the stored detection on the person, or all three side by side",
    )
    parser.add_argument(
        "--write-card",
        action="store_true",
        help="--model --query-mode all: also record the figures in the model card's metrics "
        "(query_modes), with the split they were measured on",
    )
    parser.add_argument(
        "--providers", default="cpu", help="--model: ONNX Runtime providers, e.g. cuda,cpu"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--gallery-size",
        type=int,
        help=f"CUHK-SYSU gallery size (50..4000, -1 = full pool; default {DEFAULT_CUHK_GALLERY})",
    )
    parser.add_argument(
        "--cross-camera", action="store_true", help="PRW: only other cameras' frames in gallery"
    )
    parser.add_argument(
        "--det-thresh",
        type=float,
        help="drop detections scoring below (default: PRW 0.15, CUHK-SYSU 0.2, as the reference)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    gallery_size = _gallery_size(parser, args)
    if args.cross_camera and args.dataset == "cuhk":
        parser.error("--cross-camera is a PRW protocol; CUHK-SYSU has no cameras")
    if args.model is None and args.save_results is not None:
        parser.error("--save-results needs --model")
    det_thresh = args.det_thresh
    if det_thresh is None:
        det_thresh = REFERENCE_SEARCH_THRESHOLDS[args.dataset]
    if args.model is None and args.query_mode != "frame":
        parser.error("--query-mode needs --model (a results file holds one set of queries)")
    source = args.results or args.model
    modes = QUERY_MODES if args.query_mode == "all" else (args.query_mode,)
    if args.write_card and (args.query_mode != "all" or args.embedding != "concat"):
        parser.error("--write-card records --query-mode all of the concat embedding")
    if args.write_card and args.cross_camera:
        parser.error("--write-card records the all-cameras gallery; drop --cross-camera")
    extra: dict[str, Any] = {}
    try:
        dataset = load_dataset(args.dataset, args.data_root, "test")
        if args.model is not None:
            by_mode, extra = model_results(args, dataset, det_thresh, modes)
        else:
            by_mode = {"frame": load_results(args.results)}
            _check_overlap(by_mode["frame"], dataset, args.results)
        scored = {
            mode: evaluate_dataset(dataset, results, gallery_size, args.cross_camera, det_thresh)
            for mode, results in by_mode.items()
        }
    except DatasetError as error:
        return _fail(str(error))
    except ResultsError as error:
        message = str(error)
        return _fail(message if message.startswith(str(source)) else f"{source}: {message}")
    except _ModelFailure as error:
        return _fail(str(error))
    for mode, found in scored.items():
        found.update(extra, query_mode=mode)
    metrics = scored[modes[0]]
    if metrics["missing_gallery_images"]:
        print(
            f"warning: {args.results} has no entry for {metrics['missing_gallery_images']} of "
            f"{metrics['num_gallery_images']} test images; scored as having no detections",
            file=sys.stderr,
        )
    if len(modes) > 1:
        print(json.dumps({"query_modes": scored}) if args.json else format_modes(scored))
        return 0
    print(json.dumps(metrics) if args.json else format_table(metrics))
    return 0


class _ModelFailure(RuntimeError):
    """The model cannot be loaded or run; the message says why."""


def model_results(
    args: argparse.Namespace,
    dataset: SearchDataset,
    det_thresh: float,
    modes: tuple[QueryMode, ...],
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Run the exported model over the test split: its results per query mode (the same
    gallery, the queries asked each way) and how queries were embedded."""
    # imported here: scoring a results file needs no ONNX Runtime
    from inference.card import ModelError, branch_slices
    from inference.engine import Engine

    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    try:
        engine = Engine(args.model, providers, min_score=det_thresh)
    except ModelError as error:
        raise _ModelFailure(str(error)) from error
    part = slice(None)
    if args.embedding != "concat":
        parts = branch_slices(engine.card)
        if args.embedding not in parts:
            raise _ModelFailure(
                f"{args.model}: its {engine.card.embedding} embedding has no {args.embedding} "
                "part (only a concat embedding of known branch dims has)"
            )
        part = parts[args.embedding]

    by_mode, extra = engine_query_modes(
        engine,
        dataset,
        det_thresh,
        modes,
        part=part,
        query_embedding=args.query_embedding,
        show_progress=not args.no_progress,
    )
    if args.save_results is not None:
        save_results(by_mode["frame"], args.save_results)
    if args.write_card:
        record_in_card(args.model, engine.card, dataset, by_mode, det_thresh, args.data_root)
    return by_mode, {"model": str(args.model), "embedding": args.embedding, **extra}


def format_modes(scored: dict[str, dict[str, Any]]) -> str:
    """The query modes' metrics side by side, one row per mode."""
    first = next(iter(scored.values()))
    lines = [
        f"{first['dataset']} test, {_describe_gallery(first)}, detections scoring >= "
        f"{first['det_thresh']:g}, {first['num_queries']} queries",
        f"  {'query mode':10s} {'mAP':>7s} {'top-1':>7s} {'top-5':>7s} {'top-10':>7s} "
        f"{'det AP':>7s} {'det rec':>7s}",
    ]
    for mode, metrics in scored.items():
        lines.append(
            f"  {mode:10s} {metrics['mAP']:7.2%} {metrics['top1']:7.2%} {metrics['top5']:7.2%} "
            f"{metrics['top10']:7.2%} {metrics['det_ap']:7.2%} {metrics['det_recall']:7.2%}"
        )
    without = first.get("queries_without_stored_detection")
    if without:
        lines.append(f"  ({without} queries had no stored detection: asked within their frame)")
    return "\n".join(lines)


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
    if "query_embedding" in metrics:
        lines.append(
            f"  queries embedded from the {metrics['query_embedding']} "
            f"({metrics['queries_from_detection']} of {metrics['num_queries']} from a detection)"
        )
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
