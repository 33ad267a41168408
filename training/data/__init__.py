"""Person-search datasets: CUHK-SYSU and PRW read from their real on-disk layouts.

`load_dataset("prw" | "cuhk", root, "train" | "test")`; the records are in `training.data.base`.
"""

from __future__ import annotations

from pathlib import Path

from training.data.base import UNLABELLED, DatasetError, GalleryEntry, ImageRecord, Query
from training.data.cuhk import CUHKSYSU
from training.data.prw import PRW

DATASETS: dict[str, type[PRW] | type[CUHKSYSU]] = {"prw": PRW, "cuhk": CUHKSYSU}


def load_dataset(name: str, root: Path | str, split: str) -> PRW | CUHKSYSU:
    """One split of a dataset by its short name ("prw" or "cuhk")."""
    try:
        dataset = DATASETS[name.lower()]
    except KeyError:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}") from None
    return dataset(root, split)


__all__ = [
    "CUHKSYSU",
    "DATASETS",
    "PRW",
    "UNLABELLED",
    "DatasetError",
    "GalleryEntry",
    "ImageRecord",
    "Query",
    "load_dataset",
]
