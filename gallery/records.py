"""Value types of the gallery store: what goes in, what comes out, and its errors."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

# Frame ids end up in URLs and file names, so they are kept to a safe, path-free alphabet.
# Always use fullmatch: `$` alone also matches before a final newline.
FRAME_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

Box = tuple[float, float, float, float]

MAX_CAMERA_LENGTH = 128
# What a camera name may not hold: control characters (NUL, tabs, escapes, line feeds), line
# and paragraph separators, and lone surrogates. Format characters are allowed: real names
# need them (a zero-width joiner inside an emoji sequence, a zero-width non-joiner in Persian),
# as they need no-break spaces.
_REFUSED_IN_CAMERA = frozenset({"Cc", "Cs", "Zl", "Zp"})


class GalleryError(Exception):
    """Base class of the store's own errors."""


class FrameExists(GalleryError):
    """A frame with this id is already stored."""

    def __init__(self, frame_id: str) -> None:
        super().__init__(f"frame {frame_id!r} already exists")
        self.frame_id = frame_id


class StorageFull(GalleryError):
    """The disk (or quota) holding the gallery is full: nothing was stored or deleted."""


class StoreClosed(GalleryError):
    """The store was used after close()."""


class StoreLocked(GalleryError):
    """Another open GalleryStore (in this or another process) holds the data directory."""


@dataclass(frozen=True)
class DetectionInput:
    """One detected person to store: box in original pixels, detector score, embedding."""

    box: Box
    score: float
    embedding: np.ndarray


@dataclass(frozen=True)
class FrameImage:
    """A frame's image file as uploaded: its bytes and the extension of its format."""

    data: bytes
    suffix: str  # e.g. ".jpg"

    def __post_init__(self) -> None:
        if not (self.suffix.startswith(".") and self.suffix[1:].isalnum()):
            raise ValueError(f"an image suffix is a dot and letters, got {self.suffix!r}")


@dataclass(frozen=True)
class FrameInput:
    """One frame to store with its detections; frame_id None means a generated uuid. With
    `image`, the store writes the file under frames/ and records its path (`image_path`
    names a file the caller keeps, relative to the data directory)."""

    width: int
    height: int
    detections: Sequence[DetectionInput | tuple] = ()  # tuples: (box, score, embedding)
    frame_id: str | None = None
    camera: str | None = None
    timestamp: float | None = None
    image_path: str | None = None
    filename: str | None = None  # the uploaded file's name, for people to find it again
    image: FrameImage | None = None


@dataclass(frozen=True)
class DetectionRecord:
    """A stored detection; its id is also its FAISS id."""

    id: int
    box: Box
    score: float


@dataclass(frozen=True)
class FrameRecord:
    """A stored frame and its detections."""

    frame_id: str
    camera: str | None
    timestamp: float | None
    width: int
    height: int
    image_path: str | None
    model_id: str
    created_at: float
    filename: str | None = None
    detections: tuple[DetectionRecord, ...] = ()

    @property
    def time(self) -> float:
        """Where the frame sorts when browsing: its timestamp, else when it was stored."""
        return self.created_at if self.timestamp is None else self.timestamp


# (time, frame id) of a frame in the newest-first order of list_frames: where a page ends.
FramePosition = tuple[float, str]


@dataclass(frozen=True)
class FramePage:
    """Frames newest first; `next_after` is where the next page starts, None at the end."""

    frames: tuple[FrameRecord, ...]
    next_after: FramePosition | None


@dataclass(frozen=True)
class StoredDetection:
    """A stored detection with its frame and its (unit) embedding, to search from it."""

    frame_id: str
    detection: DetectionRecord
    model_id: str
    embedding: np.ndarray


@dataclass(frozen=True)
class SearchHit:
    """One search result, ranked by cosine similarity to the query."""

    detection_id: int
    frame_id: str
    box: Box
    similarity: float
    score: float
    camera: str | None
    timestamp: float | None
    filename: str | None = None


