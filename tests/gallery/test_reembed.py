"""A model change: the frames another model embedded are re-embedded from their stored images,
by `python -m gallery.reembed` (service stopped) or by the service in the background; until then
stats, listing and search agree on what is searchable and say what to do."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from gallery import FrameImage, FrameInput, GalleryStore
from gallery.reembed import main as reembed_main
from gallery.reembed import reembed
from inference.engine import Engine
from server.testing import ServerProcess
from tests.conftest import DEMO_MODEL
from tests.server.helpers import assert_problem

OLD_MODEL = "sha256:0123456789abcdef"  # a model that is no longer served
DIM = 64  # the demo model's embedding size


def old_gallery(data_dir: Path, records: list, damaged: str | None = None) -> list[str]:
    """`records` stored as another model embedded them: one random box each; `damaged` names
    a frame whose stored image is then cut short."""
    rng = np.random.default_rng(3)
    frames = [
        FrameInput(
            960,
            540,
            [((10, 10, 50, 120), 0.9, rng.normal(size=DIM))],
            r.path.stem,
            camera=f"c{r.camera}",
            image=FrameImage(r.path.read_bytes(), ".jpg"),
        )  # fmt: skip
        for r in records
    ]
    with GalleryStore(data_dir, OLD_MODEL, DIM) as store:
        stored = store.add_frames(frames)
    if damaged is not None:
        path = data_dir / f"frames/{damaged}.jpg"
        path.write_bytes(path.read_bytes()[:300])
    return [record.frame_id for record in stored]


def test_the_command_reembeds_from_the_stored_images(demo_frames, tmp_path: Path) -> None:
    records = demo_frames[:5]
    ids = old_gallery(tmp_path, records, damaged=records[4].path.stem)
    engine = Engine(DEMO_MODEL, ["cpu"])
    with GalleryStore(tmp_path, engine.model.model_id, DIM) as store:
        assert [r.frame_id for r in store.frames_to_reembed(10)] == sorted(ids)
        summary = reembed(store, engine.detect_batch, engine.card.max_size, 10**8, batch=2)
        assert (summary.reembedded, summary.unreadable) == (4, [records[4].path.stem])
        assert [r.frame_id for r in store.frames_to_reembed(10)] == [records[4].path.stem]
        for record in records[:4]:
            frame = store.get_frame(record.path.stem)
            assert frame is not None and frame.model_id == engine.model.model_id
            expected = engine.detect(np.asarray(_rgb(record.path)))
            assert len(frame.detections) == len(expected.boxes)
            boxes = np.array([d.box for d in frame.detections]).reshape(-1, 4)
            np.testing.assert_allclose(boxes, expected.boxes, atol=1e-3)
        stats = store.stats()
        assert stats.frames == 4 and stats.index_size == stats.detections
        assert stats.other_models == {OLD_MODEL: {"frames": 1, "detections": 1}}
    # the command says so and exits 1 while a frame is unreadable; a rerun tries only it
    assert reembed_main(["--data-dir", str(tmp_path), "--model", str(DEMO_MODEL)]) == 1


def _rgb(path: Path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def test_the_service_reembeds_in_the_background(demo_frames, tmp_path: Path) -> None:
    ids = old_gallery(tmp_path / "data", demo_frames[:6])
    with ServerProcess(model=DEMO_MODEL, data_dir=tmp_path / "data") as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            deadline = time.monotonic() + 120
            while (stats := client.get("/gallery/stats").json())["reembed_pending"]:
                assert time.monotonic() < deadline, stats
                time.sleep(0.2)
            assert stats["frames"] == stats["searchable_frames"] == len(ids)
            listed = client.get("/gallery/frames", params={"limit": 50}).json()["frames"]
            assert len(listed) == stats["frames"] and all(f["searchable"] for f in listed)
            person = next(d for f in listed for d in f["detections"])
            found = client.post("/search", data={"detection_id": str(person["id"])})
            assert found.status_code == 200, found.text


def test_without_reembedding_the_three_agree_and_say_what_to_do(
    demo_frames, tmp_path: Path
) -> None:
    ids = old_gallery(tmp_path / "data", demo_frames[:3])
    with ServerProcess(model=DEMO_MODEL, data_dir=tmp_path / "data", reembed="off") as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            stats = client.get("/gallery/stats").json()
            assert (stats["frames"], stats["searchable_frames"]) == (len(ids), 0)
            assert stats["reembed_pending"] == len(ids)
            listed = client.get("/gallery/frames").json()["frames"]
            assert len(listed) == stats["frames"]
            assert not any(frame["searchable"] for frame in listed)
            stale = listed[0]["detections"][0]["id"]
            body = assert_problem(client.post("/search", data={"detection_id": str(stale)}), 409)
            assert "python -m gallery.reembed" in body["detail"]


@pytest.fixture(autouse=True)
def _quiet_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TQDM_DISABLE", "1")
