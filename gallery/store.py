"""GalleryStore: frames, detections and embeddings in SQLite, searched through a vector
index (FAISS in process, or Milvus) derived from it."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

from gallery import browse, query
from gallery.frame_files import FRAMES_DIR, FrameFiles
from gallery.records import (
    DetectionInput,
    DetectionRecord,
    FrameExists,
    FrameImage,
    FrameInput,
    FramePage,
    FramePosition,
    FrameRecord,
    GalleryStats,
    SearchHit,
    StorageFull,
    StoreClosed,
    StoredDetection,
    StoreLocked,
    check_frame,
    coerce_detection,
    normalise,
)
from gallery.schema import connect, migrate
from gallery.vectors import (
    FaissConfig,
    MilvusConfig,
    VectorBackend,
    VectorConfig,
    VectorRows,
)

DB_NAME = "gallery.sqlite3"
LOCK_NAME = "gallery.lock"
# Where the vector index cannot filter (FAISS), a filtered search first over-fetches and
# filters the hits in SQLite; if the filter is so selective that this keeps failing, it asks
# SQLite for the matching ids and searches only those (exact, and cheap because few match).
OVERFETCH_FACTOR = 16
MIN_FETCH = 128
MAX_OVERFETCH = 8192

_FRAME_COLUMNS = "id, camera, timestamp, width, height, image_path, model_id, created_at, filename"
_FRAME_ROW = f"SELECT {_FRAME_COLUMNS} FROM frames WHERE id = ?"
_DETECTION_ROWS = "SELECT id, x1, y1, x2, y2, score FROM detections WHERE frame_id = ? ORDER BY id"


class GalleryStore:
    """The embedding store. SQLite (WAL) is the source of truth; the vector index holds only
    `model_id`'s vectors and is rebuilt or caught up from SQLite when it is missing, stale or
    damaged: FAISS saved beside the database by default, Milvus when `milvus` is given (the
    FAISS arguments then do not apply). One writer at a time, concurrent readers."""

    def __init__(
        self,
        data_dir: Path,
        model_id: str,
        dim: int,
        ivf_threshold: int = 100_000,
        nprobe: int = 32,
        autosave_every: int = 10_000,
        faiss_threads: int | None = None,
        milvus: MilvusConfig | None = None,
    ) -> None:
        """faiss_threads sets FAISS's (process-wide) OpenMP thread count; 1 suits a server
        answering concurrent single-query searches, where threads per query only contend."""
        if not isinstance(model_id, str) or not model_id:
            raise ValueError("model_id must be a non-empty string")
        if int(dim) <= 0:
            raise ValueError("dim must be positive")
        self.data_dir = Path(data_dir)
        self.model_id, self.dim = model_id, int(dim)
        self.vector_config: VectorConfig = milvus or FaissConfig(
            int(ivf_threshold), int(nprobe), int(autosave_every)
        )
        if faiss_threads is not None:
            faiss.omp_set_num_threads(int(faiss_threads))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock_data_dir(self.data_dir / LOCK_NAME)
        self._db_path = self.data_dir / DB_NAME
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._writer = connect(self._db_path)
        try:
            migrate(self._writer)
            self._register_model()
            self.files = FrameFiles(self.data_dir)
            self.files.sweep(self._image_paths())
            self._vectors = _open_vectors(
                self.vector_config, self._writer, self.data_dir, self.model_id, self.dim
            )
        except BaseException:
            self._writer.close()
            self._lock_file.close()
            raise

    # ---- lifecycle -------------------------------------------------------------------

    def _register_model(self) -> None:
        self._writer.execute(
            "INSERT OR IGNORE INTO models (model_id, dim, created_at) VALUES (?, ?, ?)",
            (self.model_id, self.dim, time.time()),
        )
        (stored_dim,) = self._writer.execute(
            "SELECT dim FROM models WHERE model_id = ?", (self.model_id,)
        ).fetchone()
        if stored_dim != self.dim:
            raise ValueError(f"model {self.model_id!r} is stored with dim {stored_dim}")

    def _image_paths(self) -> set[str]:
        rows = self._writer.execute("SELECT image_path FROM frames WHERE image_path IS NOT NULL")
        return {row[0] for row in rows}

    def close(self) -> None:
        """Close the vector index (FAISS saves it) and every connection; later calls raise
        StoreClosed."""
        with self._write_lock:
            if self._closed:
                return
            self._vectors.close()
            self._closed = True
            self._writer.close()
            with self._readers_lock:
                for connection in self._readers:
                    connection.close()
                self._readers.clear()
            self._lock_file.close()

    def __enter__(self) -> GalleryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the gallery store is closed")

    def _reader(self) -> sqlite3.Connection:
        """One read-only connection per thread: WAL readers never block the writer."""
        self._check_open()
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = connect(self._db_path)
            connection.execute("PRAGMA query_only=ON")
            self._local.connection = connection
            with self._readers_lock:
                self._readers.append(connection)
        return connection

    # ---- writes ----------------------------------------------------------------------

    def add_frame(
        self,
        *,
        width: int,
        height: int,
        detections: Sequence[DetectionInput | tuple] = (),
        frame_id: str | None = None,
        camera: str | None = None,
        timestamp: float | None = None,
        image_path: str | None = None,
        filename: str | None = None,
        image: FrameImage | None = None,
    ) -> FrameRecord:
        """Store one frame and its (box, score, embedding) detections in one transaction,
        committed before returning. Raises FrameExists or ValueError."""
        frame = FrameInput(
            width, height, detections, frame_id, camera, timestamp, image_path, filename, image
        )
        return self.add_frames([frame])[0]

    def add_frames(self, frames: Sequence[FrameInput]) -> list[FrameRecord]:
        """Store many frames (all or none): their image files first, then one transaction,
        then their vectors in the index.

        Existing ids are refused (FrameExists) before any file is written, so no stored
        frame's image is ever overwritten; if the commit fails the files are removed, and a
        crash between the files and the commit leaves files that the next open sweeps."""
        prepared = [self._prepare(frame) for frame in frames]
        frame_ids = [frame.frame_id for frame, _ in prepared]
        if len(set(frame_ids)) != len(frame_ids):
            raise ValueError("duplicate frame ids in one batch")
        with self._write_lock:
            self._check_open()
            self._refuse_existing([i for i in frame_ids if i is not None])
            written: list[str] = []
            try:
                for frame, _ in prepared:
                    if frame.image is not None and frame.image_path is not None:
                        self.files.write(frame.image_path, frame.image.data)
                        written.append(frame.image_path)
                records, vectors = self._insert(prepared, time.time())
            except BaseException:
                for relative in written:
                    self.files.remove(relative)
                raise
            self._vectors.add(_vector_rows(records, vectors))
        return records

    def _prepare(self, frame: FrameInput) -> tuple[FrameInput, list[DetectionInput]]:
        check_frame(frame)
        detections = [coerce_detection(item, self.dim) for item in frame.detections]
        if frame.frame_id is None:
            frame = dataclasses.replace(frame, frame_id=uuid.uuid4().hex)
        if frame.image is not None:
            assert frame.frame_id is not None
            path = self.files.relative_path(frame.frame_id, frame.image.suffix)
            frame = dataclasses.replace(frame, image_path=path)
        return frame, detections

    def _insert(
        self, prepared: list[tuple[FrameInput, list[DetectionInput]]], now: float
    ) -> tuple[list[FrameRecord], np.ndarray]:
        connection = self._writer
        with _transaction(connection):
            first_id = self._last_detection_id() + 1
            connection.executemany(
                f"INSERT INTO frames ({_FRAME_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [self._frame_row(frame, now) for frame, _ in prepared],
            )
            connection.executemany(
                "INSERT INTO detections (frame_id, x1, y1, x2, y2, score, embedding, model_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (frame.frame_id, *d.box, d.score, d.embedding.tobytes(), self.model_id)
                    for frame, detections in prepared
                    for d in detections
                ],
            )
            records = self._records(prepared, first_id, now)
            if self._last_detection_id() != first_id - 1 + sum(len(d) for _, d in prepared):
                raise RuntimeError("detection ids were not assigned consecutively")
        vectors = [d.embedding for _, detections in prepared for d in detections]
        return records, np.array(vectors, dtype=np.float32).reshape(-1, self.dim)

    def _refuse_existing(self, frame_ids: list[str]) -> None:
        row = self._writer.execute(
            "SELECT id FROM frames WHERE id IN (SELECT value FROM json_each(?)) LIMIT 1",
            (json.dumps(frame_ids),),
        ).fetchone()
        if row is not None:
            raise FrameExists(row[0])

    def _last_detection_id(self) -> int:
        row = self._writer.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'detections'"
        ).fetchone()
        return 0 if row is None else row[0]

    def _frame_row(self, frame: FrameInput, now: float) -> tuple:
        timestamp = None if frame.timestamp is None else float(frame.timestamp)
        return (
            frame.frame_id,
            frame.camera,
            timestamp,
            int(frame.width),
            int(frame.height),
            frame.image_path,
            self.model_id,
            now,
            frame.filename,
        )

    def _records(
        self, prepared: list[tuple[FrameInput, list[DetectionInput]]], first_id: int, now: float
    ) -> list[FrameRecord]:
        records, next_id = [], first_id
        for frame, detections in prepared:
            stored = tuple(
                DetectionRecord(next_id + i, d.box, d.score) for i, d in enumerate(detections)
            )
            next_id += len(detections)
            row = self._frame_row(frame, now)
            records.append(FrameRecord(*row, detections=stored))  # type: ignore[misc]  # row ends before detections
        return records

    def delete_frame(self, frame_id: str) -> bool:
        """Delete a frame, its detections, their vectors and its image file (if the store
        wrote it); False if it was not stored."""
        with self._write_lock:
            self._check_open()
            connection = self._writer
            with _transaction(connection):
                rows = connection.execute(
                    "SELECT id FROM detections WHERE frame_id = ? AND model_id = ?",
                    (frame_id, self.model_id),
                ).fetchall()
                image = connection.execute(
                    "SELECT image_path FROM frames WHERE id = ?", (frame_id,)
                ).fetchone()
                deleted = connection.execute("DELETE FROM frames WHERE id = ?", (frame_id,))
            self._vectors.remove(np.array([row[0] for row in rows], dtype=np.int64))
            if image is not None and image[0] and _in_frames_dir(image[0]):
                self.files.remove(image[0])
            return deleted.rowcount > 0

    # ---- reads -----------------------------------------------------------------------

    def search(
        self,
        query_embedding: np.ndarray,
        top_k: int = 10,
        camera: str | None = None,
        time_range: tuple[float | None, float | None] | None = None,
        min_score: float | None = None,
        min_similarity: float | None = None,
    ) -> list[SearchHit]:
        """The top_k stored detections most similar to the query (cosine), best first,
        among those passing the filters. time_range is inclusive (start, end), either None."""
        vector = normalise(query_embedding, self.dim)
        if isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        if min_similarity is not None and not math.isfinite(float(min_similarity)):
            raise ValueError("min_similarity must be finite")
        search_filter = query.SearchFilter.build(camera, time_range, min_score)
        floor = -math.inf if min_similarity is None else float(min_similarity)
        connection = self._reader()
        exact_fetch = search_filter.empty or self._vectors.pushes_down_filters
        fetch = int(top_k) if exact_fetch else max(OVERFETCH_FACTOR * top_k, MIN_FETCH)
        while True:
            found = self._vectors.search(vector, fetch, search_filter)
            # SQLite has the last word: a hit must still exist and pass the filter there.
            hits = query.lookup_hits(connection, found.ids, found.similarities, search_filter)
            passed_floor = len(found.ids) > 0 and found.similarities[-1] < floor
            hits = [hit for hit in hits if hit.similarity >= floor]
            if len(hits) >= top_k or found.exhausted or passed_floor:
                return hits[:top_k]
            if fetch >= MAX_OVERFETCH:
                return self._search_matching(connection, vector, top_k, search_filter, floor)
            fetch *= 4

    def _search_matching(
        self,
        connection: sqlite3.Connection,
        vector: np.ndarray,
        top_k: int,
        search_filter: query.SearchFilter,
        floor: float,
    ) -> list[SearchHit]:
        allowed = query.candidate_ids(connection, self.model_id, search_filter)
        if len(allowed) == 0:
            return []
        found = self._vectors.search(vector, top_k, search_filter, allowed_ids=allowed)
        hits = query.lookup_hits(connection, found.ids, found.similarities, search_filter)
        return [hit for hit in hits if hit.similarity >= floor][:top_k]

    def get_frame(self, frame_id: str) -> FrameRecord | None:
        """A stored frame with its detections, or None."""
        connection = self._reader()
        row = connection.execute(_FRAME_ROW, (frame_id,)).fetchone()
        if row is None:
            return None
        detections = tuple(
            DetectionRecord(d[0], (d[1], d[2], d[3], d[4]), d[5])
            for d in connection.execute(_DETECTION_ROWS, (frame_id,))
        )
        return FrameRecord(*row, detections=detections)  # type: ignore[misc]  # row ends before detections

    def list_frames(
        self,
        limit: int = 50,
        camera: str | None = None,
        time_range: tuple[float | None, float | None] | None = None,
        after: FramePosition | None = None,
    ) -> FramePage:
        """Stored frames with their detections, newest first (by timestamp, else by when they
        were stored), `limit` at a time; pass a page's `next_after` as `after` for the next.
        time_range filters on the timestamp, inclusive, as in search."""
        if isinstance(limit, bool) or int(limit) != limit or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        search_filter = query.SearchFilter.build(camera, time_range, None)
        return browse.list_frames(self._reader(), search_filter, int(limit), after)

    def get_detection(self, detection_id: int) -> StoredDetection | None:
        """A stored detection with its frame id and embedding (of whichever model), or None."""
        return browse.stored_detection(self._reader(), detection_id)

    def read_image(self, record: FrameRecord) -> bytes | None:
        """The frame's image file as uploaded; None if it has none or the file is gone."""
        return None if record.image_path is None else self.files.read(record.image_path)

    def sample_frame_images(self, count: int, seed: int | None = None) -> list[bytes]:
        """The image files of up to ``count`` stored frames picked at random: a random rowid
        each, then the next frame with an image (no table scan); missing files are skipped."""
        connection = self._reader()
        top = connection.execute("SELECT max(rowid) FROM frames").fetchone()[0]
        if top is None or count < 1:
            return []
        rng = np.random.default_rng(seed)
        paths: list[str] = []
        for start in rng.integers(0, top, size=count):
            row = connection.execute(
                "SELECT image_path FROM frames WHERE rowid > ? AND image_path IS NOT NULL "
                "ORDER BY rowid LIMIT 1",
                (int(start),),
            ).fetchone()
            if row is not None:
                paths.append(row[0])
        return [data for path in paths if (data := self.files.read(path)) is not None]

    def stored_frame_ids(self, frame_ids: Sequence[str]) -> set[str]:
        """Which of ``frame_ids`` are stored: one indexed lookup for the lot, so a caller can
        refuse a batch before decoding or detecting anything (add_frames still checks under
        its lock)."""
        rows = self._reader().execute(
            "SELECT id FROM frames WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(frame_ids)),),
        )
        return {row[0] for row in rows}

    def frames_to_reembed(self, limit: int, after: str | None = None) -> list[FrameRecord]:
        """Up to ``limit`` frames embedded by another model, in frame-id order after ``after``
        (a re-embedding run passes over frames it could not read by moving on)."""
        rows = (
            self._reader()
            .execute(
                "SELECT id FROM frames WHERE model_id != ? AND id > ? ORDER BY id LIMIT ?",
                (self.model_id, after or "", int(limit)),
            )
            .fetchall()
        )
        return [record for (frame_id,) in rows if (record := self.get_frame(frame_id))]

    def reembed_frames(self, frames: Sequence[tuple[str, Sequence[DetectionInput | tuple]]]) -> int:
        """Replace the detections of stored frames with this model's (frame id, detections),
        in one transaction, and index them; the frames' images and other fields stay. Frames
        deleted meanwhile are passed over. Returns how many frames were re-embedded."""
        prepared = [
            (frame_id, [coerce_detection(item, self.dim) for item in detections])
            for frame_id, detections in frames
        ]
        with self._write_lock:
            self._check_open()
            connection = self._writer
            records: list[FrameRecord] = []
            vectors: list[np.ndarray] = []
            with _transaction(connection):
                for frame_id, detections in prepared:
                    updated = connection.execute(
                        "UPDATE frames SET model_id = ? WHERE id = ?", (self.model_id, frame_id)
                    )
                    if updated.rowcount == 0:
                        continue
                    connection.execute("DELETE FROM detections WHERE frame_id = ?", (frame_id,))
                    first_id = self._last_detection_id() + 1
                    connection.executemany(
                        "INSERT INTO detections (frame_id, x1, y1, x2, y2, score, embedding,"
                        " model_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            (frame_id, *d.box, d.score, d.embedding.tobytes(), self.model_id)
                            for d in detections
                        ],
                    )
                    stored = tuple(
                        DetectionRecord(first_id + i, d.box, d.score)
                        for i, d in enumerate(detections)
                    )
                    record = self._frame_record(connection, frame_id)
                    records.append(dataclasses.replace(record, detections=stored))
                    vectors += [d.embedding for d in detections]
            matrix = np.array(vectors, dtype=np.float32).reshape(-1, self.dim)
            self._vectors.add(_vector_rows(records, matrix))
        return len(records)

    def _frame_record(self, connection: sqlite3.Connection, frame_id: str) -> FrameRecord:
        row = connection.execute(_FRAME_ROW, (frame_id,)).fetchone()
        return FrameRecord(*row)

    def frame_ids(self, prefix: str) -> set[str]:
        """Stored frame ids that start with `prefix` (a bulk ingest skips what it stored).

        A range over the primary key: every id that starts with `prefix` sorts at or after it
        and before `prefix` + the largest character, and frame ids are ASCII."""
        rows = self._reader().execute(
            "SELECT id FROM frames WHERE id >= ? AND id < ?", (prefix, prefix + "\U0010ffff")
        )
        return {row[0] for row in rows}

    def stats(self) -> GalleryStats:
        """Counts per model; only this store's model is indexed and searched."""
        connection = self._reader()
        per_model: dict[str, dict[str, int]] = {}
        for table, key in (("frames", "frames"), ("detections", "detections")):
            sql = f"SELECT model_id, COUNT(*) FROM {table} GROUP BY model_id"
            for model_id, count in connection.execute(sql):
                per_model.setdefault(model_id, {"frames": 0, "detections": 0})[key] = count
        own = per_model.pop(self.model_id, {"frames": 0, "detections": 0})
        return GalleryStats(
            self.model_id,
            self.dim,
            own["frames"],
            own["detections"],
            self._vectors.kind,
            self._vectors.size,
            self._vectors.origin,
            per_model,
        )


