"""The Milvus backend: one collection per model, filters pushed down to Milvus.

Each row is a detection: its id (primary key), unit vector, and the camera, timestamp and
score that searches filter on, so a filtered search is answered by Milvus alone. The same
pymilvus client reaches Milvus Lite (a local `.db` path, run inside this process) or a Milvus
server or cluster (`http://host:19530`).

SQLite stays the source of truth and the collection is derived from it. Every write reaches
SQLite first and Milvus second, one write at a time, so after a crash (or SIGKILL) Milvus can
lack at most the tail of the writes, and opening the store catches it up:
- a cheap check first: Milvus holds as many rows as SQLite and its highest id is SQLite's.
  A lost insert leaves SQLite's highest live id missing (ids only grow), a lost delete
  leaves a row too many; a lost tail of both is caught by one or the other.
- when the check fails, the two id sets are compared and the difference applied: extra
  rows deleted, missing ones inserted in id order (so the highest goes last, and a catch-up
  cut short fails the cheap check again next time).
A collection of another dimension, index type or schema is dropped and rebuilt from SQLite.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient

from gallery import sync
from gallery.query import SearchFilter
from gallery.vectors import Candidates, MilvusConfig, VectorRows

log = logging.getLogger(__name__)


class _QuietUnimplementedAllocTimestamp(logging.Filter):
    """Drops one log record of Milvus Lite's in-process gRPC server: pymilvus asks it for a
    timestamp (AllocTimestamp) while waiting for an index to build, Milvus Lite does not
    implement that call, and grpc logs the NotImplementedError as an ERROR with a traceback.
    pymilvus expects the refusal (`ignore_unimplemented`) and carries on, so it is no error;
    every other record of that logger is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info is None or not isinstance(record.exc_info[1], NotImplementedError):
            return True
        trace = record.exc_info[2]
        while trace is not None and trace.tb_next is not None:
            trace = trace.tb_next
        return trace is None or trace.tb_frame.f_code.co_name != "AllocTimestamp"


_QUIET_ALLOC_TIMESTAMP = _QuietUnimplementedAllocTimestamp()

VECTOR = "vector"
FIELDS = ("id", VECTOR, "camera", "timestamp", "score")
MAX_TOP_K = 16_384  # Milvus's limit on one search's top-k
WRITE_BYTES = 4 << 20  # vectors per insert request: well under gRPC's 64 MiB message limit
CAMERA_BYTES = 65_535  # VARCHAR's largest size: the store accepts any camera string
# Milvus Lite copies its in-memory table of recent writes row by row in Python at every search
# (measured here: ~0.7 ms a 512-d row on the loaded 2-core VM) and indexes only flushed
# segments; flushing every thousand changed rows bounds that cost. Bulk loads at open flush
# once at the end. A Milvus server indexes growing segments itself and is never flushed.
LITE_FLUSH_ROWS = 1024
# Milvus string literals take C escapes; these are the characters that need one.
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})
_ROWS = """
SELECT d.id, d.embedding, d.score, f.camera, f.timestamp
FROM detections d JOIN frames f ON f.id = d.frame_id
WHERE d.model_id = ? AND d.id IN (SELECT value FROM json_each(?)) ORDER BY d.id
"""


def collection_name(prefix: str, model_id: str) -> str:
    """A valid collection name (letters, digits, underscores) that only this model id gives:
    the readable part may collide after sanitising, the hash of the exact id does not."""
    readable = re.sub(r"[^0-9A-Za-z]+", "_", model_id).strip("_")[:64]
    digest = hashlib.sha256(model_id.encode()).hexdigest()[:12]
    return f"{prefix}_{readable}_{digest}"


def filter_expression(search_filter: SearchFilter, allowed_ids: np.ndarray | None) -> str:
    """The Milvus boolean expression of the filter ("" keeps everything). Rows whose camera
    or timestamp is null fail a condition on it, as in SQL."""
    clauses = []
    if search_filter.camera is not None:
        clauses.append(f'camera == "{search_filter.camera.translate(_ESCAPES)}"')
    for clause, value in (
        ("timestamp >= {}", search_filter.start),
        ("timestamp <= {}", search_filter.end),
        ("score >= {}", search_filter.min_score),
    ):
        if value is not None:
            clauses.append(clause.format(repr(float(value))))
    if allowed_ids is not None:
        clauses.append(f"id in [{','.join(str(int(i)) for i in allowed_ids)}]")
    return " and ".join(clauses)