@dataclass(frozen=True)
class GalleryStats:
    """Counts of the store. Only `model_id`'s vectors are indexed and searched;
    rows embedded by other models are reported in `other_models` and never searched."""

    model_id: str
    dim: int
    frames: int
    detections: int
    index_type: str
    index_size: int
    index_origin: str
    other_models: dict[str, dict[str, int]] = field(default_factory=dict)


def coerce_detection(item: DetectionInput | Sequence, dim: int) -> DetectionInput:
    """Accept a DetectionInput or a (box, score, embedding) tuple; check it; L2-normalise."""
    if isinstance(item, DetectionInput):
        box, score, embedding = item.box, item.score, item.embedding
    else:
        if len(item) != 3:
            raise ValueError("a detection is (box, score, embedding)")
        box, score, embedding = item
    return DetectionInput(check_box(box), check_score(score), normalise(embedding, dim))


def check_box(box: Sequence[float]) -> Box:
    values = tuple(float(v) for v in box)
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"a box is four finite numbers x1, y1, x2, y2, got {box!r}")
    x1, y1, x2, y2 = values
    if x2 < x1 or y2 < y1:
        raise ValueError(f"box corners out of order: {values}")
    return values


def check_score(score: float) -> float:
    value = float(score)
    if not math.isfinite(value):
        raise ValueError(f"detection score must be finite, got {score!r}")
    return value


def normalise(vector: np.ndarray, dim: int) -> np.ndarray:
    """Return a float32 unit vector of length dim, or raise ValueError."""
    array = np.asarray(vector, dtype=np.float32)
    if array.shape != (dim,):
        raise ValueError(f"embedding must have shape ({dim},), got {array.shape}")
    norm = float(np.linalg.norm(array))
    if not math.isfinite(norm) or norm == 0.0:
        raise ValueError("embedding must be finite and non-zero")
    return array / norm


def camera_problem(name: str) -> str | None:
    """Why ``name`` cannot be a camera name (the service, the page and the bulk ingest share
    this rule), or None when it can."""
    if len(name) > MAX_CAMERA_LENGTH:
        return f"a camera name is at most {MAX_CAMERA_LENGTH} characters, got {len(name)}"
    refused = sorted({c for c in name if unicodedata.category(c) in _REFUSED_IN_CAMERA})
    if refused:
        shown = ", ".join(f"U+{ord(c):04X}" for c in refused[:5])
        return f"a camera name cannot hold control characters or line breaks ({shown})"
    return None


def clean_camera_name(text: str) -> str | None:
    """``text`` made into a camera name (e.g. a folder's): refused characters become "_", the
    rest is cut to the length limit; None if nothing is left."""
    kept = "".join("_" if unicodedata.category(c) in _REFUSED_IN_CAMERA else c for c in text)
    return kept[:MAX_CAMERA_LENGTH] or None


def check_frame(frame: FrameInput) -> None:
    """Validate frame-level fields (detections are checked separately)."""
    if frame.frame_id is not None and not FRAME_ID_PATTERN.fullmatch(frame.frame_id):
        raise ValueError(
            f"frame id {frame.frame_id!r} must match {FRAME_ID_PATTERN.pattern} (no paths)"
        )
    if frame.camera is not None:
        if not isinstance(frame.camera, str):
            raise ValueError(f"camera must be a string, got {frame.camera!r}")
        if (problem := camera_problem(frame.camera)) is not None:
            raise ValueError(problem)
    if int(frame.width) <= 0 or int(frame.height) <= 0:
        raise ValueError(f"frame size must be positive, got {frame.width}x{frame.height}")
    if frame.timestamp is not None and not math.isfinite(float(frame.timestamp)):
        raise ValueError("timestamp must be finite")
    if frame.image_path is not None:
        if frame.image is not None:
            raise ValueError("give the image's bytes or its path, not both")
        check_relative_path(frame.image_path)
    if frame.filename is not None and not isinstance(frame.filename, str):
        raise ValueError(f"filename must be a string, got {frame.filename!r}")


def check_relative_path(path: str) -> None:
    """The store keeps only paths relative to the caller's image directory."""
    parts = PurePosixPath(path).parts
    if not path or path.startswith(("/", "\\")) or ".." in parts or ":" in path:
        raise ValueError(f"image path must be relative and inside the data dir, got {path!r}")
