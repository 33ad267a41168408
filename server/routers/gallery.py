"""POST /gallery and /gallery/frames/{frame_id}: ingesting, reading and deleting frames."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import asdict, dataclass
from pathlib import PurePath
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile, status
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from gallery.records import FrameExists, FrameImage, FrameInput, FrameRecord
from inference.engine import Detections
from inference.imaging import MEDIA_TYPES, DecodedImage
from server.deps import Ready, ReadyDep
from server.forms import (
    check_camera,
    check_filename,
    check_frame_id,
    parse_timestamp,
    per_file,
    read_image,
    upload_name,
)
from server.problems import Problem, problem_responses
from server.schemas import DetectionOut, FrameOut, IngestOut, StatsOut

router = APIRouter(prefix="/gallery", tags=["gallery"])


# 400: a malformed multipart body; 413: too many files, a file, an image or the whole body
# too large (each its own kind).
INGEST_ERRORS = (400, 409, 413, 415, 422, 503, 507)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=IngestOut,
    responses=problem_responses(*INGEST_ERRORS),
)
async def add_frames(
    request: Request,
    ready: ReadyDep,
    files: Annotated[list[UploadFile], File(description="one or more frames (JPEG, PNG, ...)")],
    camera: Annotated[
        list[str] | None, Form(description="one for all files, or one per file")
    ] = None,
    timestamp: Annotated[
        list[str] | None,
        Form(description="Unix seconds or ISO 8601; one for all files, or one per file"),
    ] = None,
    frame_id: Annotated[
        list[str] | None, Form(description="one per file; default a generated id")
    ] = None,
) -> IngestOut:
    """Detect the people in each frame and store the frame, its boxes and their embeddings.

    Every file is checked before any is stored, and the frames are committed together, so
    an error stores nothing. They are committed (and their images written under the data
    dir) before the answer.
    """
    pending = await _check_uploads(ready, files, camera, timestamp, frame_id)
    # all frames at once into the batcher: they share model runs with each other and with
    # other requests' frames
    found = await asyncio.gather(*(ready.state.detect(frame.image) for frame in pending))
    frames = [frame.to_store(people) for frame, people in zip(pending, found, strict=True)]
    records = await run_in_threadpool(ready.store.add_frames, frames)
    return IngestOut(frames=[frame_out(request, record) for record in records])


@dataclass(frozen=True)
class PendingFrame:
    """A checked upload waiting for its detections: decoded once, at most at the model's
    input size, beside its original bytes."""

    frame_id: str
    image: DecodedImage
    camera: str | None
    timestamp: float | None
    filename: str | None  # the client's file name, kept with the frame

    def to_store(self, people: Detections) -> FrameInput:
        return FrameInput(
            width=self.image.width,
            height=self.image.height,
            detections=list(zip(people.boxes, people.scores, people.embeddings, strict=True)),
            frame_id=self.frame_id,
            camera=self.camera,
            timestamp=self.timestamp,
            filename=self.filename,
            image=FrameImage(self.image.data, self.image.suffix),
        )


async def _check_uploads(
    ready: Ready,
    files: list[UploadFile],
    cameras: list[str] | None,
    timestamps: list[str] | None,
    frame_ids: list[str] | None,
) -> list[PendingFrame]:
    count = len(files)
    ids = [
        check_frame_id(given) if given else _new_frame_id()
        for given in per_file(frame_ids, count, "frame_id", shared=False)
    ]
    if len(set(ids)) != len(ids):
        raise Problem(409, "frame-exists", "the same frame_id is given twice in one request")
    # Before any image is read or decoded, so a resumed bulk ingest costs only this lookup.
    stored = await run_in_threadpool(ready.store.stored_frame_ids, ids)
    if stored:
        raise FrameExists(min(stored))
    times = [
        None if text is None else parse_timestamp(text)
        for text in per_file(timestamps, count, "timestamp", shared=True)
    ]
    named = [check_camera(camera) for camera in per_file(cameras, count, "camera", shared=True)]
    pending = []
    for position, (upload, frame_id, camera, moment) in enumerate(
        zip(files, ids, named, times, strict=True)
    ):
        name = upload_name(upload, "files", position)
        filename = check_filename(upload.filename, name)
        image = await read_image(upload, name, ready.state, ready.engine.card.max_size)
        pending.append(PendingFrame(frame_id, image, camera or None, moment, filename))
    return pending


def _new_frame_id() -> str:
    return uuid.uuid4().hex


@router.get("/stats", response_model=StatsOut, responses=problem_responses(503))
async def gallery_stats(ready: ReadyDep) -> StatsOut:
    """Counts of stored frames and detections, how many are searched with this model (the
    rest wait to be re-embedded), and the index that serves them."""
    stats = await run_in_threadpool(ready.store.stats)
    pending = sum(counts["frames"] for counts in stats.other_models.values())
    return StatsOut(
        **asdict(stats)
        | {
            "frames": stats.frames + pending,
            "detections": stats.detections
            + sum(counts["detections"] for counts in stats.other_models.values()),
            "searchable_frames": stats.frames,
            "reembed_pending": pending,
        }
    )


@router.get(
    "/frames/{frame_id}", response_model=FrameOut, responses=problem_responses(404, 422, 503)
)
async def get_frame(request: Request, ready: ReadyDep, frame_id: str) -> FrameOut:
    """A stored frame's metadata and detections."""
    return frame_out(request, await find_frame(ready, frame_id))


