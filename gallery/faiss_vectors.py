"""The FAISS backend: the index lives in the store's process and is saved beside the database.

It is opened through gallery.sync (load, catch up or rebuild from SQLite), switches from flat to
IVF once the gallery outgrows a flat index, and is saved now and then and at close; a saved
index may lag SQLite and is caught up at the next open.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import numpy as np

from gallery import sync
from gallery.index import IVF, IndexFiles
from gallery.query import SearchFilter
from gallery.rwlock import ReadWriteLock
from gallery.vectors import Candidates, FaissConfig, VectorRows

log = logging.getLogger(__name__)


class FaissVectors:
    """IndexIDMap2 over flat or IVF (gallery.index). Filters are left to the store."""

    pushes_down_filters = False

    def __init__(
        self,
        config: FaissConfig,
        connection: sqlite3.Connection,
        data_dir: Path,
        model_id: str,
        dim: int,
    ) -> None:
        self._config = config
        self._connection = connection
        self._model_id, self._dim = model_id, dim
        self._files = IndexFiles.beside(data_dir)
        self._files.remove_leftovers()
        index, self._origin = sync.open_index(
            connection, self._files, model_id, dim, config.ivf_threshold
        )
        index.nprobe = config.nprobe
        self._index = index
        # Readers search concurrently; a write (or a switch to IVF) waits for them.
        self._lock = ReadWriteLock()
        self._unsaved = 0
        if self._origin != "loaded":
            self._unsaved = index.ntotal or 1
            self._save()

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def kind(self) -> str:
        with self._lock.reading():
            return self._index.kind

    @property
    def size(self) -> int:
        with self._lock.reading():
            return self._index.ntotal

    def add(self, rows: VectorRows) -> None:
        with self._lock.writing():
            self._index.add(rows.ids, rows.vectors)
        self._after_change(len(rows))

    def remove(self, ids: np.ndarray) -> None:
        with self._lock.writing():
            self._index.remove(ids)
        self._after_change(len(ids))

    def search(
        self,
        vector: np.ndarray,
        k: int,
        search_filter: SearchFilter,
        allowed_ids: np.ndarray | None = None,
    ) -> Candidates:
        with self._lock.reading():
            total = self._index.ntotal
            k = min(k, total if allowed_ids is None else len(allowed_ids))
            if k == 0:
                return Candidates(np.empty(0, np.float32), np.empty(0, np.int64), True)
            exhaustive = k >= total or allowed_ids is not None
            similarities, ids = self._index.search(vector, k, exhaustive, allowed_ids)
        found = ids >= 0
        return Candidates(similarities[found], ids[found], exhausted=k >= total)

    def close(self) -> None:
        if self._unsaved:
            self._save()

    def _save(self) -> None:
        """Save the derived index; if the disk refuses, keep serving from memory (SQLite
        holds every row) and try again at the next save."""
        # Readers keep searching while the file is written; writers wait for it.
        with self._lock.reading():
            try:
                self._index.save(self._files, self._model_id)
            except (OSError, RuntimeError) as exc:  # faiss reports write errors as RuntimeError
                self._files.remove_leftovers()
                log.warning("the search index could not be saved (%s); serving it from memory", exc)
                return
            self._unsaved = 0

    def _after_change(self, changed: int) -> None:
        """Switch to IVF once the gallery outgrows a flat index; save now and then."""
        self._unsaved += changed
        if self._index.kind != IVF and self._index.ntotal >= self._config.ivf_threshold:
            index = sync.build_index(self._connection, self._model_id, self._dim, use_ivf=True)
            index.nprobe = self._config.nprobe
            with self._lock.writing():
                self._index = index
            self._save()
        elif self._unsaved >= max(self._config.autosave_every, self._index.ntotal // 2):
            self._save()
