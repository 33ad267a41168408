"""The stored frames' image files: written by the store before its commit, read and removed
through it, and swept when it opens after a crash between the two."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gallery import FrameExists, FrameImage, FrameInput, GalleryStore

DIM = 8
REPO_ROOT = Path(__file__).resolve().parents[2]


def frame(frame_id: str, data: bytes, suffix: str = ".jpg") -> FrameInput:
    vector = np.ones(DIM, np.float32)
    return FrameInput(
        640, 480, [((1, 2, 30, 80), 0.9, vector)], frame_id, image=FrameImage(data, suffix)
    )


def test_images_are_stored_read_and_removed_with_their_frames(tmp_path: Path) -> None:
    with GalleryStore(tmp_path, "m", DIM) as store:
        (record,) = store.add_frames([frame("a", b"first image")])
        assert record.image_path == "frames/a.jpg"
        assert (tmp_path / "frames" / "a.jpg").read_bytes() == b"first image"
        assert store.read_image(record) == b"first image"
        # an id already stored is refused before any file is written: the image stays
        with pytest.raises(FrameExists):
            store.add_frames([frame("b", b"b"), frame("a", b"second image", ".png")])
        assert store.read_image(record) == b"first image"
        assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["a.jpg"]
        assert store.stored_frame_ids(["a", "b", "c"]) == {"a"}
        assert store.delete_frame("a")
        assert not (tmp_path / "frames" / "a.jpg").exists()
        assert store.read_image(record) is None
    with pytest.raises(ValueError, match="suffix"):
        FrameImage(b"x", "/../x")


def test_a_failed_commit_leaves_no_file(tmp_path: Path) -> None:
    with GalleryStore(tmp_path, "m", DIM) as store:
        broken = FrameInput(
            8, 8, [((0, 0, 1, 1), 0.5, np.zeros(DIM))], "z", image=FrameImage(b"z", ".png")
        )
        with pytest.raises(ValueError):  # a zero embedding: refused while preparing
            store.add_frames([frame("y", b"y"), broken])
        assert list((tmp_path / "frames").iterdir()) == []


# A writer that stores one frame, then dies (SIGKILL-like, no cleanup) after writing the next
# frame's image file and before its commit.
CRASH_BETWEEN_FILE_AND_COMMIT = """
import os, sys
import numpy as np
from gallery import FrameImage, FrameInput, GalleryStore
store = GalleryStore(sys.argv[1], "m", {dim})
vector = np.ones({dim}, np.float32)
store.add_frames([FrameInput(64, 48, [((1, 2, 3, 4), 0.9, vector)], "kept",
                              image=FrameImage(b"kept image", ".jpg"))])
def die(*args, **kwargs):
    os._exit(9)
store._insert = die
store.add_frames([FrameInput(64, 48, [((1, 2, 3, 4), 0.9, vector)], "lost",
                              image=FrameImage(b"never acknowledged", ".png"))])
"""


def test_a_crash_between_image_and_commit_leaves_no_orphan_and_loses_nothing(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CRASH_BETWEEN_FILE_AND_COMMIT.format(dim=DIM), str(tmp_path)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 9, result.stderr
    assert (tmp_path / "frames" / "lost.png").exists()  # the orphan the crash left
    (tmp_path / "frames" / ".half.jpg.tmp").write_bytes(b"half")  # a write cut short
    with GalleryStore(tmp_path, "m", DIM) as store:
        assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["kept.jpg"]
        kept = store.get_frame("kept")
        assert kept is not None and store.read_image(kept) == b"kept image"
        assert store.get_frame("lost") is None
        assert store.stats().frames == 1
