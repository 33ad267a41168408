"""Reading multipart form values: uploads, boxes, timestamps, per-file fields."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from gallery.records import FRAME_ID_PATTERN, camera_problem
from inference.imaging import DecodedImage, decode_image, image_size
from server.problems import Problem
from server.state import ServiceState


async def read_image(
    upload: UploadFile, name: str, state: ServiceState, fit: tuple[int, int]
) -> DecodedImage:
    """Read one uploaded file (at most PS_MAX_UPLOAD_MB) and decode it off the event loop,
    shrunk to `fit` (the model's max_size), within the service's pixel budget."""
    max_bytes, max_pixels = state.settings.max_upload_bytes, state.settings.max_pixels
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise Problem(
            413, "file-too-large", f"{name}: file is over {max_bytes} bytes (PS_MAX_UPLOAD_MB)"
        )
    width, height = await run_in_threadpool(image_size, data, name, max_pixels)
    async with state.decode_budget.hold(width * height):
        return await state.decode(partial(decode_image, data, name, max_pixels, fit))


def upload_name(upload: UploadFile, field: str, position: int | None = None) -> str:
    """How errors name an upload: the form field, its position, and the client's file name."""
    where = field if position is None else f"{field}[{position}]"
    return f"{where} ({upload.filename})" if upload.filename else where


@dataclass(frozen=True)
class AskedBox:
    """A box given with a query image, inside that image."""

    box: tuple[float, float, float, float]
    clipped: bool  # the box as given reached outside the image


def parse_box(text: str, width: int, height: int) -> AskedBox:
    """'x1,y1,x2,y2' with x1 < x2 and y1 < y2, clipped to the width x height image (annotated
    boxes often start a pixel or two outside their frame); a box with no part inside it is
    refused."""
    parts = text.split(",")
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise Problem(422, "invalid-box", f"box must be four numbers x1,y1,x2,y2, got {text!r}")
    x1, y1, x2, y2 = values
    if not (x1 < x2 and y1 < y2):
        raise Problem(422, "invalid-box", f"box needs x1 < x2 and y1 < y2, got {text!r}")
    clipped = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
    if not (clipped[0] < clipped[2] and clipped[1] < clipped[3]):
        raise Problem(
            422, "box-outside-image", f"box {text!r} has no part inside the {width}x{height} image"
        )
    return AskedBox(clipped, clipped != values)


# What a JavaScript Date holds (+/-8.64e15 ms, years -271821 to 275760): the page shows every
# stored time, and clients in other languages hold at least as much.
MAX_TIMESTAMP = 8.64e12


def parse_timestamp(text: str, field: str = "timestamp") -> float:
    """Seconds since the Unix epoch, given as a number or an ISO 8601 date-time (UTC if naive),
    within +/-MAX_TIMESTAMP."""
    try:
        value = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            raise Problem(
                422,
                "invalid-number",
                f"{field} must be Unix seconds or an ISO 8601 date-time, got {text!r}",
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        value = moment.timestamp()
    if not math.isfinite(value):
        raise Problem(422, "invalid-number", f"{field} must be finite, got {text!r}")
    if abs(value) > MAX_TIMESTAMP:
        raise Problem(
            422,
            "timestamp-out-of-range",
            f"{field} must be within +/-{MAX_TIMESTAMP:.4g} seconds of 1970-01-01 (what a "
            f"JavaScript Date holds: years -271821 to 275760), got {text!r}",
        )
    return value


def parse_time_range(
    start: str | None, end: str | None
) -> tuple[float | None, float | None] | None:
    """A (start, end) filter from two optional timestamps; None when neither is given. An empty
    value is no bound, as an HTML form sends a field left empty."""
    start, end = start or None, end or None
    if start is None and end is None:
        return None
    low = None if start is None else parse_timestamp(start, "start")
    high = None if end is None else parse_timestamp(end, "end")
    if low is not None and high is not None and low > high:
        raise Problem(422, "invalid-time-range", f"start {start!r} is after end {end!r}")
    return low, high


def check_frame_id(frame_id: str) -> str:
    """Frame ids name files and URLs: a path-free alphabet only."""
    if not FRAME_ID_PATTERN.fullmatch(frame_id):
        raise Problem(
            422,
            "invalid-frame-id",
            f"frame id {frame_id!r} must match {FRAME_ID_PATTERN.pattern} (no paths)",
        )
    return frame_id


def check_camera(camera: str | None) -> str | None:
    """A camera name by the gallery's rule (gallery.records.camera_problem); empty means none."""
    if not camera:
        return None
    if (problem := camera_problem(camera)) is not None:
        shown = f"{camera[:40]!r}{'...' if len(camera) > 40 else ''}"
        raise Problem(422, "invalid-camera", f"camera {shown}: {problem}")
    return camera


MAX_FILENAME_LENGTH = 255


def check_filename(filename: str | None, name: str) -> str | None:
    """The client's file name, kept with the frame: printable, at most 255 characters."""
    if not filename:
        return None
    if len(filename) > MAX_FILENAME_LENGTH or not filename.isprintable():
        raise Problem(
            422,
            "invalid-filename",
            f"{name}: a file name must be at most {MAX_FILENAME_LENGTH} printable characters",
        )
    return filename


def per_file(values: list[str] | None, count: int, field: str, shared: bool) -> list[str | None]:
    """Spread a repeated form field over `count` files: none, one per file, or (if `shared`
    allows) one value for all of them."""
    if not values:
        return [None] * count
    if len(values) == count:
        return [*values]
    if shared and len(values) == 1:
        return [values[0]] * count
    allowed = "one value, or one per file" if shared else "one per file"
    raise Problem(
        422, "field-count", f"{field}: got {len(values)} values for {count} files ({allowed})"
    )
