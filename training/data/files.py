"""Helpers of the PRW and CUHK-SYSU loaders: MATLAB files read with errors naming the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy.io import loadmat

from training.data.base import UNLABELLED, DatasetError, ImageRecord


def read_variable(path: Path, *names: str) -> tuple[str, np.ndarray]:
    """The first of the named variables that the .mat file holds, with its name."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        contents = loadmat(path)
    except Exception as error:  # scipy raises several types for a damaged file
        raise DatasetError(f"{path}: not a readable MATLAB file ({error})") from error
    for name in names:
        if name in contents:
            return name, contents[name]
    found = sorted(key for key in contents if not key.startswith("__"))
    raise DatasetError(f"{path}: expected variable {' or '.join(names)}, found {found}")


def text(value: object) -> str:
    """A MATLAB string as loadmat returns it (array(['s1.jpg']), maybe inside a cell)."""
    array = np.asarray(value)
    while array.dtype == object and array.size == 1:
        array = np.asarray(array.ravel()[0])
    if array.size != 1 or array.dtype.kind not in "US":
        raise ValueError(f"expected a string, got {array!r}")
    return str(array.ravel()[0])


def xywh(value: object) -> np.ndarray:
    """A 1x4 x, y, w, h box as int64: the files store uint16, which must not wrap in arithmetic."""
    array = np.asarray(value)
    if array.size != 4:
        raise ValueError(f"expected a box of 4 numbers, got shape {array.shape}")
    return array.reshape(4).astype(np.int64)


def to_xyxy(boxes_xywh: np.ndarray) -> np.ndarray:
    """[N, 4] x, y, w, h -> float32 x1, y1, x2, y2."""
    boxes = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1).astype(np.float32)


def require_files(folder: Path, names: list[str]) -> None:
    """Fail naming the folder unless every listed image is in it (one listing, not N stats)."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found")
    present = set(os.listdir(folder))
    missing = [name for name in names if name not in present]
    if missing:
        raise DatasetError(f"{folder}: {len(missing)} listed images missing, e.g. {missing[:3]}")


def boxes_by_pid(images: list[ImageRecord]) -> dict[int, dict[str, np.ndarray]]:
    """pid -> image name -> that person's box (the first, should an image hold a pid twice)."""
    table: dict[int, dict[str, np.ndarray]] = {}
    for record in images:
        for box, pid in zip(record.boxes, record.pids, strict=True):
            if pid != UNLABELLED:
                table.setdefault(int(pid), {}).setdefault(record.name, box)
    return table
