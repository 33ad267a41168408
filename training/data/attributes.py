"""Attribute labels for the optional attribute task t11 (binary cross-entropy per attribute).

The file is the generator's `attributes.json` or one a user writes in the same shape:
``{"vector_names": [name, ...], "identities": {id_name: {"vector": [0|1, ...]}, ...}}`` keyed by
the dataset's own identity names (PRW pids as text, CUHK-SYSU's `pNNNN`). Training identities
without an entry get -1 (unknown) for every attribute and add nothing to the loss.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.data.base import DatasetError

UNKNOWN = -1.0


def load_attribute_labels(path: Path | str, id_names: Sequence[str]) -> tuple[np.ndarray, list]:
    """Labels [len(id_names), A] float32 (0, 1, or -1 unknown) in training-label order, and
    the attribute names. DatasetError (naming the file) when the file is unusable."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: cannot read attribute labels ({error})") from error
    names = document.get("vector_names") if isinstance(document, dict) else None
    identities = document.get("identities") if isinstance(document, dict) else None
    if not isinstance(names, list) or not names or not isinstance(identities, dict):
        raise DatasetError(f'{path}: expected {{"vector_names": [...], "identities": {{...}}}}')
    labels = np.full((len(id_names), len(names)), UNKNOWN, dtype=np.float32)
    found = 0
    for row, name in enumerate(id_names):
        entry = identities.get(name)
        if entry is None:
            continue
        vector = entry.get("vector") if isinstance(entry, dict) else None
        if not isinstance(vector, list) or len(vector) != len(names):
            raise DatasetError(f"{path}: identity {name!r} needs a vector of {len(names)} values")
        if any(value not in (0, 1) for value in vector):
            raise DatasetError(f"{path}: identity {name!r}: attribute values must be 0 or 1")
        labels[row] = vector
        found += 1
    if found == 0:
        raise DatasetError(f"{path}: none of the {len(id_names)} training identities is listed")
    return labels, [str(name) for name in names]


def box_attributes(labels: np.ndarray, pids: np.ndarray) -> np.ndarray:
    """Per box [N, A]: its identity's labels, unknown (-1) for unlabelled boxes."""
    out = np.full((len(pids), labels.shape[1]), UNKNOWN, dtype=np.float32)
    labelled = pids >= 0
    out[labelled] = labels[pids[labelled]]
    return out
