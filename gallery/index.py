"""The FAISS side of the store: a derived, rebuildable index of one model's embeddings.

Vectors are L2-normalised, so inner product is cosine similarity. Ids are detection ids.
On disk the index is `index.faiss` plus `index.json`, which names the model, the highest
detection id the file includes (the watermark) and the file's sha256, so a stale, foreign or
damaged file is recognised at start and rebuilt or caught up from SQLite.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from inference.files import atomic_write, file_sha256, temporary_path, write_bytes_atomic

FLAT = "flat"
IVF = "ivf"
FORMAT_VERSION = 1


class IndexUnusable(Exception):
    """The saved index cannot be trusted; the message says why."""


@dataclass(frozen=True)
class IndexMeta:
    format: int
    model_id: str
    dim: int
    kind: str
    watermark: int
    count: int
    sha256: str


@dataclass(frozen=True)
class IndexFiles:
    index: Path
    meta: Path

    @classmethod
    def beside(cls, data_dir: Path) -> IndexFiles:
        return cls(data_dir / "index.faiss", data_dir / "index.json")

    def remove_leftovers(self) -> None:
        """Temp files of a save that was interrupted are useless; drop them."""
        for path in (self.index, self.meta):
            temporary_path(path).unlink(missing_ok=True)


class VectorIndex:
    """IndexIDMap2 over IndexFlatIP, or over IndexIVFFlat (inner product) for large galleries."""

    def __init__(self, index: faiss.IndexIDMap2, kind: str, watermark: int = 0) -> None:
        self._index = index
        self.kind = kind
        self.watermark = watermark  # highest detection id ever added to this index
        self.nprobe = 1

    @classmethod
    def flat(cls, dim: int) -> VectorIndex:
        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), FLAT)

    @classmethod
    def ivf(cls, dim: int, nlist: int, training: np.ndarray) -> VectorIndex:
        quantizer = faiss.IndexFlatIP(dim)
        inverted = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        inverted.train(np.ascontiguousarray(training, dtype=np.float32))
        return cls(faiss.IndexIDMap2(inverted), IVF)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return int(self._index.d)

    @property
    def nlist(self) -> int | None:
        return int(self._inverted().nlist) if self.kind == IVF else None

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        self.watermark = max(self.watermark, int(ids.max()))

    def remove(self, ids: np.ndarray) -> int:
        if len(ids) == 0:
            return 0
        return int(self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))

    def search(
        self,
        query: np.ndarray,
        k: int,
        exhaustive: bool = False,
        allowed_ids: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (similarities, ids) for one query, best first; ids of -1 pad missing results.

        exhaustive probes every IVF list (exact); allowed_ids restricts the search to them.
        """
        params = self._search_params(exhaustive, allowed_ids)
        similarities, ids = self._index.search(query.reshape(1, -1), k, params=params)
        return similarities[0], ids[0]

    def _search_params(self, exhaustive: bool, allowed_ids: np.ndarray | None):
        selector = None
        if allowed_ids is not None:
            selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed_ids, dtype=np.int64))
        if self.kind == IVF:
            nlist = int(self._inverted().nlist)
            nprobe = nlist if exhaustive else min(self.nprobe, nlist)
            return faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    def _inverted(self) -> faiss.IndexIVFFlat:
        return faiss.downcast_index(self._index.index)

    def save(self, files: IndexFiles, model_id: str) -> None:
        """Write both files atomically, the index first: a crash leaves the old pair or a pair
        whose checksum disagrees, never a half-written file that looks valid."""
        with atomic_write(files.index) as index_tmp:
            faiss.write_index(self._index, str(index_tmp))
            checksum = file_sha256(index_tmp)
        meta = IndexMeta(
            FORMAT_VERSION, model_id, self.dim, self.kind, self.watermark, self.ntotal, checksum
        )
        write_bytes_atomic(files.meta, json.dumps(asdict(meta), indent=1).encode())

    @classmethod
    def load(cls, files: IndexFiles, model_id: str, dim: int) -> VectorIndex:
        """Read a saved index and check it is the one its metadata describes."""
        meta = _read_meta(files)
        if meta.model_id != model_id:
            raise IndexUnusable(f"index built for model {meta.model_id!r}")
        if meta.dim != dim:
            raise IndexUnusable(f"index dimension {meta.dim}, expected {dim}")
        if not files.index.exists():
            raise IndexUnusable("index file missing")
        if file_sha256(files.index) != meta.sha256:
            raise IndexUnusable("index file checksum mismatch")
        try:
            index = faiss.read_index(str(files.index))
        except RuntimeError as error:
            raise IndexUnusable(f"unreadable index: {error}") from error
        if not isinstance(index, faiss.IndexIDMap2) or index.ntotal != meta.count:
            raise IndexUnusable("index file does not match its metadata")
        return cls(index, meta.kind, meta.watermark)


def _read_meta(files: IndexFiles) -> IndexMeta:
    if not files.meta.exists():
        raise IndexUnusable("no saved index")
    try:
        meta = IndexMeta(**json.loads(files.meta.read_text()))
    except (ValueError, TypeError) as error:
        raise IndexUnusable(f"unreadable index metadata: {error}") from error
    if meta.format != FORMAT_VERSION or meta.kind not in (FLAT, IVF):
        raise IndexUnusable(f"unknown index format {meta.format}/{meta.kind}")
    return meta
