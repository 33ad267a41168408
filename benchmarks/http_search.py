"""Search accuracy through the service's HTTP API, each query asked the three ways a user can.

    python -m benchmarks.http_search --model models/demo/model.onnx --dataset prw \
        --data-root /tmp/heldout [--url http://127.0.0.1:8000] [--json out.json]

The test frames of a PRW or CUHK-SYSU layout split are POSTed to /gallery (frame id = the file
name's stem, camera c<N> for PRW), into a service started here on 127.0.0.1 with --model (a fresh
data directory), or into the running service at --url. Then every query is POSTed to /search:

- ``crop``: the person's crop alone (PRW's query_box/ file; CUHK-SYSU: the query box cut out of
  its frame, as PNG), as an operator uploads it;
- ``frame``: the query's whole frame with ``box`` (the protocol's query);
- ``stored``: ``detection_id`` of the stored detection on the query person (the one of its frame
  overlapping its box most, IoU >= 0.5); a query whose person was not detected is asked as
  ``frame`` instead, and counted.

The ranked list the API returns (top_k results, the most it allows) is scored as the protocol
scores a model's results (``training.evaluate``): the query's own frame left out, a hit positive
if it is the best-ranked of its frame overlapping the person's box enough, AP times recall, top-k.
A positive ranked below top_k counts as not found, so mAP here can only be lower than over the
whole gallery; top-1/5/10 are exact. The engine's own figures for the same split come from
``python -m training.evaluate --model M --query-mode all``.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from tqdm import tqdm

from inference.boxes import box_iou
from training.data import load_dataset
from training.data.base import GalleryEntry
from training.evaluate.metrics import average_precision, small_box_iou_threshold
from training.evaluate.protocol import SearchDataset
from training.evaluate.query_modes import (
    QUERY_MODES,
    STORED_MATCH_IOU,
    query_box_file,
    query_crop,
)
from training.evaluate.search import QueryOutcome, summarise

MAX_TOP_K = 1000  # the service's limit on top_k
INGEST_BATCH = 8
DEFAULT_CUHK_GALLERY = 100


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.http_search",
        description="Search mAP / top-k through POST /search: crop, frame and stored queries.",
    )
    parser.add_argument("--dataset", choices=("prw", "cuhk"), required=True)
    parser.add_argument("--data-root", type=Path, required=True, help="the split's folder")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", type=Path, help="serve this model.onnx here, on 127.0.0.1")
    target.add_argument("--url", help="a running service (its gallery gets the test frames)")
    parser.add_argument("--api-key", help="X-API-Key for --url")
    parser.add_argument(
        "--query-scenes",
        type=int,
        default=0,
        help="--model: the service's PS_QUERY_SCENES (stored frames a crop is placed into)",
    )
    parser.add_argument(
        "--modes", default="all", help=f"comma-separated of {', '.join(QUERY_MODES)}, or all"
    )
    parser.add_argument("--top-k", type=int, default=MAX_TOP_K, help="results asked per query")
    parser.add_argument("--cross-camera", action="store_true", help="PRW: other cameras only")
    parser.add_argument("--gallery-size", type=int, default=DEFAULT_CUHK_GALLERY, help="CUHK")
    parser.add_argument("--limit", type=int, help="ask only the first N queries")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    modes = QUERY_MODES if args.modes == "all" else tuple(args.modes.split(","))
    unknown = set(modes) - set(QUERY_MODES)
    if unknown:
        parser.error(f"--modes: unknown {sorted(unknown)}; choose from {QUERY_MODES}")
    if not 1 <= args.top_k <= MAX_TOP_K:
        parser.error(f"--top-k must be 1..{MAX_TOP_K}")
    args.modes = modes
    return args


@contextmanager
def service(args: argparse.Namespace) -> Iterator[httpx.Client]:
    """A client of --url, or of a service started on --model with an empty gallery."""
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    if args.url is not None:
        with httpx.Client(base_url=args.url, headers=headers, timeout=120.0) as client:
            yield client
        return
    from server.testing import ServerProcess  # only the standard library

    with tempfile.TemporaryDirectory() as data_dir:
        with (
            ServerProcess(
                model=args.model.resolve(), data_dir=data_dir, query_scenes=args.query_scenes
            ) as server,
            httpx.Client(base_url=server.url, timeout=120.0) as client,
        ):
            yield client


def frame_id(image_name: str) -> str:
    return Path(image_name).stem


def ingest(client: httpx.Client, dataset: SearchDataset, show_progress: bool) -> float:
    """POST the test frames not yet stored; frames per second of the uploads."""
    records = list(dataset.images)
    started, sent = time.perf_counter(), 0
    bar = tqdm(total=len(records), desc="ingest", unit="frame", disable=not show_progress)
    for start in range(0, len(records), INGEST_BATCH):
        batch = [
            record
            for record in records[start : start + INGEST_BATCH]
            if client.get(f"/gallery/frames/{frame_id(record.name)}").status_code == 404
        ]
        if batch:
            files = [("files", (r.name, r.path.read_bytes(), "image/jpeg")) for r in batch]
            data: dict[str, Any] = {"frame_id": [frame_id(r.name) for r in batch]}
            if dataset.name == "prw":
                data["camera"] = [f"c{r.camera}" for r in batch]
            response = client.post("/gallery", files=files, data=data)
            if response.status_code >= 300:
                raise RuntimeError(f"POST /gallery: {response.status_code} {response.text}")
            sent += len(batch)
        bar.update(len(records[start : start + INGEST_BATCH]))
    bar.close()
    return sent / max(time.perf_counter() - started, 1e-9)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def crop_upload(dataset: SearchDataset, index: int) -> tuple[str, bytes, str]:
    """The query's crop as an operator would upload it: PRW's query_box file as it is."""
    path = query_box_file(dataset, index)
    if path is not None:
        return path.name, path.read_bytes(), "image/jpeg"
    return "crop.png", png_bytes(query_crop(dataset, index)), "image/png"


def stored_detection(client: httpx.Client, image: str, box: np.ndarray) -> int | None:
    """The id of the stored detection on the person in ``box`` of frame ``image``, if any."""
    frame = client.get(f"/gallery/frames/{frame_id(image)}")
    frame.raise_for_status()
    detections = frame.json()["detections"]
    if not detections:
        return None
    boxes = np.array([d["box"] for d in detections], np.float32)
    overlaps = box_iou(np.asarray(box, np.float32)[None], boxes)[0]
    best = int(np.argmax(overlaps))
    return int(detections[best]["id"]) if overlaps[best] >= STORED_MATCH_IOU else None


def ask(
    client: httpx.Client, dataset: SearchDataset, index: int, mode: str, top_k: int
) -> tuple[list[dict[str, Any]], str, float]:
    """One query asked one way: the ranked hits, the way it was asked, the round trip (ms)."""
    query = dataset.queries[index]
    record = dataset.image(query.image)
    data: dict[str, Any] = {"top_k": str(top_k)}
    files = None
    asked = mode
    detection = stored_detection(client, query.image, query.box) if mode == "stored" else None
    if mode == "crop":
        files = {"query": crop_upload(dataset, index)}
    elif detection is not None:
        data["detection_id"] = str(detection)
    else:
        asked = "frame"
        files = {"query": (record.name, record.path.read_bytes(), "image/jpeg")}
        data["box"] = ",".join(f"{v:g}" for v in query.box)
    started = time.perf_counter()
    response = client.post("/search", data=data, files=files)
    took = (time.perf_counter() - started) * 1000.0
    if response.status_code != 200:
        raise RuntimeError(f"POST /search ({mode}): {response.status_code} {response.text}")
    return response.json()["results"], asked, took


def score(hits: list[dict[str, Any]], gallery: Sequence[GalleryEntry]) -> QueryOutcome:
    """The protocol's outcome of one query from the API's ranked hits over its gallery."""
    truth = {frame_id(e.image): e.gt_box for e in gallery}
    num_gt = sum(box is not None for box in truth.values())
    kept = [hit for hit in hits if hit["frame_id"] in truth]
    similarities = np.array([hit["similarity"] for hit in kept], np.float64)
    labels = np.zeros(len(kept), dtype=bool)
    matched: set[str] = set()
    for position, hit in enumerate(kept):  # in rank order: the first match of a frame counts
        gt_box = truth[hit["frame_id"]]
        if gt_box is None or hit["frame_id"] in matched:
            continue
        overlap = box_iou(np.asarray(gt_box, np.float32)[None], np.array([hit["box"]], np.float32))
        if overlap[0, 0] >= small_box_iou_threshold(gt_box):
            labels[position] = True
            matched.add(hit["frame_id"])
    if not labels.any():
        return QueryOutcome(ap=0.0, num_found=0, num_gt=num_gt, best_rank=None)
    found = int(labels.sum())
    ap = average_precision(labels, similarities) * found / max(num_gt, 1)
    return QueryOutcome(ap=ap, num_found=found, num_gt=num_gt, best_rank=int(np.argmax(labels)))


def run(args: argparse.Namespace) -> dict[str, Any]:
    dataset = load_dataset(args.dataset, args.data_root, "test")
    count = len(dataset.queries) if args.limit is None else min(args.limit, len(dataset.queries))
    gallery_size = None if args.dataset == "prw" else args.gallery_size
    with service(args) as client:
        rate = ingest(client, dataset, not args.no_progress)
        figures: dict[str, Any] = {}
        for mode in args.modes:
            outcomes, latencies, as_frame = [], [], 0
            bar = tqdm(range(count), desc=mode, unit="query", disable=args.no_progress)
            for index in bar:
                hits, asked, took = ask(client, dataset, index, mode, args.top_k)
                as_frame += asked != mode
                latencies.append(took)
                gallery = dataset.gallery(index, gallery_size, args.cross_camera)
                outcomes.append(score(hits, gallery))
            figures[mode] = {
                **summarise(outcomes),
                "p50_ms": statistics.median(latencies),
                "p95_ms": float(np.percentile(latencies, 95)),
            }
            if mode == "stored":
                figures[mode]["asked_as_frame"] = as_frame
        stats = client.get("/gallery/stats").json()
    return {
        "dataset": args.dataset,
        "data_root": str(args.data_root),
        "model": str(args.model) if args.model else args.url,
        "frames": len(dataset.images),
        "queries": count,
        "top_k": args.top_k,
        "cross_camera": args.cross_camera,
        "query_scenes": args.query_scenes if args.model else None,
        "ingest_frames_per_s": rate,
        "gallery": stats,
        "modes": figures,
    }


def format_table(report: dict[str, Any]) -> str:
    lines = [
        f"{report['dataset']} test through HTTP: {report['frames']} frames, "
        f"{report['queries']} queries, top_k {report['top_k']}",
        f"  {'query mode':10s} {'mAP':>7s} {'top-1':>7s} {'top-5':>7s} {'top-10':>7s} "
        f"{'p50 ms':>7s} {'p95 ms':>7s}",
    ]
    for mode, m in report["modes"].items():
        lines.append(
            f"  {mode:10s} {m['mAP']:7.2%} {m['top1']:7.2%} {m['top5']:7.2%} {m['top10']:7.2%} "
            f"{m['p50_ms']:7.1f} {m['p95_ms']:7.1f}"
        )
    stored = report["modes"].get("stored", {})
    if stored.get("asked_as_frame"):
        lines.append(
            f"  ({stored['asked_as_frame']} stored queries had no detection: asked as frames)"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    print(format_table(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, default=_plain) + "\n")
    return 0


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value.tolist() if hasattr(value, "tolist") else str(value)


if __name__ == "__main__":
    sys.exit(main())
