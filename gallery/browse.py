"""SQL side of browsing: frames newest first, page by page, and single stored detections."""

from __future__ import annotations

import json
import sqlite3

import numpy as np

from gallery.query import SearchFilter
from gallery.records import (
    DetectionRecord,
    FramePage,
    FramePosition,
    FrameRecord,
    StoredDetection,
)

# The frame's time as list_frames orders by it; the same expression as the frames_newest
# indexes (gallery.schema), so SQLite walks an index instead of sorting.
_TIME = "COALESCE(f.timestamp, f.created_at)"
_FRAMES = (
    "SELECT f.id, f.camera, f.timestamp, f.width, f.height, f.image_path, f.model_id,"
    " f.created_at, f.filename FROM frames f WHERE 1"
)
_DETECTIONS = (
    "SELECT frame_id, id, x1, y1, x2, y2, score FROM detections"
    " WHERE frame_id IN (SELECT value FROM json_each(?)) ORDER BY id"
)
_DETECTION = (
    "SELECT frame_id, x1, y1, x2, y2, score, model_id, embedding FROM detections WHERE id = ?"
)


def list_frames(
    connection: sqlite3.Connection,
    search_filter: SearchFilter,
    limit: int,
    after: FramePosition | None,
) -> FramePage:
    """Up to `limit` frames passing the filter, newest first (ties by frame id, descending),
    starting after `after`. Keyset paging: a page is stable while frames are added."""
    clauses, params = search_filter.sql()
    sql = _FRAMES + clauses
    if after is not None:
        sql += f" AND ({_TIME}, f.id) < (?, ?)"
        params += [float(after[0]), str(after[1])]
    sql += f" ORDER BY {_TIME} DESC, f.id DESC LIMIT ?"
    rows = connection.execute(sql, [*params, int(limit) + 1]).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    detections: dict[str, list[DetectionRecord]] = {row[0]: [] for row in rows}
    for d in connection.execute(_DETECTIONS, (json.dumps(list(detections)),)):
        detections[d[0]].append(DetectionRecord(d[1], (d[2], d[3], d[4], d[5]), d[6]))
    frames = tuple(
        FrameRecord(*row, detections=tuple(detections[row[0]]))  # type: ignore[misc]  # row ends before detections
        for row in rows
    )
    last = frames[-1] if frames else None
    return FramePage(frames, (last.time, last.frame_id) if more and last else None)


def stored_detection(connection: sqlite3.Connection, detection_id: int) -> StoredDetection | None:
    """The detection with its frame id, the model that embedded it and its embedding."""
    row = connection.execute(_DETECTION, (int(detection_id),)).fetchone()
    if row is None:
        return None
    frame_id, x1, y1, x2, y2, score, model_id, blob = row
    embedding = np.frombuffer(blob, dtype=np.float32).copy()
    record = DetectionRecord(int(detection_id), (x1, y1, x2, y2), score)
    return StoredDetection(frame_id, record, model_id, embedding)