def _open_vectors(
    config: VectorConfig,
    connection: sqlite3.Connection,
    data_dir: Path,
    model_id: str,
    dim: int,
) -> VectorBackend:
    """Open the configured index of model_id's vectors, in line with SQLite. `connection` is
    the store's writer: the backend reads SQLite through it only under the store's write lock."""
    if isinstance(config, MilvusConfig):
        # pymilvus takes seconds to import: only galleries that use Milvus pay for it.
        from gallery.milvus_vectors import MilvusVectors

        return MilvusVectors(config, connection, model_id, dim)
    from gallery.faiss_vectors import FaissVectors

    return FaissVectors(config, connection, data_dir, model_id, dim)


def _in_frames_dir(relative: str) -> bool:
    """Files the store wrote; a path a caller gave (image_path) stays the caller's."""
    return relative.startswith(f"{FRAMES_DIR}/")


def _vector_rows(records: list[FrameRecord], vectors: np.ndarray) -> VectorRows:
    """The stored detections of `records` with the metadata searches filter on."""
    detections = [(frame, d) for frame in records for d in frame.detections]
    return VectorRows(
        np.array([d.id for _, d in detections], dtype=np.int64),
        vectors,
        [frame.camera for frame, _ in detections],
        [frame.timestamp for frame, _ in detections],
        [d.score for _, d in detections],
    )


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error; a full disk is StorageFull."""
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
            connection.execute("COMMIT")
        except BaseException:
            # SQLite rolls back by itself on some errors (a full disk among them); a second
            # ROLLBACK would fail and hide the real error.
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode == sqlite3.SQLITE_FULL:
            raise StorageFull(f"the gallery's disk is full: {exc}") from exc
        raise


def _lock_data_dir(path: Path):
    """Hold an exclusive lock for the store's lifetime: two stores writing one directory
    would each keep an in-memory index blind to the other's rows. The kernel drops the
    lock when the process dies, so a crash never leaves the directory locked."""
    handle = path.open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StoreLocked(f"{path.parent} is already open in another GalleryStore") from None
    return handle
