"""What a bulk ingest reads: image folders and video files, turned into frames to store.

Every frame gets an id derived from where it comes from (the file's absolute path, and for a
video the frame's position in the stream), so a rerun over the same files names the same
frames and the gallery's "frame exists" answer tells what is already stored.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import av
from PIL import Image

from gallery.records import clean_camera_name
from inference.imaging import MEDIA_TYPES

# The formats the service decodes (inference.imaging), by file extension.
IMAGE_SUFFIXES = frozenset(MEDIA_TYPES)
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".mpg", ".mpeg", ".flv"}
)
# Video frames are stored as JPEG; the detector then sees the re-encoded frame, and at this
# quality small, distant people keep their detail.
FRAME_JPEG_QUALITY = 95
_SLUG_LENGTH = 48
# Two frames closer than this (seconds) to a sampling instant count as on it: pts x time_base
# is a float, and a sample every 0.25 s must not skip a frame stamped 0.2499999.
_TIME_EPSILON = 1e-6


@dataclass(frozen=True)
class Source:
    """One file to ingest: an image (one frame) or a video (frames sampled from it)."""

    path: Path  # absolute
    kind: Literal["image", "video"]
    camera: str | None

    @property
    def frame_id(self) -> str:
        """An image's frame id; a video's frames are `frame_id_prefix` + their index."""
        slug = re.sub(r"[^A-Za-z0-9._-]", "_", self.path.stem)[:_SLUG_LENGTH]
        if not slug[:1].isalnum():
            slug = f"x{slug}"
        digest = hashlib.blake2b(str(self.path).encode(), digest_size=6).hexdigest()
        return f"{slug}-{digest}"

    @property
    def frame_id_prefix(self) -> str:
        return f"{self.frame_id}-f"

    def video_frame_id(self, index: int) -> str:
        return f"{self.frame_id_prefix}{index:06d}"


@dataclass(frozen=True)
class SourceFrame:
    """A frame ready to send: its id, the encoded image and what the gallery records."""

    frame_id: str
    name: str  # how messages name it: the file, and for a video frame its time
    data: bytes  # the image file's bytes, or a JPEG of the video frame
    file_name: str  # the upload's: the image's own, or the frame id + ".jpg"
    camera: str | None
    timestamp: float | None


@dataclass(frozen=True)
class Unreadable:
    """A file (or the rest of a video) that could not be read; reported, never sent."""

    name: str
    detail: str


def find_sources(paths: Iterable[Path], camera: str | None = None) -> list[Source]:
    """The files to ingest, in a stable order: folders are walked recursively for images and
    videos (by extension); a file given by name is an image by its extension, else a video.

    The camera is `camera` when given, else an image's folder name or a video's file name.
    A file reached twice (named twice, or inside two given folders) is ingested once.
    """
    found: dict[Path, Source] = {}
    for given in paths:
        path = Path(given).resolve()
        if path.is_dir():
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not p.name.startswith(".")
                and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
            )
        elif path.is_file():
            files = [path]
        else:
            raise FileNotFoundError(f"{given}: no such file or folder")
        for file in files:
            kind: Literal["image", "video"] = (
                "image" if file.suffix.lower() in IMAGE_SUFFIXES else "video"
            )
            named = camera or (file.parent.name if kind == "image" else file.stem)
            found.setdefault(file, Source(file, kind, clean_camera_name(named)))
    return list(found.values())


def read_frames(
    source: Source, every: float, start: float | None = None
) -> Iterator[SourceFrame | Unreadable]:
    """The frames of one source: an image file as it is, or a video's sampled frames.

    A video that cannot be opened, or breaks off part way, ends with an `Unreadable`.
    """
    if source.kind == "image":
        try:
            data = source.path.read_bytes()
        except OSError as exc:
            yield Unreadable(str(source.path), f"cannot read the file ({exc})")
            return
        name = str(source.path)
        yield SourceFrame(source.frame_id, name, data, source.path.name, source.camera, None)
        return
    yield from video_frames(source, every, start)


def video_frames(
    source: Source, every: float, start: float | None = None
) -> Iterator[SourceFrame | Unreadable]:
    """One frame every `every` seconds of stream time: the first frame at or after each step.

    A frame's timestamp is its pts x time_base plus the video's start: `start` when given, else
    the container's `creation_time`, else none (timestamps are then seconds into the stream).
    """
    if every <= 0:
        raise ValueError(f"every must be positive, got {every}")
    seconds = None
    try:
        with av.open(str(source.path)) as container:
            if not container.streams.video:
                yield Unreadable(str(source.path), "the file has no video stream")
                return
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            origin = start if start is not None else creation_time(container.metadata)
            rate = float(stream.average_rate or 0) or None
            due: float | None = None
            for index, frame in enumerate(container.decode(stream)):
                seconds = frame.time if frame.time is not None else index / (rate or 1.0)
                if due is None:
                    due = seconds  # sampling steps count from the stream's first frame
                if seconds + _TIME_EPSILON < due:
                    continue
                while due <= seconds + _TIME_EPSILON:
                    due += every
                yield SourceFrame(
                    frame_id=source.video_frame_id(index),
                    name=f"{source.path} at {seconds:.3f} s",
                    data=encode_jpeg(frame.to_image()),
                    file_name=f"{source.video_frame_id(index)}.jpg",
                    camera=source.camera,
                    timestamp=(origin or 0.0) + seconds,
                )
    except (av.FFmpegError, OSError) as exc:
        where = "" if seconds is None else f" after {seconds:.3f} s"
        yield Unreadable(str(source.path), f"cannot decode the video{where} ({exc})")


def expected_frames(source: Source, every: float) -> int | None:
    """About how many frames `read_frames` yields (for progress); None if unknown."""
    if source.kind == "image":
        return 1
    try:
        with av.open(str(source.path)) as container:
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                return None
    except (av.FFmpegError, OSError, IndexError):
        return None
    return max(1, math.ceil(duration / every - _TIME_EPSILON))


def creation_time(metadata: dict[str, str]) -> float | None:
    """The container's `creation_time` tag (ISO 8601, UTC if no zone) as Unix seconds."""
    text = metadata.get("creation_time")
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def encode_jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=FRAME_JPEG_QUALITY)
    return buffer.getvalue()