@router.get(
    "/frames/{frame_id}/image",
    response_class=Response,
    responses={
        200: {
            "content": {
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in MEDIA_TYPES.values()
            }
        },
        **problem_responses(404, 422, 503),
    },
)
async def get_frame_image(ready: ReadyDep, frame_id: str) -> Response:
    """The frame's image file, as uploaded."""
    record = await find_frame(ready, frame_id)
    data = await read_frame_image(ready, record)
    suffix = PurePath(record.image_path or "").suffix
    return Response(data, media_type=MEDIA_TYPES.get(suffix, "application/octet-stream"))


async def read_frame_image(ready: Ready, record: FrameRecord) -> bytes:
    """The stored image file of a frame, whole (a delete racing the read answers 404)."""
    data = await run_in_threadpool(ready.store.read_image, record)
    if data is None:
        raise Problem(
            404, "image-missing", f"the image file of frame {record.frame_id!r} is missing"
        )
    return data


@router.delete(
    "/frames/{frame_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(404, 422, 503, 507),
)
async def delete_frame(ready: ReadyDep, frame_id: str) -> None:
    """Delete a frame: its detections leave the search index and its image is removed."""
    check_frame_id(frame_id)
    if not await run_in_threadpool(ready.store.delete_frame, frame_id):
        raise Problem(404, "unknown-frame", f"no frame {frame_id!r}")


async def find_frame(ready: Ready, frame_id: str) -> FrameRecord:
    check_frame_id(frame_id)
    record = await run_in_threadpool(ready.store.get_frame, frame_id)
    if record is None:
        raise Problem(404, "unknown-frame", f"no frame {frame_id!r}")
    return record


def _image_url(request: Request, frame_id: str) -> str:
    """Relative to the service (never built from the client's Host header), or under
    PS_PUBLIC_URL when that is set."""
    path = request.scope.get("root_path", "") + str(
        request.app.url_path_for("get_frame_image", frame_id=frame_id)
    )
    public = request.app.state.service.settings.public_url
    return f"{public}{path}" if public else path


def frame_out(request: Request, record: FrameRecord) -> FrameOut:
    return FrameOut(
        frame_id=record.frame_id,
        filename=record.filename,
        camera=record.camera,
        timestamp=record.timestamp,
        width=record.width,
        height=record.height,
        model_id=record.model_id,
        searchable=record.model_id == request.app.state.service.store.model_id,
        created_at=record.created_at,
        image_url=_image_url(request, record.frame_id),
        detections=[DetectionOut(id=d.id, box=d.box, score=d.score) for d in record.detections],
    )
