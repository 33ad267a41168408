"""Storing an ingested frame: its image file on disk, then its row and vectors in the store."""

from __future__ import annotations

from dataclasses import dataclass

from gallery.records import FrameExists, FrameRecord
from inference.engine import Detections
from inference.files import write_bytes_atomic
from server.imaging import DecodedImage
from server.problems import Problem
from server.state import ServiceState


@dataclass(frozen=True)
class PendingFrame:
    """A checked upload waiting for its detections and its commit.

    Only the file's bytes are kept between the check and the detection (decoded again then):
    a batch of large frames never sits decoded in memory all at once.
    """

    frame_id: str
    name: str  # how errors name the upload
    data: bytes
    suffix: str
    width: int
    height: int
    camera: str | None
    timestamp: float | None
    filename: str | None = None  # the client's file name, kept with the frame

    @classmethod
    def of(
        cls,
        frame_id: str,
        name: str,
        image: DecodedImage,
        camera: str | None,
        timestamp: float | None,
        filename: str | None = None,
    ) -> PendingFrame:
        return cls(
            frame_id,
            name,
            image.data,
            image.suffix,
            image.width,
            image.height,
            camera,
            timestamp,
            filename,
        )


def commit_frame(state: ServiceState, frame: PendingFrame, found: Detections) -> FrameRecord:
    """Write the image, then commit the frame (blocking; call from a worker thread).

    Under the service's write lock, so the existence check, the file and the commit agree.
    A crash between the file and the commit leaves only an orphan file, which the next
    upload under that id overwrites; the commit is what acknowledges the frame.
    """
    assert state.store is not None
    relative = f"{state.frames_dir.name}/{frame.frame_id}{frame.suffix}"
    with state.write_lock:
        if state.store.get_frame(frame.frame_id) is not None:
            raise Problem(409, "frame-exists", f"frame {frame.frame_id!r} already exists")
        path = state.settings.data_dir / relative
        write_bytes_atomic(path, frame.data)
        try:
            return state.store.add_frame(
                frame_id=frame.frame_id,
                camera=frame.camera,
                timestamp=frame.timestamp,
                width=frame.width,
                height=frame.height,
                image_path=relative,
                filename=frame.filename,
                detections=list(zip(found.boxes, found.scores, found.embeddings, strict=True)),
            )
        except FrameExists as exc:  # only if another process shares this data dir
            raise Problem(409, "frame-exists", str(exc)) from exc
        except BaseException:
            path.unlink(missing_ok=True)
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
