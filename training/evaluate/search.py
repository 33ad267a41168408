"""Person search protocol: mAP (AP x recall) and top-k over each query's gallery.

The de-facto protocol of OIM / NAE / SeqNet / COAT:
- detections scoring below det_thresh are dropped; embeddings are L2-normalised and the
  similarity is their dot product;
- every gallery entry holding the query person counts as one ground truth, also when it has no
  detections; within such an image the detections are ranked by similarity and only the first
  whose IoU with the ground-truth box reaches min(0.5, wh / ((w + 10)(h + 10))) is positive;
- a query's AP is the non-interpolated AP of all its gallery detections times its recall
  (found / ground truths), 0 when nothing is found; top-k says whether a positive is among the
  k most similar detections of the whole gallery; mAP and top-k are means over queries.

An image listed twice in one query's gallery (CUHK-SYSU's TestG files list four) is handled as
SeqNet's eval_search_cuhk does: each listing that holds the person adds one ground truth, but
the image's detections are ranked once, labelled by its first listing; a gallery listing the
query's own image keeps it. See docs/ARCHITECTURE.md, "Evaluation". Tied similarities keep the
order of the gallery list, then of the detections within an image, for top-k and for picking
an image's positive; AP groups tied scores together as scikit-learn does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np

from inference.boxes import box_iou
from training.data.base import GalleryEntry, Query
from training.evaluate.metrics import average_precision, small_box_iou_threshold
from training.evaluate.results import GalleryDetections, ResultsError, parse_gallery, parse_queries

TOP_K = (1, 5, 10)
_QUERY_BLOCK = 256
# Similarities held at once (64 MiB of float32): fewer queries per block for huge galleries.
_BLOCK_SIMILARITIES = 2**24
_END = object()  # marks an exhausted gallery iterator


@dataclass(frozen=True)
class QueryOutcome:
    """One query's result: best_rank is the 0-based rank of its best positive, None if none."""

    ap: float
    num_found: int
    num_gt: int
    best_rank: int | None


def evaluate_search(
    queries: Sequence[Query],
    galleries: Sequence[Sequence[GalleryEntry]],
    results: Mapping[str, Any],
    det_thresh: float = 0.5,
) -> dict[str, Any]:
    """Search mAP and top-1/5/10 (fractions) of results over the given per-query galleries.

    A gallery image absent from results["gallery"] has no detections (its ground truth still
    counts). Queries whose gallery holds no ground truth are left out of the means and counted
    in `queries_without_gt`.
    """
    if len(galleries) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(galleries)} galleries")
    query_embeddings = parse_queries(results)
    if len(query_embeddings) != len(queries):
        raise ResultsError(
            f"results hold {len(query_embeddings)} query embeddings "
            f"but the protocol has {len(queries)} queries"
        )
    detections = parse_gallery(results, det_thresh)
    outcomes = search_outcomes(query_embeddings, galleries, detections)
    return {**summarise(outcomes), "det_thresh": det_thresh}


