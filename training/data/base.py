"""Records shared by the CUHK-SYSU and PRW loaders, the evaluator and the training data pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Person id of a box whose identity is unknown (PRW pid -2, CUHK-SYSU people not in Train.mat).
UNLABELLED = -1


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class ImageRecord:
    """One uncropped frame with its person boxes.

    boxes: float32 [N, 4] as x1, y1, x2, y2 in image pixels.
    pids: int64 [N]. In the train split labelled ids are contiguous 0..num_ids-1 (the OIM
    lookup-table rows); in the test split they are the dataset's own person ids. UNLABELLED
    marks unknown people in both.
    """

    name: str
    path: Path
    boxes: np.ndarray
    pids: np.ndarray
    camera: int


@dataclass(frozen=True)
class Query:
    """A query person: the image holding it, its box (x1, y1, x2, y2), its dataset id."""

    image: str
    box: np.ndarray
    pid: int
    camera: int


@dataclass(frozen=True)
class GalleryEntry:
    """One gallery image of one query; gt_box is the query person's box there, or None."""

    image: str
    gt_box: np.ndarray | None
