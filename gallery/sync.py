"""Bring a derived vector index in line with SQLite: load, catch up, or rebuild.

The counting and id helpers serve both backends (Milvus catches up with them too); loading,
catching up and rebuilding a saved index file are FAISS's.

SQLite wins. A saved index may lag it (frames added or deleted after the last save); it is
caught up by adding rows above its watermark and removing ids whose rows are gone. Anything
else (missing, unreadable, another model, wrong kind, rows it should hold but lacks) means a
full rebuild from the stored embeddings.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import numpy as np

from gallery.index import IndexFiles, IndexUnusable, VectorIndex

CHUNK_ROWS = 50_000
TRAINING_POINTS_PER_LIST = 40


def count_vectors(connection: sqlite3.Connection, model_id: str) -> int:
    query = "SELECT COUNT(*) FROM detections WHERE model_id = ?"
    return connection.execute(query, (model_id,)).fetchone()[0]


def count_and_max(connection: sqlite3.Connection, model_id: str) -> tuple[int, int]:
    """How many vectors model_id has, and the highest id among them (0 when none)."""
    query = "SELECT COUNT(*), COALESCE(MAX(id), 0) FROM detections WHERE model_id = ?"
    count, highest = connection.execute(query, (model_id,)).fetchone()
    return count, highest


def stored_ids(connection: sqlite3.Connection, model_id: str) -> np.ndarray:
    """Every id of model_id's vectors, ascending."""
    return _ids(connection, model_id, None)


def ivf_lists(count: int) -> int:
    """About sqrt(N) lists, the usual balance of list scan against centroid scan."""
    return int(np.clip(round(np.sqrt(count)), 1, 4096))


def iter_vectors(
    connection: sqlite3.Connection, model_id: str, dim: int, after_id: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, vectors) chunks of one model's embeddings with id > after_id, in id order."""
    query = "SELECT id, embedding FROM detections WHERE model_id = ? AND id > ? ORDER BY id LIMIT ?"
    while rows := connection.execute(query, (model_id, after_id, CHUNK_ROWS)).fetchall():
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32)
        yield ids, vectors.reshape(len(rows), dim)
        after_id = int(ids[-1])


def build_index(
    connection: sqlite3.Connection, model_id: str, dim: int, use_ivf: bool, seed: int = 0
) -> VectorIndex:
    """A fresh index of every stored embedding of model_id; IVF is trained on a sample."""
    if use_ivf:
        index = VectorIndex.ivf(dim, *_training_sample(connection, model_id, dim, seed))
    else:
        index = VectorIndex.flat(dim)
    for ids, vectors in iter_vectors(connection, model_id, dim):
        index.add(ids, vectors)
    return index


def _training_sample(
    connection: sqlite3.Connection, model_id: str, dim: int, seed: int
) -> tuple[int, np.ndarray]:
    all_ids = _ids(connection, model_id, None)
    nlist = ivf_lists(len(all_ids))
    size = min(len(all_ids), nlist * TRAINING_POINTS_PER_LIST)
    chosen = np.random.default_rng(seed).choice(all_ids, size=size, replace=False)
    query = "SELECT embedding FROM detections WHERE id IN (SELECT value FROM json_each(?))"
    rows = connection.execute(query, (json.dumps(chosen.tolist()),)).fetchall()
    training = np.frombuffer(b"".join(row[0] for row in rows), dtype=np.float32)
    return nlist, training.reshape(len(rows), dim)


def _ids(connection: sqlite3.Connection, model_id: str, up_to: int | None) -> np.ndarray:
    query = "SELECT id FROM detections WHERE model_id = ? AND id <= ? ORDER BY id"
    limit = up_to if up_to is not None else 2**63 - 1
    rows = connection.execute(query, (model_id, limit)).fetchall()
    return np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))


def open_index(
    connection: sqlite3.Connection,
    files: IndexFiles,
    model_id: str,
    dim: int,
    ivf_threshold: int,
) -> tuple[VectorIndex, str]:
    """The index to serve with, and how it was obtained (for stats and logs)."""
    use_ivf = count_vectors(connection, model_id) >= ivf_threshold
    try:
        index = VectorIndex.load(files, model_id, dim)
        if (index.kind == "ivf") != use_ivf:
            raise IndexUnusable(f"a {index.kind} index no longer fits the gallery size")
        return index, _catch_up(connection, index, model_id, dim)
    except IndexUnusable as reason:
        index = build_index(connection, model_id, dim, use_ivf)
        return index, f"rebuilt ({reason})"


def _catch_up(connection: sqlite3.Connection, index: VectorIndex, model_id: str, dim: int) -> str:
    stored = _ids(connection, model_id, index.watermark)
    held = index.ids()
    if np.setdiff1d(stored, held, assume_unique=True).size:
        raise IndexUnusable("index lacks rows at or below its watermark")
    removed = index.remove(np.setdiff1d(held, stored, assume_unique=True))
    added = 0
    for ids, vectors in iter_vectors(connection, model_id, dim, after_id=index.watermark):
        index.add(ids, vectors)
        added += len(ids)
    return "loaded" if not (added or removed) else f"caught up (+{added}, -{removed})"