def search_outcomes(
    query_embeddings: np.ndarray,
    galleries: Iterable[Sequence[GalleryEntry]],
    detections: GalleryDetections,
) -> list[QueryOutcome]:
    """Score each normalised query embedding against its gallery's kept detections.

    galleries may be a generator: it is consumed one gallery at a time, in query order, so a
    caller never needs every query's gallery at once (on PRW that would be ~12.5 million
    entries).
    """
    if isinstance(galleries, Sized) and len(galleries) != len(query_embeddings):
        raise ValueError(f"{len(query_embeddings)} query embeddings but {len(galleries)} galleries")
    gallery_embeddings = _gallery_embeddings(query_embeddings, detections)
    pending = iter(galleries)
    outcomes = []
    # One matrix product per block of queries: far faster than a product per query.
    block = max(1, min(_QUERY_BLOCK, _BLOCK_SIMILARITIES // max(1, len(gallery_embeddings))))
    for start in range(0, len(query_embeddings), block):
        similarities = query_embeddings[start : start + block] @ gallery_embeddings.T
        block_galleries = islice(pending, len(similarities))
        # strict=False: running out of galleries is reported below, with the counts.
        for row, gallery in zip(similarities, block_galleries, strict=False):
            outcomes.append(_score_query(row, gallery, detections))
    if len(outcomes) < len(query_embeddings):
        raise ValueError(f"{len(query_embeddings)} query embeddings but {len(outcomes)} galleries")
    if next(pending, _END) is not _END:
        raise ValueError(f"{len(query_embeddings)} query embeddings but more galleries")
    return outcomes


def _gallery_embeddings(query_embeddings: np.ndarray, detections: GalleryDetections) -> np.ndarray:
    """The kept detections' embeddings, checked against the queries' dimension."""
    if detections.embeddings is None:
        if len(detections.scores):
            raise ResultsError("results have gallery boxes but no 'embeddings'")
        return np.zeros((0, query_embeddings.shape[1]), dtype=np.float32)
    if detections.embeddings.shape[1] != query_embeddings.shape[1]:
        raise ResultsError(
            f"gallery embeddings have {detections.embeddings.shape[1]} dimensions, "
            f"query embeddings {query_embeddings.shape[1]}"
        )
    return detections.embeddings


def summarise(outcomes: Sequence[QueryOutcome]) -> dict[str, Any]:
    scored = [o for o in outcomes if o.num_gt > 0]
    if not scored:
        raise ValueError("no query has its person in its gallery: nothing to score")
    summary: dict[str, Any] = {"mAP": float(np.mean([o.ap for o in scored]))}
    for k in TOP_K:
        hits = [o.best_rank is not None and o.best_rank < k for o in scored]
        summary[f"top{k}"] = float(np.mean(hits))
    summary["num_queries"] = len(outcomes)
    summary["queries_without_gt"] = len(outcomes) - len(scored)
    return summary


def _score_query(
    all_similarities: np.ndarray, gallery: Sequence[GalleryEntry], detections: GalleryDetections
) -> QueryOutcome:
    num_gt = sum(entry.gt_box is not None for entry in gallery)  # every listing counts
    gallery = _first_listings(gallery)  # but each image is scored once, as first listed
    rows, offsets = _gallery_rows(gallery, detections)
    similarities = all_similarities[rows]
    positives = []
    for entry, offset in zip(gallery, offsets, strict=True):
        if entry.gt_box is None:
            continue
        image_rows = detections.image_rows(entry.image)
        match = _first_match(
            all_similarities[image_rows], detections.boxes[image_rows], entry.gt_box
        )
        if match is not None:
            positives.append(offset + match)
    if not positives:
        return QueryOutcome(ap=0.0, num_found=0, num_gt=num_gt, best_rank=None)
    labels = np.zeros(len(similarities), dtype=bool)
    labels[positives] = True
    ap = average_precision(labels, similarities) * len(positives) / num_gt
    best_rank = min(_rank(similarities, position) for position in positives)
    return QueryOutcome(ap=ap, num_found=len(positives), num_gt=num_gt, best_rank=best_rank)


def _first_listings(gallery: Sequence[GalleryEntry]) -> Sequence[GalleryEntry]:
    """The gallery without the repeated listings of an image (the first one kept)."""
    seen: set[str] = set()
    first = []
    for entry in gallery:
        if entry.image not in seen:
            seen.add(entry.image)
            first.append(entry)
    return gallery if len(first) == len(gallery) else first


def _gallery_rows(
    gallery: Sequence[GalleryEntry], detections: GalleryDetections
) -> tuple[np.ndarray, np.ndarray]:
    """Detection rows of the gallery in list order, and where each entry's rows begin."""
    spans = np.array([detections.spans.get(e.image, (0, 0)) for e in gallery], dtype=np.int64)
    spans = spans.reshape(-1, 2)
    counts = spans[:, 1] - spans[:, 0]
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    rows = np.repeat(spans[:, 0] - offsets, counts) + np.arange(counts.sum())
    return rows, offsets


def _first_match(similarities: np.ndarray, boxes: np.ndarray, gt_box: np.ndarray) -> int | None:
    """Index of the most similar detection overlapping gt_box enough, or None."""
    if len(boxes) == 0:
        return None
    order = np.argsort(-similarities, kind="stable")
    overlaps = box_iou(np.asarray(gt_box)[None], boxes[order])[0]
    hits = np.flatnonzero(overlaps >= small_box_iou_threshold(gt_box))
    return int(order[hits[0]]) if len(hits) else None


def _rank(similarities: np.ndarray, position: int) -> int:
    """0-based rank of one item, ties broken by position."""
    value = similarities[position]
    return int(np.count_nonzero(similarities > value)) + int(
        np.count_nonzero(similarities[:position] == value)
    )
