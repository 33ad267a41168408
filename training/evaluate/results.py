"""The results format every model's outputs are scored from, and its file helpers.

    {"gallery": {"<image file name>": {"boxes": [[x1, y1, x2, y2], ...], "scores": [...],
                                       "embeddings": [[...], ...]}},
     "queries": [{"embedding": [...]}, ...]}

Queries follow the dataset's protocol order. Embeddings need not be normalised: they are
L2-normalised here. In Python, numpy arrays may stand in for any of the lists.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inference.files import atomic_write

# Guards the division when a model emits an all-zero embedding; such a vector matches nothing.
_NORM_EPS = 1e-12


class ResultsError(ValueError):
    """The results are malformed; the message says where."""


@dataclass(frozen=True)
class GalleryDetections:
    """All kept gallery detections, concatenated; `spans` maps an image to its rows.

    embeddings are L2-normalised float32 [M, D], or None when the results hold none
    (a detector-only results file still scores detection).
    """

    boxes: np.ndarray
    scores: np.ndarray
    embeddings: np.ndarray | None
    spans: dict[str, tuple[int, int]]

    def image_rows(self, name: str) -> slice:
        start, stop = self.spans.get(name, (0, 0))
        return slice(start, stop)


def parse_gallery(results: Mapping[str, Any], det_thresh: float) -> GalleryDetections:
    """Validate results["gallery"] and keep the detections scoring at least det_thresh."""
    gallery = _field(results, "gallery", Mapping)
    boxes, scores, embeddings, spans = [], [], [], {}
    without_embeddings = []  # images with boxes but no embeddings
    start = 0
    for name, detections in gallery.items():
        image_boxes, image_scores, image_embeddings = _parse_image(name, detections)
        kept = image_scores >= det_thresh
        boxes.append(image_boxes[kept])
        scores.append(image_scores[kept])
        if image_embeddings is not None:
            embeddings.append(image_embeddings[kept])
        elif len(image_boxes):
            without_embeddings.append(name)
        spans[name] = (start, start + int(kept.sum()))
        start = spans[name][1]
    if embeddings and without_embeddings:
        raise ResultsError(f"gallery[{without_embeddings[0]!r}] has boxes but no 'embeddings'")
    return GalleryDetections(
        boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4)),
        scores=np.concatenate(scores) if scores else np.zeros(0),
        embeddings=_stack_embeddings(embeddings),
        spans=spans,
    )


def parse_queries(results: Mapping[str, Any]) -> np.ndarray:
    """L2-normalised query embeddings [Q, D] from results["queries"], in the given order."""
    queries = _field(results, "queries", list | tuple)
    vectors = []
    for index, query in enumerate(queries):
        if not isinstance(query, Mapping) or "embedding" not in query:
            raise ResultsError(f"queries[{index}] has no 'embedding'")
        vectors.append(_as_array(query["embedding"], f"queries[{index}].embedding").ravel())
    if not vectors:
        raise ResultsError("'queries' is empty")
    if len({v.size for v in vectors}) > 1:
        raise ResultsError(
            f"query embeddings differ in length: {sorted({v.size for v in vectors})}"
        )
    return l2_normalise(np.stack(vectors).astype(np.float32))


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, _NORM_EPS)


def save_results(results: Mapping[str, Any], path: str | Path) -> Path:
    """Write results (lists or numpy arrays) as a results JSON file; returns the path."""
    path = Path(path)
    with atomic_write(path) as temporary, temporary.open("w", encoding="utf-8") as handle:
        json.dump(results, handle, default=_to_json)
    return path


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a results JSON file; a missing or unreadable file is a ResultsError naming it."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as handle:
            results = json.load(handle)
    except FileNotFoundError as error:
        raise ResultsError(f"{path}: no such results file") from error
    except json.JSONDecodeError as error:
        raise ResultsError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(results, dict):
        raise ResultsError(f"{path}: expected a JSON object with 'gallery' and 'queries'")
    return results


def _to_json(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} into a results file")


def _field(results: Mapping[str, Any], key: str, kind: Any) -> Any:
    if not isinstance(results, Mapping) or key not in results:
        raise ResultsError(f"results have no '{key}' entry")
    if not isinstance(results[key], kind):
        raise ResultsError(f"results '{key}' has the wrong type ({type(results[key]).__name__})")
    return results[key]


def _parse_image(name: str, detections: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    where = f"gallery[{name!r}]"
    if (
        not isinstance(detections, Mapping)
        or "boxes" not in detections
        or "scores" not in detections
    ):
        raise ResultsError(f"{where} needs 'boxes' and 'scores'")
    boxes = _as_array(detections["boxes"], f"{where}.boxes")
    scores = _as_array(detections["scores"], f"{where}.scores").ravel()
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ResultsError(f"{where}.boxes must be N x 4, got shape {boxes.shape}")
    if scores.size != len(boxes):
        raise ResultsError(f"{where} has {len(boxes)} boxes but {scores.size} scores")
    if detections.get("embeddings") is None:
        return boxes, scores, None
    embeddings = _as_array(detections["embeddings"], f"{where}.embeddings")
    if embeddings.size == 0 and len(boxes) == 0:
        return boxes, scores, None  # an empty image says nothing about the embedding size
    if embeddings.ndim != 2 or len(embeddings) != len(boxes):
        raise ResultsError(
            f"{where} has {len(boxes)} boxes but embeddings of shape {embeddings.shape}"
        )
    return boxes, scores, l2_normalise(embeddings.astype(np.float32))


def _as_array(value: Any, where: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ResultsError(f"{where} is not a numeric array ({error})") from error
    if not np.all(np.isfinite(array)):
        raise ResultsError(f"{where} holds NaN or infinite values")
    return array


def _stack_embeddings(per_image: list[np.ndarray]) -> np.ndarray | None:
    if not per_image:
        return None
    sizes = sorted({e.shape[1] for e in per_image})
    if len(sizes) > 1:
        raise ResultsError(f"gallery embeddings differ in length: {sizes}")
    return np.concatenate(per_image)
