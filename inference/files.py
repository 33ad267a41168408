"""File helpers shared by training, the gallery and the service: atomic writes and hashing."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_path(path: Path) -> Path:
    """Where ``atomic_write`` stages ``path`` (a hidden file beside it)."""
    return path.with_name(f".{path.name}.tmp")


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends, move it over ``path``.

    The temporary file is fsynced before the rename and the directory after it, so a crash at
    any moment leaves either the old file or the complete new one, never half of either. If the
    block raises, the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        yield temporary
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """``atomic_write`` for data already in memory."""
    with atomic_write(path) as temporary:
        temporary.write_bytes(data)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks (model files and indexes can be large)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_directory(directory: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync there
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
