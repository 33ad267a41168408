"""Results (see ``training.evaluate.results``) of a model run over a test split.

Each test image is run once, with the boxes of the queries it holds, so a query's embedding
comes from the same pass as the image's detections. A query is embedded, by default, from the
detection overlapping its box most among those kept at the search threshold, as the reference
does; when no kept detection overlaps it, or with ``query_embedding="box"``, from its box run
through the ROI branch. The same code serves the PyTorch model at the end of training and an
exported ONNX model (``python -m training.evaluate --model``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, get_args

import numpy as np
from tqdm import tqdm

from inference.outputs import FrameOutputs, choose_query_embedding
from inference.preprocess import load_rgb
from training.evaluate.protocol import SearchDataset

# a query's embedding: that of the detection overlapping its box most, or of the box itself
QueryEmbedding = Literal["detection", "box"]
QUERY_EMBEDDINGS: tuple[QueryEmbedding, ...] = get_args(QueryEmbedding)
# image (HxWx3 uint8 RGB), query boxes [Q,4] in its pixels -> outputs per embedding kind
RunImage = Callable[[np.ndarray, np.ndarray], Mapping[str, FrameOutputs]]


def collect_results(
    dataset: SearchDataset,
    run_image: RunImage,
    names: Sequence[str],
    query_embedding: QueryEmbedding = "detection",
    min_score: float = 0.5,
    show_progress: bool = True,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Results per embedding kind in ``names``, and how the queries were embedded.

    The second value records the query-embedding choice and, per kind, how many queries took
    a detection's embedding (``queries_from_detection``).
    """
    if query_embedding not in QUERY_EMBEDDINGS:
        raise ValueError(f"query_embedding must be one of {QUERY_EMBEDDINGS}")
    queries_in: dict[str, list[int]] = defaultdict(list)
    for index, query in enumerate(dataset.queries):
        queries_in[query.image].append(index)
    missing = sorted(set(queries_in) - {record.name for record in dataset.images})
    if missing:
        raise ValueError(f"query images missing from the test split: {missing[:5]}")
    results: dict[str, dict[str, Any]] = {
        name: {"gallery": {}, "queries": [None] * len(dataset.queries)} for name in names
    }
    from_detection = dict.fromkeys(names, 0)
    records = tqdm(dataset.images, desc="evaluate", unit="img", disable=not show_progress)
    for record in records:
        query_ids = queries_in.get(record.name, [])
        boxes = np.array([dataset.queries[i].box for i in query_ids], np.float32).reshape(-1, 4)
        outputs = run_image(load_rgb(record.path), boxes)
        for name in names:
            found = outputs[name].detections
            results[name]["gallery"][record.name] = {
                "boxes": found.boxes,
                "scores": found.scores,
                "embeddings": found.embeddings,
            }
            for slot, index in enumerate(query_ids):
                box_embedding = outputs[name].box_embeddings[slot]
                if query_embedding == "box":
                    embedding = box_embedding
                else:
                    chosen = choose_query_embedding(
                        boxes[slot], found, box_embedding, min_score, min_iou=0.0
                    )
                    embedding = chosen.embedding
                    from_detection[name] += chosen.source == "detection"
                results[name]["queries"][index] = {"embedding": embedding}
    info = {"query_embedding": query_embedding, "queries_from_detection": from_detection}
    if query_embedding == "box":
        info["queries_from_detection"] = dict.fromkeys(names, 0)
    return results, info


def protocols(dataset_name: str, gallery_size: int | None) -> dict[str, dict[str, Any]]:
    """The evaluation settings reported for a dataset (PRW: all cameras and cross-camera)."""
    if dataset_name == "prw":
        return {"all_cameras": {"cross_camera": False}, "cross_camera": {"cross_camera": True}}
    label = "full_pool" if gallery_size is None else str(gallery_size)
    return {f"gallery_{label}": {"gallery_size": gallery_size}}
