"""The vector side of the store behind one small interface: FAISS in process, or Milvus.

SQLite is the source of truth. A vector index holds one model's embeddings keyed by detection
id; it is derived from SQLite, and brought in line with it (loaded, caught up or rebuilt) when
it is opened. The store (gallery/store.py) picks the implementation by the type of its config;
this module names the interface only, so it imports neither implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gallery.query import SearchFilter

MILVUS_INDEX_TYPES = ("FLAT", "HNSW", "IVF_FLAT")


@dataclass(frozen=True)
class FaissConfig:
    """FAISS in the store's process: flat (exact) below ivf_threshold vectors, IVF above;
    the index is saved beside the database every autosave_every changes and at close."""

    ivf_threshold: int = 100_000
    nprobe: int = 32
    autosave_every: int = 10_000

    def __post_init__(self) -> None:
        if self.ivf_threshold <= 0 or self.nprobe <= 0:
            raise ValueError("ivf_threshold and nprobe must be positive")


@dataclass(frozen=True)
class MilvusConfig:
    """Milvus: `uri` a path ending in `.db` runs Milvus Lite inside this process; an
    http(s)://host:19530 URI is a Milvus server or cluster, reached with the same client.

    index_type FLAT is exact; HNSW (searched with ef = max(hnsw_ef, k)) and IVF_FLAT
    (ivf_nlist lists, ivf_nprobe probed) are approximate. Each model gets its own
    collection, named from collection_prefix and the model id.
    """

    uri: str
    index_type: str = "HNSW"
    token: str = ""
    collection_prefix: str = "gallery"
    hnsw_ef: int = 64
    ivf_nlist: int = 1024
    ivf_nprobe: int = 32

    def __post_init__(self) -> None:
        if self.index_type not in MILVUS_INDEX_TYPES:
            raise ValueError(f"index_type must be one of {MILVUS_INDEX_TYPES}")
        if not self.uri:
            raise ValueError("a Milvus URI is a .db path (Milvus Lite) or http(s)://host:port")
        if min(self.hnsw_ef, self.ivf_nlist, self.ivf_nprobe) <= 0:
            raise ValueError("hnsw_ef, ivf_nlist and ivf_nprobe must be positive")

    @property
    def embedded(self) -> bool:
        """Milvus Lite (a local .db path) rather than a server."""
        return not self.uri.startswith(("http://", "https://", "tcp://", "unix:"))


VectorConfig = FaissConfig | MilvusConfig


@dataclass(frozen=True)
class VectorRows:
    """Detections to index: ids, unit vectors and the metadata a search may filter on."""

    ids: np.ndarray
    vectors: np.ndarray
    cameras: Sequence[str | None]
    timestamps: Sequence[float | None]
    scores: Sequence[float]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Candidates:
    """Search results, best first; `exhausted` when the index holds no further candidates."""

    similarities: np.ndarray
    ids: np.ndarray
    exhausted: bool


class VectorBackend(Protocol):
    """What the store needs of a vector index. Writes come one at a time (under the store's
    write lock); searches may run concurrently with each other and with a write."""

    @property
    def pushes_down_filters(self) -> bool:
        """Whether search applies the SearchFilter itself (else the store filters in SQLite)."""
        ...

    @property
    def origin(self) -> str:
        """How the index was obtained at open: loaded, caught up (+a, -r) or rebuilt (why)."""
        ...

    @property
    def kind(self) -> str: ...

    @property
    def size(self) -> int: ...

    def add(self, rows: VectorRows) -> None: ...

    def remove(self, ids: np.ndarray) -> None: ...

    def search(
        self,
        vector: np.ndarray,
        k: int,
        search_filter: SearchFilter,
        allowed_ids: np.ndarray | None = None,
    ) -> Candidates:
        """The top-k by cosine among allowed_ids (all when None) and, if the filters are
        pushed down, among the rows passing search_filter."""
        ...

    def close(self) -> None: ...
