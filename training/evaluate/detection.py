"""Person detection protocol over gallery images: AP at an IoU bar, and recall.

Matching follows the person-search reference code (OIM / SeqNet), so the numbers compare with
the papers: in each image a detection and a ground-truth box match when each is the other's
highest-IoU partner and their IoU reaches iou_thresh. AP is the non-interpolated area under the
precision-recall curve with recall taken over all ground-truth boxes (tied scores entering
together, as in scikit-learn), i.e. scikit-learn's AP of the detections times the recall.
With labelled_only, unlabelled people are not ground truth and images without a labelled
person are skipped; its AP counts detected unlabelled people as false, so read its recall.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from inference.boxes import box_iou
from training.data.base import UNLABELLED, ImageRecord
from training.evaluate.metrics import average_precision
from training.evaluate.results import GalleryDetections, parse_gallery


def evaluate_detection(
    images: Sequence[ImageRecord],
    results: Mapping[str, Any],
    det_thresh: float = 0.5,
    iou_thresh: float = 0.5,
    labelled_only: bool = False,
) -> dict[str, Any]:
    """Detection AP and recall (fractions) of results["gallery"] over these images.

    An image absent from results has no detections (its boxes count as missed).
    """
    detections = parse_gallery(results, det_thresh)
    return {
        **detection_metrics(images, detections, iou_thresh, labelled_only),
        "det_thresh": det_thresh,
        "iou_thresh": iou_thresh,
        "labelled_only": labelled_only,
    }


def detection_metrics(
    images: Sequence[ImageRecord],
    detections: GalleryDetections,
    iou_thresh: float,
    labelled_only: bool,
) -> dict[str, Any]:
    is_true, scores, num_gt = [], [], 0
    for image in images:
        gt_boxes = np.asarray(image.boxes, dtype=np.float64).reshape(-1, 4)
        if labelled_only:
            gt_boxes = gt_boxes[np.asarray(image.pids) != UNLABELLED]
            if len(gt_boxes) == 0:
                continue
        rows = detections.image_rows(image.name)
        is_true.append(_mutual_best_matches(gt_boxes, detections.boxes[rows], iou_thresh))
        scores.append(detections.scores[rows])
        num_gt += len(gt_boxes)
    if num_gt == 0:
        raise ValueError("no ground-truth boxes to score detection against")
    labels = np.concatenate(is_true) if is_true else np.zeros(0, dtype=bool)
    recall = float(labels.sum()) / num_gt
    ap = average_precision(labels, np.concatenate(scores) if scores else np.zeros(0)) * recall
    return {"ap": ap, "recall": recall, "num_gt": num_gt, "num_detections": int(labels.size)}


def _mutual_best_matches(gt_boxes: np.ndarray, boxes: np.ndarray, iou_thresh: float) -> np.ndarray:
    """Per detection: whether it and some ground-truth box are each other's best match."""
    if len(gt_boxes) == 0 or len(boxes) == 0:
        return np.zeros(len(boxes), dtype=bool)
    overlaps = box_iou(gt_boxes, boxes)
    best_gt = overlaps.argmax(axis=0)
    best_detection = overlaps.argmax(axis=1)
    detection_index = np.arange(len(boxes))
    return (best_detection[best_gt] == detection_index) & (
        overlaps[best_gt, detection_index] >= iou_thresh
    )
