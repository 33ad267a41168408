"""SQLite schema and connection settings: the source of truth of the gallery."""

from __future__ import annotations

import sqlite3
from pathlib import Path

# AUTOINCREMENT keeps detection ids (= FAISS ids) from ever being reused after a delete,
# so "ids at or below the index watermark" is a sound test of what a saved index holds.
SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    model_id   TEXT PRIMARY KEY,
    dim        INTEGER NOT NULL CHECK (dim > 0),
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS frames (
    id         TEXT PRIMARY KEY,
    camera     TEXT,
    timestamp  REAL,
    width      INTEGER NOT NULL,
    height     INTEGER NOT NULL,
    image_path TEXT,
    model_id   TEXT NOT NULL REFERENCES models (model_id),
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS frames_camera_time ON frames (camera, timestamp);
CREATE INDEX IF NOT EXISTS frames_time ON frames (timestamp);
CREATE TABLE IF NOT EXISTS detections (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    frame_id  TEXT NOT NULL REFERENCES frames (id) ON DELETE CASCADE,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    score     REAL NOT NULL,
    embedding BLOB NOT NULL,
    model_id  TEXT NOT NULL REFERENCES models (model_id)
);
CREATE INDEX IF NOT EXISTS detections_frame ON detections (frame_id);
CREATE INDEX IF NOT EXISTS detections_model ON detections (model_id, id);
"""

# Every database is created at version 1 (SCHEMA) and brought forward by these steps, so a
# new database and an upgraded one end with the same schema. Each step runs in one
# transaction with the version update.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 2: the uploaded file's name; browsing newest first (a frame's time is its timestamp,
    # else when it was stored), with or without a camera.
    2: (
        "ALTER TABLE frames ADD COLUMN filename TEXT",
        "CREATE INDEX frames_newest ON frames (COALESCE(timestamp, created_at), id)",
        "CREATE INDEX frames_camera_newest ON frames (camera, COALESCE(timestamp, created_at), id)",
    ),
}
SCHEMA_VERSION = max(MIGRATIONS)


def connect(db_path: Path) -> sqlite3.Connection:
    """Open a connection with the store's durability and integrity settings.

    WAL lets readers run while one writer commits. synchronous=FULL makes every commit fsync
    the WAL before returning: a SIGKILL alone would be survived with NORMAL too (the WAL pages
    are already in the OS cache), but FULL also keeps acknowledged frames through a power cut
    or kernel crash, which is what "an acknowledged ingest is never lost" promises.
    """
    connection = sqlite3.connect(
        db_path, timeout=30.0, isolation_level=None, check_same_thread=False
    )
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    return connection


def migrate(connection: sqlite3.Connection) -> None:
    """Create the schema on a new database and bring an older one up to SCHEMA_VERSION;
    refuse one written by a newer version."""
    found = _stored_version(connection)
    if found is not None and found > SCHEMA_VERSION:
        raise RuntimeError(
            f"gallery database has schema version {found}; this code knows up to {SCHEMA_VERSION}"
        )
    connection.executescript(
        "BEGIN IMMEDIATE;" + SCHEMA + "INSERT INTO schema_version SELECT 1"
        " WHERE NOT EXISTS (SELECT 1 FROM schema_version);"
        "COMMIT;"
    )
    connection.execute("BEGIN IMMEDIATE")
    try:
        (version,) = connection.execute("SELECT MAX(version) FROM schema_version").fetchone()
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[step]:
                connection.execute(statement)
            connection.execute("UPDATE schema_version SET version = ?", (step,))
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _stored_version(connection: sqlite3.Connection) -> int | None:
    exists = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if not exists:
        return None
    row = connection.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return row[0]
