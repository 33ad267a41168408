"""Storing an ingested frame: its image file on disk, then its row and vectors in the store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gallery.records import FrameExists, FrameInput, FrameRecord
from inference.engine import Detections
from inference.files import write_bytes_atomic
from server.imaging import DecodedImage
from server.problems import Problem
from server.state import ServiceState


@dataclass(frozen=True)
class PendingFrame:
    """A checked upload waiting for its detections and its commit: decoded once, at the
    model's input size (server.imaging), beside its original bytes."""

    frame_id: str
    name: str  # how errors name the upload
    image: DecodedImage
    camera: str | None
    timestamp: float | None


def commit_frames(
    state: ServiceState, frames: list[PendingFrame], found: list[Detections]
) -> list[FrameRecord]:
    """Write the images, then commit every frame in one transaction: all or none (blocking;
    call from a worker thread).

    Under the service's write lock, so the existence check, the files and the commit agree:
    no image file of a stored frame is overwritten, and a batch refused with 409 leaves
    nothing behind. A crash between the files and the commit leaves only orphan files, which
    the next upload under those ids overwrites; the commit is what acknowledges the frames.
    """
    assert state.store is not None
    paths = [f"{state.frames_dir.name}/{frame.frame_id}{frame.image.suffix}" for frame in frames]
    with state.write_lock:
        for frame in frames:
            if state.store.get_frame(frame.frame_id) is not None:
                raise Problem(409, "frame-exists", f"frame {frame.frame_id!r} already exists")
        written: list[Path] = []
        try:
            for frame, relative in zip(frames, paths, strict=True):
                written.append(state.settings.data_dir / relative)
                write_bytes_atomic(written[-1], frame.image.data)
            return state.store.add_frames(
                [
                    FrameInput(
                        frame_id=frame.frame_id,
                        camera=frame.camera,
                        timestamp=frame.timestamp,
                        width=frame.image.width,
                        height=frame.image.height,
                        image_path=relative,
                        detections=list(
                            zip(boxes.boxes, boxes.scores, boxes.embeddings, strict=True)
                        ),
                    )
                    for frame, relative, boxes in zip(frames, paths, found, strict=True)
                ]
            )
        except BaseException as exc:
            for path in written:
                path.unlink(missing_ok=True)
            if isinstance(exc, FrameExists):  # only if another process shares this data dir
                raise Problem(409, "frame-exists", str(exc)) from exc
            raise


def delete_frame(state: ServiceState, frame_id: str) -> bool:
    """Delete the frame's row, vectors and image file; False if there was no such frame."""
    assert state.store is not None
    with state.write_lock:
        record = state.store.get_frame(frame_id)
        if record is None or not state.store.delete_frame(frame_id):
            return False
        if record.image_path:
            (state.settings.data_dir / record.image_path).unlink(missing_ok=True)
        return True
