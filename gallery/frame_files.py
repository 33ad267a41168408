"""The stored frames' image files: the one place that writes, reads, removes and sweeps them.

A frame's image lives at ``frames/<frame id><suffix>`` under the data directory; its row holds
that relative path. The store writes the file before committing the row and removes it after
deleting the row, so a crash leaves at worst a file without a row, which ``sweep`` removes
when the store next opens (the data directory is locked, so no other writer is mid-way).
"""

from __future__ import annotations

import logging
from pathlib import Path

from inference.files import write_bytes_atomic

log = logging.getLogger(__name__)
FRAMES_DIR = "frames"


class FrameFiles:
    """Image files under ``data_dir/frames``, named by relative paths the store keeps."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.folder = self.data_dir / FRAMES_DIR
        self.folder.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def relative_path(frame_id: str, suffix: str) -> str:
        return f"{FRAMES_DIR}/{frame_id}{suffix}"

    def write(self, relative: str, data: bytes) -> None:
        """Whole or not at all (atomic rename), fsynced: durable before the row commits."""
        write_bytes_atomic(self.data_dir / relative, data)

    def read(self, relative: str) -> bytes | None:
        """The file's bytes, read once and whole; None if it is not there. A delete racing the
        read either comes before the open (None) or leaves the open file readable to its end."""
        try:
            with open(self.data_dir / relative, "rb") as handle:
                return handle.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def remove(self, relative: str) -> None:
        (self.data_dir / relative).unlink(missing_ok=True)

    def sweep(self, referenced: set[str]) -> int:
        """Remove what a crash left: half-written temporary files, and images whose row was
        never committed (or whose row was deleted before the file). Returns how many."""
        removed = 0
        for path in self.folder.iterdir():
            relative = f"{FRAMES_DIR}/{path.name}"
            if path.is_file() and relative not in referenced:
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.info("removed %d image files without a stored frame from %s", removed, self.folder)
        return removed
