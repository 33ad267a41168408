"""The embedding store: SQLite as the source of truth, FAISS or Milvus as the derived index.

``GalleryStore`` is imported on first use, so that the value types and rules of
``gallery.records`` (which the bulk ingest's HTTP client shares) need no FAISS.
"""

from typing import TYPE_CHECKING, Any

from gallery.records import (
    FRAME_ID_PATTERN,
    DetectionInput,
    DetectionRecord,
    FrameExists,
    FrameImage,
    FrameInput,
    FramePage,
    FrameRecord,
    GalleryError,
    GalleryStats,
    SearchHit,
    StorageFull,
    StoreClosed,
    StoredDetection,
    StoreLocked,
)

if TYPE_CHECKING:
    from gallery.store import GalleryStore


def __getattr__(name: str) -> Any:
    if name == "GalleryStore":
        from gallery.store import GalleryStore

        return GalleryStore
    raise AttributeError(f"module 'gallery' has no attribute {name!r}")


__all__ = [
    "FRAME_ID_PATTERN",
    "DetectionInput",
    "DetectionRecord",
    "FrameExists",
    "FrameImage",
    "FrameInput",
    "FramePage",
    "FrameRecord",
    "GalleryError",
    "GalleryStats",
    "GalleryStore",
    "SearchHit",
    "StorageFull",
    "StoreClosed",
    "StoreLocked",
    "StoredDetection",
]
