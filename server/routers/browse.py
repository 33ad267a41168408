"""GET /gallery/frames and /gallery/detections/{id}/crop: what is stored, page by page."""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import math
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi import Path as FastApiPath
from fastapi.responses import Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from gallery.records import DetectionRecord, FramePosition, StoredDetection
from inference.imaging import ImageRejected, decode_image, image_size
from server.deps import Ready, ReadyDep
from server.forms import check_camera, parse_time_range
from server.problems import Problem, problem_responses
from server.routers.gallery import find_frame, frame_out, read_frame_image
from server.schemas import FramePageOut

log = logging.getLogger(__name__)
router = APIRouter(prefix="/gallery", tags=["gallery"])
# Detection ids are SQLite integers (and FAISS ids): positive, at most 2**63 - 1.
MAX_DETECTION_ID = 2**63 - 1
DetectionId = Annotated[int, FastApiPath(ge=1, le=MAX_DETECTION_ID)]
MAX_PAGE = 200
CROP_MARGIN = 0.15  # of the box's width and height on each side: a little context


@router.get("/frames", response_model=FramePageOut, responses=problem_responses(422, 503))
async def list_frames(
    request: Request,
    ready: ReadyDep,
    camera: Annotated[str | None, Query(description="only frames from this camera")] = None,
    start: Annotated[
        str | None, Query(description="frames at or after this time (Unix seconds or ISO 8601)")
    ] = None,
    end: Annotated[str | None, Query(description="frames at or before this time")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 24,
    cursor: Annotated[
        str | None, Query(description="`next_cursor` of the previous page; absent: the newest")
    ] = None,
) -> FramePageOut:
    """Stored frames with their detections, newest first (by timestamp, else by ingest time).

    Keyset paging: follow `next_cursor` until it is null; frames stored meanwhile never shift
    a page. The time filter, as in /search, keeps only frames with a timestamp in range.
    """
    page = await run_in_threadpool(
        ready.store.list_frames,
        limit,
        check_camera(camera),
        parse_time_range(start, end),
        _decode_cursor(cursor) if cursor else None,
    )
    return FramePageOut(
        frames=[frame_out(request, record) for record in page.frames],
        next_cursor=None if page.next_after is None else _encode_cursor(page.next_after),
    )


def _encode_cursor(position: FramePosition) -> str:
    text = json.dumps([position[0], position[1]], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> FramePosition:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        moment, frame_id = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if isinstance(moment, bool) or not isinstance(moment, int | float):
            raise ValueError
        if not isinstance(frame_id, str) or not math.isfinite(moment):
            raise ValueError
        frame_id.encode("utf-8")  # a lone surrogate ("\ud800") is no text SQLite can hold
    except (ValueError, TypeError, OverflowError, UnicodeError, RecursionError, binascii.Error):
        raise Problem(
            422, "invalid-cursor", "cursor must be a next_cursor from /gallery/frames"
        ) from None
    return float(moment), frame_id


@router.get(
    "/detections/{detection_id}/crop",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **problem_responses(404, 422, 500, 503)},
)
async def detection_crop(ready: ReadyDep, detection_id: DetectionId) -> Response:
    """The detected person cut out of the stored frame with a little margin, as a JPEG."""
    stored = await find_detection(ready, detection_id)
    record = await find_frame(ready, stored.frame_id)
    data = await read_frame_image(ready, record)
    name, max_pixels = (
        f"the stored image of frame {stored.frame_id!r}",
        ready.state.settings.max_pixels,
    )
    try:
        # Decoded whole, so within the service's decode budget and on its decode threads.
        width, height = await run_in_threadpool(image_size, data, name, max_pixels)
        async with ready.state.decode_budget.hold(width * height):
            crop = await ready.state.decode(
                partial(_crop, data, name, stored.detection, max_pixels)
            )
    except ImageRejected as exc:
        # The service checked this image when it stored it: the file changed on disk since.
        log.error("%s (%s): %s", name, record.image_path, exc.detail)
        raise Problem(
            500, "stored-image-damaged", f"{name} is damaged on the server; see the server log"
        ) from exc
    return Response(crop, media_type="image/jpeg")


async def find_detection(ready: Ready, detection_id: int) -> StoredDetection:
    stored = await run_in_threadpool(ready.store.get_detection, detection_id)
    if stored is None:
        raise Problem(404, "unknown-detection", f"no detection {detection_id}")
    return stored


def _crop(data: bytes, name: str, detection: DetectionRecord, max_pixels: int) -> bytes:
    image = decode_image(data, name, max_pixels)
    height, width = image.height, image.width
    x1, y1, x2, y2 = detection.box
    dx, dy = (x2 - x1) * CROP_MARGIN, (y2 - y1) * CROP_MARGIN
    left = min(width - 1, max(0, math.floor(x1 - dx)))
    top = min(height - 1, max(0, math.floor(y1 - dy)))
    right = min(width, max(left + 1, math.ceil(x2 + dx)))
    bottom = min(height, max(top + 1, math.ceil(y2 + dy)))
    buffer = io.BytesIO()
    Image.fromarray(image.pixels[top:bottom, left:right]).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()