class MilvusVectors:
    """One model's vectors in a Milvus collection (consistency level Strong, so a search
    sees every write acknowledged before it)."""

    pushes_down_filters = True

    def __init__(
        self, config: MilvusConfig, connection: sqlite3.Connection, model_id: str, dim: int
    ) -> None:
        self._config = config
        self._model_id, self._dim = model_id, dim
        self.collection = collection_name(config.collection_prefix, model_id)
        if config.embedded:
            logging.getLogger("grpc._server").addFilter(_QUIET_ALLOC_TIMESTAMP)  # added once
        self._client = MilvusClient(uri=config.uri, token=config.token)
        self._unflushed = 0
        try:
            self._origin = self._open(connection)
        except BaseException:
            self.close()
            raise

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def kind(self) -> str:
        return f"milvus-{self._config.index_type.lower()}"

    @property
    def size(self) -> int:
        rows = self._client.query(
            self.collection, filter="", output_fields=["count(*)"], consistency_level="Strong"
        )
        return int(rows[0]["count(*)"])

    # ---- open: check, catch up or rebuild ----------------------------------------------

    def _open(self, connection: sqlite3.Connection) -> str:
        unusable = self._unusable_reason()
        if unusable is not None:
            if unusable != "no collection":
                self._client.drop_collection(self.collection)
            self._create()
            self._client.load_collection(self.collection)
            added = self._insert_stored(connection, sync.stored_ids(connection, self._model_id))
            log.info("Milvus collection %s rebuilt with %d rows", self.collection, added)
            return f"rebuilt ({unusable})"
        self._client.load_collection(self.collection)
        return self._catch_up(connection)

    def _unusable_reason(self) -> str | None:
        if not self._client.has_collection(self.collection):
            return "no collection"
        described = self._client.describe_collection(self.collection)
        fields = {field["name"]: field for field in described["fields"]}
        if tuple(fields) != FIELDS:
            return f"fields {tuple(fields)}"
        dim = int(fields[VECTOR].get("params", {}).get("dim", -1))
        if dim != self._dim:
            return f"dimension {dim}, expected {self._dim}"
        index = self._client.describe_index(self.collection, VECTOR)
        if not index or index.get("index_type") != self._config.index_type:
            return f"index {index.get('index_type') if index else None}"
        if index.get("metric_type") != "IP":
            return f"metric {index.get('metric_type')}"
        return None

    def _create(self) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field(VECTOR, DataType.FLOAT_VECTOR, dim=self._dim)
        schema.add_field("camera", DataType.VARCHAR, max_length=CAMERA_BYTES, nullable=True)
        schema.add_field("timestamp", DataType.DOUBLE, nullable=True)
        schema.add_field("score", DataType.DOUBLE)
        index_params = self._client.prepare_index_params()
        index_params.add_index(
            field_name=VECTOR,
            index_type=self._config.index_type,
            metric_type="IP",  # inner product of unit vectors: cosine
            params=self._build_params(),
        )
        self._client.create_collection(
            self.collection,
            schema=schema,
            index_params=index_params,
            consistency_level="Strong",
            description=f"person-search detections of model {self._model_id}",
        )

    def _build_params(self) -> dict[str, Any]:
        if self._config.index_type == "HNSW":
            return {"M": 16, "efConstruction": 200}
        if self._config.index_type == "IVF_FLAT":
            return {"nlist": self._config.ivf_nlist}
        return {}

    def _catch_up(self, connection: sqlite3.Connection) -> str:
        count, highest = sync.count_and_max(connection, self._model_id)
        if self.size == count and self._ids_from(highest) == ([highest] if count else []):
            return "loaded"
        stored = sync.stored_ids(connection, self._model_id)
        held = self._held_ids()
        extra = np.setdiff1d(held, stored, assume_unique=True)
        self.remove(extra)
        added = self._insert_stored(connection, np.setdiff1d(stored, held, assume_unique=True))
        log.info("Milvus collection %s caught up: +%d, -%d", self.collection, added, len(extra))
        return f"caught up (+{added}, -{len(extra)})"

    def _ids_from(self, lowest: int) -> list[int]:
        """Ids at or above `lowest` (a few at most when the collection is in line)."""
        rows = self._client.query(
            self.collection,
            filter=f"id >= {int(lowest)}",
            output_fields=["id"],
            limit=16,
            consistency_level="Strong",
        )
        return sorted(int(row["id"]) for row in rows)

    def _held_ids(self) -> np.ndarray:
        iterator = self._client.query_iterator(
            self.collection, batch_size=MAX_TOP_K, filter="", output_fields=["id"]
        )
        chunks = []
        try:
            while batch := iterator.next():
                chunks.append(np.fromiter((row["id"] for row in batch), np.int64, len(batch)))
        finally:
            iterator.close()
        return np.unique(np.concatenate(chunks)) if chunks else np.empty(0, np.int64)

    def _insert_stored(self, connection: sqlite3.Connection, ids: np.ndarray) -> int:
        """Insert the stored rows of `ids` (ascending), in chunks read from SQLite."""
        for rows in _stored_rows(connection, self._model_id, self._dim, ids):
            self._insert(rows)
        self._flush()
        return len(ids)

    # ---- writes and searches -----------------------------------------------------------

    def add(self, rows: VectorRows) -> None:
        self._insert(rows)
        self._changed(len(rows))

    def _insert(self, rows: VectorRows) -> None:
        step = max(1, WRITE_BYTES // (4 * self._dim))
        for start in range(0, len(rows), step):
            stop = min(start + step, len(rows))
            self._client.insert(
                self.collection,
                [
                    {
                        "id": int(rows.ids[i]),
                        VECTOR: rows.vectors[i],
                        "camera": rows.cameras[i],
                        "timestamp": rows.timestamps[i],
                        "score": float(rows.scores[i]),
                    }
                    for i in range(start, stop)
                ],
            )

    def remove(self, ids: np.ndarray) -> None:
        for start in range(0, len(ids), MAX_TOP_K):
            chunk = [int(i) for i in ids[start : start + MAX_TOP_K]]
            self._client.delete(self.collection, ids=chunk)
            self._changed(len(chunk))

    def _changed(self, rows: int) -> None:
        self._unflushed += rows
        if self._unflushed >= LITE_FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._config.embedded:
            self._client.flush(self.collection)
        self._unflushed = 0

    def search(
        self,
        vector: np.ndarray,
        k: int,
        search_filter: SearchFilter,
        allowed_ids: np.ndarray | None = None,
    ) -> Candidates:
        limit = min(k, MAX_TOP_K)
        results = self._client.search(
            self.collection,
            data=[np.asarray(vector, dtype=np.float32)],
            anns_field=VECTOR,
            limit=limit,
            filter=filter_expression(search_filter, allowed_ids),
            output_fields=[],
            search_params={"metric_type": "IP", "params": self._search_params(limit)},
            consistency_level="Strong",
        )
        hits = results[0]
        ids = np.fromiter((hit["id"] for hit in hits), np.int64, len(hits))
        similarities = np.fromiter((hit["distance"] for hit in hits), np.float32, len(hits))
        return Candidates(similarities, ids, exhausted=len(hits) < limit)

    def _search_params(self, k: int) -> dict[str, Any]:
        if self._config.index_type == "HNSW":
            return {"ef": max(self._config.hnsw_ef, k)}
        if self._config.index_type == "IVF_FLAT":
            return {"nprobe": self._config.ivf_nprobe}
        return {}

    def close(self) -> None:
        self._client.close()
        if self._config.embedded:
            # Milvus Lite serves a .db path from a thread of this process until released;
            # release it so the files are flushed and the path can be opened again.
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self._config.uri)


def _stored_rows(
    connection: sqlite3.Connection, model_id: str, dim: int, ids: np.ndarray
) -> Iterator[VectorRows]:
    """VectorRows of the stored detections among `ids`, in chunks of sync.CHUNK_ROWS."""
    for start in range(0, len(ids), sync.CHUNK_ROWS):
        chunk = ids[start : start + sync.CHUNK_ROWS]
        rows = connection.execute(_ROWS, (model_id, _json_ids(chunk))).fetchall()
        if not rows:
            continue
        vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32)
        yield VectorRows(
            np.fromiter((row[0] for row in rows), np.int64, len(rows)),
            vectors.reshape(len(rows), dim),
            [row[3] for row in rows],
            [row[4] for row in rows],
            [row[2] for row in rows],
        )


def _json_ids(ids: np.ndarray) -> str:
    return "[" + ",".join(str(int(i)) for i in ids) + "]"
