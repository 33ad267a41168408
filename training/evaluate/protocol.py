"""Both protocols on a loaded test split: what `python -m training.evaluate` reports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from training.data.base import GalleryEntry, ImageRecord, Query
from training.evaluate.detection import detection_metrics
from training.evaluate.results import ResultsError, parse_gallery, parse_queries
from training.evaluate.search import search_outcomes, summarise

DETECTION_IOU = 0.5


class SearchDataset(Protocol):
    """What the evaluator needs of a test split (training.data.PRW / CUHKSYSU provide it)."""

    name: str
    images: list[ImageRecord]
    queries: list[Query]

    def image(self, name: str) -> ImageRecord: ...

    def gallery(
        self, query_index: int, gallery_size: int | None = 100, cross_camera: bool = False
    ) -> list[GalleryEntry]: ...


def evaluate_dataset(
    dataset: SearchDataset,
    results: Mapping[str, Any],
    gallery_size: int | None = 100,
    cross_camera: bool = False,
    det_thresh: float = 0.5,
) -> dict[str, Any]:
    """Search mAP, top-1/5/10 and detection AP/recall (fractions) plus the parameters used.

    gallery_size applies to CUHK-SYSU (None = the full test pool) and is recorded as None for
    PRW, whose gallery is every other test frame (of other cameras with cross_camera).
    Test images missing from results count as having no detections; their number is reported
    as `missing_gallery_images`.
    """
    query_embeddings = parse_queries(results)
    if len(query_embeddings) != len(dataset.queries):
        raise ResultsError(
            f"results hold {len(query_embeddings)} query embeddings "
            f"but {dataset.name} has {len(dataset.queries)} queries"
        )
    detections = parse_gallery(results, det_thresh)
    # Built one query at a time as the search consumes them: all of PRW's galleries at once
    # would be ~12.5 million entries (over a GB), CUHK-SYSU's full pool ~20 million.
    galleries = (
        dataset.gallery(index, gallery_size, cross_camera) for index in range(len(dataset.queries))
    )
    search = summarise(search_outcomes(query_embeddings, galleries, detections))
    everyone = detection_metrics(dataset.images, detections, DETECTION_IOU, labelled_only=False)
    labelled = detection_metrics(dataset.images, detections, DETECTION_IOU, labelled_only=True)
    return {
        **search,
        "det_ap": everyone["ap"],
        "det_recall": everyone["recall"],
        "det_recall_labelled": labelled["recall"],
        "dataset": dataset.name,
        "gallery_size": gallery_size if dataset.name == "cuhk" else None,
        "cross_camera": cross_camera,
        "det_thresh": det_thresh,
        "det_iou": DETECTION_IOU,
        "num_gallery_images": len(dataset.images),
        "missing_gallery_images": _count_missing(dataset.images, detections.spans),
    }


def _count_missing(images: Sequence[ImageRecord], present: Mapping[str, Any]) -> int:
    return sum(image.name not in present for image in images)
