"""The three ways the service is asked about a person, as query embeddings for the protocol.

- ``frame``: the query's whole frame with its box (the protocol's query; ``collect_results``);
- ``crop``: the query person alone, as an operator uploads it to ``POST /search``: PRW's
  ``query_box/`` file, else the query box cut out of its frame (CUHK-SYSU), run through the
  engine's ``embed_query`` exactly as the service runs it;
- ``stored``: the gallery's own detection on the query person (``POST /search`` with a
  ``detection_id``): the detection of the query's frame overlapping its box most, at IoU >= 0.5
  (the service's rule) and above the search threshold. A query whose person was not detected
  has no stored detection; it keeps its frame embedding (the operator would draw the box), and
  their number is reported.

Only the query embeddings differ between modes; the gallery is the same results' gallery.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
from tqdm import tqdm

from inference.boxes import box_iou
from inference.card import ModelCard
from inference.outputs import embedding_part, unit_rows
from inference.preprocess import load_rgb
from training.evaluate.collect import QueryEmbedding, collect_results
from training.evaluate.protocol import SearchDataset, evaluate_dataset

if TYPE_CHECKING:
    from inference.engine import Engine

# how a query is asked, as the service can be asked: within its frame, as a crop, by a stored box
QueryMode = Literal["frame", "crop", "stored"]
QUERY_MODES: tuple[QueryMode, ...] = get_args(QueryMode)
STORED_MATCH_IOU = 0.5  # the service's rule for "the detection on this person"
# crop image (HxWx3 uint8 RGB) -> its query embedding [D]
EmbedCrop = Callable[[np.ndarray], np.ndarray]


def query_crop(dataset: SearchDataset, index: int) -> np.ndarray:
    """The query person alone: its crop file where the dataset has one (PRW's
    ``query_box/<pid>_<frame>.jpg``), else its box cut out of its frame (rounded outwards)."""
    query = dataset.queries[index]
    crop_file = query_box_file(dataset, index)
    if crop_file is not None:
        return load_rgb(crop_file)
    image = load_rgb(dataset.image(query.image).path)
    height, width = image.shape[:2]
    x1, y1 = max(0, math.floor(query.box[0])), max(0, math.floor(query.box[1]))
    x2, y2 = min(width, math.ceil(query.box[2])), min(height, math.ceil(query.box[3]))
    return image[y1 : max(y2, y1 + 1), x1 : max(x2, x1 + 1)]


def query_box_file(dataset: SearchDataset, index: int) -> Path | None:
    """PRW's crop file of query ``index`` (``query_box/<pid>_<frame>.jpg``), if it exists."""
    root = getattr(dataset, "root", None)
    if dataset.name != "prw" or root is None:
        return None
    query = dataset.queries[index]
    path = Path(root) / "query_box" / f"{query.pid}_{Path(query.image).stem}.jpg"
    return path if path.is_file() else None


def with_crop_queries(
    dataset: SearchDataset,
    results: dict[str, Any],
    embed_crop: EmbedCrop,
    show_progress: bool = True,
) -> dict[str, Any]:
    """``results`` with each query embedded from its crop alone."""
    queries = []
    indices = tqdm(
        range(len(dataset.queries)), desc="crop queries", unit="query", disable=not show_progress
    )
    for index in indices:
        queries.append({"embedding": embed_crop(query_crop(dataset, index))})
    return {"gallery": results["gallery"], "queries": queries}


def with_stored_queries(
    dataset: SearchDataset, results: dict[str, Any], min_score: float
) -> tuple[dict[str, Any], int]:
    """``results`` with each query embedded as its stored detection (see the module's
    docstring), and how many queries had none (and kept their frame embedding)."""
    queries, without = [], 0
    for query, asked in zip(dataset.queries, results["queries"], strict=True):
        found = results["gallery"].get(query.image)
        embedding = None
        if found is not None and len(found["boxes"]):
            scores = np.asarray(found["scores"], np.float32)
            boxes = np.asarray(found["boxes"], np.float32).reshape(-1, 4)
            overlaps = box_iou(np.asarray(query.box, np.float32)[None], boxes)[0]
            overlaps[scores < min_score] = -1.0
            best = int(np.argmax(overlaps))
            if overlaps[best] >= STORED_MATCH_IOU:
                embedding = np.asarray(found["embeddings"], np.float32)[best]
        if embedding is None:
            without += 1
            embedding = asked["embedding"]
        queries.append({"embedding": embedding})
    return {"gallery": results["gallery"], "queries": queries}, without


def engine_query_modes(
    engine: Engine,
    dataset: SearchDataset,
    det_thresh: float,
    modes: Sequence[QueryMode],
    part: slice = slice(None),
    query_embedding: QueryEmbedding = "detection",
    show_progress: bool = True,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The engine's results over the test split, one per query mode (the same gallery, the
    queries asked each way; ``part``: one branch of the embedding), and how queries were
    embedded."""

    def run(image: np.ndarray, boxes: np.ndarray):
        return {"model": embedding_part(engine.run_frame(image, boxes), part)}

    def embed_crop(crop: np.ndarray) -> np.ndarray:
        return unit_rows(engine.embed_query(crop).embedding[None, part])[0]

    collected, info = collect_results(
        dataset, run, ["model"], query_embedding, det_thresh, show_progress=show_progress
    )
    frame = collected["model"]
    extra: dict[str, Any] = {
        "model_id": engine.model.model_id,
        "query_embedding": info["query_embedding"],
        "queries_from_detection": info["queries_from_detection"]["model"],
    }
    by_mode: dict[str, dict[str, Any]] = {}
    for mode in modes:
        if mode == "frame":
            by_mode[mode] = frame
        elif mode == "crop":
            by_mode[mode] = with_crop_queries(dataset, frame, embed_crop, show_progress)
        elif mode == "stored":
            by_mode[mode], without = with_stored_queries(dataset, frame, det_thresh)
            extra["queries_without_stored_detection"] = without
        else:
            raise ValueError(f"query mode must be one of {QUERY_MODES}, got {mode!r}")
    return by_mode, extra


CARD_METRICS = ("mAP", "top1", "top5", "top10", "det_ap", "det_recall")


def record_in_card(
    model_path: Path,
    card: ModelCard,
    dataset: SearchDataset,
    by_mode: dict[str, dict[str, Any]],
    det_thresh: float,
    data_root: Path,
    gallery_size: int | None = None,
) -> dict[str, Any]:
    """Score each mode and write the figures into the card beside ``model_path`` under
    ``metrics.query_modes`` (the card's other metrics stay as they are); returns them."""
    scored = {
        mode: evaluate_dataset(dataset, results, gallery_size, det_thresh=det_thresh)
        for mode, results in by_mode.items()
    }
    record = {
        "data_root": str(data_root),
        "det_thresh": det_thresh,
        "num_queries": len(dataset.queries),
        **{mode: {key: scored[mode][key] for key in CARD_METRICS} for mode in scored},
    }
    metrics = {**(card.metrics or {}), "query_modes": record}
    dataclasses.replace(card, metrics=metrics).write(Path(model_path))
    return record
