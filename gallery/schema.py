"""SQLite schema and connection settings: the source of truth of the gallery."""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA_VERSION = 1

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
    """Create the schema on a new database; refuse one written by a newer version."""
    found = _stored_version(connection)
    if found is not None and found > SCHEMA_VERSION:
        raise RuntimeError(
            f"gallery database has schema version {found}; this code knows up to {SCHEMA_VERSION}"
        )
    connection.executescript(
        "BEGIN IMMEDIATE;" + SCHEMA + f"INSERT INTO schema_version SELECT {SCHEMA_VERSION}"
        " WHERE NOT EXISTS (SELECT 1 FROM schema_version);"
        "COMMIT;"
    )


def _stored_version(connection: sqlite3.Connection) -> int | None:
    exists = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if not exists:
        return None
    row = connection.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return row[0]
