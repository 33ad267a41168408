"""MATLAB struct and cell arrays as scipy.io.savemat writes them.

numpy structured arrays of object fields become struct arrays and object arrays become cell
arrays, so `scipy.io.loadmat` hands back the same shapes as for the real dataset files.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy.io import savemat

# savemat stamps the creation time into the 116-byte text header; a fixed text keeps the
# files of one seed byte-identical.
HEADER = b"MATLAB 5.0 MAT-file, written by training.synth"
HEADER_BYTES = 116


def save_mat(path: Path, variables: dict[str, np.ndarray]) -> None:
    """savemat with a fixed header text."""
    buffer = io.BytesIO()
    savemat(buffer, variables)
    data = buffer.getvalue()
    path.write_bytes(HEADER.ljust(HEADER_BYTES, b" ") + data[HEADER_BYTES:])


def struct_row(records: Sequence[Mapping[str, object]], fields: Sequence[str]) -> np.ndarray:
    """A 1xN struct array with the given fields, one record per element."""
    array = np.empty((1, len(records)), dtype=[(field, object) for field in fields])
    for index, record in enumerate(records):
        for field in fields:
            array[0, index][field] = record[field]
    return array


def cell_column(items: Sequence[object]) -> np.ndarray:
    """An Nx1 cell array."""
    array = np.empty((len(items), 1), dtype=object)
    for index, item in enumerate(items):
        array[index, 0] = item
    return array


def idlocate(box_xywh: Sequence[int]) -> np.ndarray:
    """A 1x4 uint16 x, y, w, h box, as CUHK-SYSU stores them."""
    return np.asarray(box_xywh, dtype=np.uint16).reshape(1, 4)


def scalar(value: float, dtype: type = np.float64) -> np.ndarray:
    return np.array([[value]], dtype=dtype)


NOT_HARD = np.array([[0]], dtype=np.uint8)  # `ishard` of every synthetic box
NO_BOX = np.zeros((1, 0), dtype=np.uint16)  # `idlocate` of a negative gallery image
