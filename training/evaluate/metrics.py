"""Ranking and box primitives shared by the search and detection protocols (numpy only)."""

from __future__ import annotations

import numpy as np


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Non-interpolated average precision of binary labels ranked by scores.

    Equal to scikit-learn's `average_precision_score`: the sum over distinct score thresholds
    of (recall step) x (precision), items with tied scores entering the ranking together.
    Written per positive item p as the mean over positives of
    (positives scoring >= s_p) / (items scoring >= s_p). Returns 0.0 when there is no positive.
    """
    labels = np.asarray(labels, dtype=bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    positive_scores = scores[labels]
    if positive_scores.size == 0:
        return 0.0
    items_at_or_above = _count_at_or_above(np.sort(scores), positive_scores)
    positives_at_or_above = _count_at_or_above(np.sort(positive_scores), positive_scores)
    return float(np.mean(positives_at_or_above / items_at_or_above))


def _count_at_or_above(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each threshold, how many of the ascending `sorted_values` are >= it."""
    return sorted_values.size - np.searchsorted(sorted_values, thresholds, side="left")


def small_box_iou_threshold(gt_box: np.ndarray) -> float:
    """The search protocol's IoU bar for a ground-truth box: min(0.5, wh / ((w + 10)(h + 10))).

    It relaxes the usual 0.5 for small people, whose boxes shift a lot in IoU for a few pixels.
    """
    width = float(gt_box[2] - gt_box[0])
    height = float(gt_box[3] - gt_box[1])
    return min(0.5, width * height / ((width + 10.0) * (height + 10.0)))
