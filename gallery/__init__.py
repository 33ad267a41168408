"""The embedding store: SQLite as the source of truth, FAISS or Milvus as the derived index."""

from gallery.records import (
    FRAME_ID_PATTERN,
    DetectionInput,
    DetectionRecord,
    FrameExists,
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
from gallery.store import GalleryStore

__all__ = [
    "FRAME_ID_PATTERN",
    "DetectionInput",
    "DetectionRecord",
    "FrameExists",
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
