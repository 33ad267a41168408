"""SQL side of search: metadata filters and the rows behind FAISS hits."""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass

import numpy as np

from gallery.records import SearchHit

# CROSS JOIN fixes the join order: look up the few hit ids by primary key, then their frames.
# Left to itself SQLite would start from the camera index and walk a tenth of the gallery.
_HITS = """
SELECT d.id, d.frame_id, d.x1, d.y1, d.x2, d.y2, d.score, f.camera, f.timestamp, f.filename
FROM json_each(?) AS hit
CROSS JOIN detections d ON d.id = hit.value
CROSS JOIN frames f ON f.id = d.frame_id
WHERE 1
"""
_CANDIDATES = """
SELECT d.id FROM detections d JOIN frames f ON f.id = d.frame_id WHERE d.model_id = ?
"""


@dataclass(frozen=True)
class SearchFilter:
    """Metadata conditions a hit must meet; an empty filter keeps everything."""

    camera: str | None = None
    start: float | None = None
    end: float | None = None
    min_score: float | None = None

    @classmethod
    def build(
        cls,
        camera: str | None,
        time_range: tuple[float | None, float | None] | None,
        min_score: float | None,
    ) -> SearchFilter:
        start, end = _check_time_range(time_range)
        if min_score is not None and not math.isfinite(float(min_score)):
            raise ValueError("min_score must be finite")
        score = None if min_score is None else float(min_score)
        return cls(camera, start, end, score)

    @property
    def empty(self) -> bool:
        return self == SearchFilter()

    def sql(self) -> tuple[str, list]:
        """AND-clauses over aliases d (detections) and f (frames), with their parameters."""
        clauses, params = [], []
        for clause, value in (
            ("f.camera = ?", self.camera),
            ("f.timestamp >= ?", self.start),
            ("f.timestamp <= ?", self.end),
            ("d.score >= ?", self.min_score),
        ):
            if value is not None:
                clauses.append(f" AND {clause}")
                params.append(value)
        return "".join(clauses), params


def _check_time_range(
    time_range: tuple[float | None, float | None] | None,
) -> tuple[float | None, float | None]:
    if time_range is None:
        return None, None
    if len(time_range) != 2:
        raise ValueError("time_range is (start, end); either may be None")
    start, end = (None if t is None else float(t) for t in time_range)
    if any(t is not None and not math.isfinite(t) for t in (start, end)):
        raise ValueError("time_range bounds must be finite")
    if start is not None and end is not None and start > end:
        raise ValueError(f"time_range start {start} is after end {end}")
    return start, end


def lookup_hits(
    connection: sqlite3.Connection,
    ids: np.ndarray,
    similarities: np.ndarray,
    search_filter: SearchFilter,
) -> list[SearchHit]:
    """Hits for FAISS results that still exist and pass the filter, in the given order."""
    if len(ids) == 0:
        return []
    clauses, params = search_filter.sql()
    rows = connection.execute(_HITS + clauses, [json.dumps(ids.tolist()), *params]).fetchall()
    by_id = {row[0]: row for row in rows}
    hits = []
    for detection_id, similarity in zip(ids.tolist(), similarities.tolist(), strict=True):
        row = by_id.get(detection_id)
        if row is not None:
            box = (row[2], row[3], row[4], row[5])
            hits.append(SearchHit(row[0], row[1], box, similarity, *row[6:]))
    return hits


def candidate_ids(
    connection: sqlite3.Connection, model_id: str, search_filter: SearchFilter
) -> np.ndarray:
    """Ids of the model's detections that pass the filter."""
    clauses, params = search_filter.sql()
    rows = connection.execute(_CANDIDATES + clauses, [model_id, *params]).fetchall()
    return np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
