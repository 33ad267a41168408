"""What a run of the exported graph gives back, and how a query's embedding is chosen from it
(numpy only: the in-training evaluation uses it too, without ONNX Runtime)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from inference.boxes import box_iou


@dataclass(frozen=True)
class Detections:
    """People found in one image; boxes (x1, y1, x2, y2) in original image pixels."""

    boxes: np.ndarray  # float32 [K, 4]
    scores: np.ndarray  # float32 [K]
    embeddings: np.ndarray  # float32 [K, D], unit rows


@dataclass(frozen=True)
class FrameOutputs:
    """One run of the graph on an image: every detection (unfiltered) and the given boxes'
    embeddings, all boxes in original image pixels."""

    detections: Detections
    box_embeddings: np.ndarray  # float32 [Q, D], unit rows, one per given box


def embedding_part(outputs: FrameOutputs, part: slice) -> FrameOutputs:
    """The same outputs with only ``part`` of every embedding, renormalised (one branch of a
    concatenated embedding, see ``inference.card.branch_slices``)."""

    def unit(rows: np.ndarray) -> np.ndarray:
        return unit_rows(rows[:, part])

    found = outputs.detections
    return FrameOutputs(
        Detections(found.boxes, found.scores, unit(found.embeddings)),
        unit(outputs.box_embeddings),
    )


def unit_rows(rows: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (float32; zero rows stay zero)."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return (rows / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class QueryEmbedding:
    """The vector a search uses, and where it came from.

    source "detection": the detector found the person (the detection overlapping the asked box
    most) and its detection embedding is used, as the gallery's own vectors are; "box": nothing
    matched, so the asked box was embedded directly through the ROI branch; "scenes": a crop
    was placed into stored frames and embedded there, the placements' embeddings averaged
    (``Engine.embed_query_in_scenes``).
    """

    embedding: np.ndarray  # float32 [D], unit norm
    box: np.ndarray  # float32 [4], original pixels: the detection's or the asked box
    source: Literal["detection", "box", "scenes"]
    iou: float | None  # IoU of the chosen detection with the asked box


def choose_query_embedding(
    asked: np.ndarray,
    detections: Detections,
    box_embedding: np.ndarray,
    min_score: float,
    min_iou: float,
) -> QueryEmbedding:
    """The embedding of the detection overlapping ``asked`` most, if it scores >= min_score and
    overlaps by >= min_iou (and at all); else the asked box's own embedding."""
    asked = np.asarray(asked, dtype=np.float32).reshape(4)
    candidates = np.flatnonzero(detections.scores >= min_score)
    if len(candidates):
        overlaps = box_iou(asked[None], detections.boxes[candidates])[0]
        best = int(np.argmax(overlaps))
        if overlaps[best] > 0 and overlaps[best] >= min_iou:
            row = candidates[best]
            return QueryEmbedding(
                embedding=detections.embeddings[row],
                box=detections.boxes[row],
                source="detection",
                iou=float(overlaps[best]),
            )
    return QueryEmbedding(embedding=box_embedding, box=asked, source="box", iou=None)
