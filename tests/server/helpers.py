"""What the HTTP tests share: synthetic frames as a user sends them, request helpers, and the
problem+json check."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

PROBLEM = "application/problem+json"
# AlignPS's search threshold; the service is started with it (the demo card says 0.15), so
# the tests see the setting applied.
MIN_DETECTION_SCORE = 0.2


@dataclass(frozen=True)
class Frame:
    frame_id: str
    path: Path
    camera: str
    boxes: np.ndarray
    pids: np.ndarray


def synthetic_frames(records: list) -> list[Frame]:
    """Synthetic frames (training.data.ImageRecord) as a user sends them, with their people."""
    return [Frame(Path(r.name).stem, r.path, f"c{r.camera}", r.boxes, r.pids) for r in records]


def encode(image: Image.Image | np.ndarray, fmt: str = "JPEG") -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def person_crop(frame: Frame, index: int, margin: float = 0.1) -> bytes:
    """A query as a user sends it: the person's box with a little context, as a JPEG."""
    x1, y1, x2, y2 = frame.boxes[index]
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    with Image.open(frame.path) as image:
        box = (
            max(0, x1 - dx),
            max(0, y1 - dy),
            min(image.width, x2 + dx),
            min(image.height, y2 + dy),
        )
        return encode(image.convert("RGB").crop(tuple(round(v) for v in box)))


def labelled_person(frames: list[Frame]) -> tuple[Frame, int]:
    """The largest labelled person, so the crop is a fair query."""
    candidates = [
        (float(np.prod(f.boxes[i, 2:] - f.boxes[i, :2])), n, i)
        for n, f in enumerate(frames)
        for i in range(len(f.pids))
        if f.pids[i] >= 0
    ]
    _, frame_index, person = max(candidates)
    return frames[frame_index], person


def iou(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
    return float(inter / union)


def ingest(client: httpx.Client, frames: list[Frame], **fields) -> httpx.Response:
    files = [("files", (f.path.name, f.path.read_bytes(), "image/jpeg")) for f in frames]
    data = {
        "frame_id": [f.frame_id for f in frames],
        "camera": [f.camera for f in frames],
        "timestamp": [str(1_700_000_000 + n) for n in range(len(frames))],
        **fields,
    }
    return client.post("/gallery", files=files, data=data)


def search(client: httpx.Client, query: bytes, **fields) -> httpx.Response:
    return client.post("/search", files={"query": ("query.jpg", query, "image/jpeg")}, data=fields)


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"]
    return body
