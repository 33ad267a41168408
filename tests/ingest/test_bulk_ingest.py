"""Bulk ingest (`python -m ingest`): image folders and videos into a real service on
127.0.0.1, interrupted and rerun, and the same pipeline on a local Ray instance.

The videos are encoded here with PyAV from synthetic frames of the bundled demo model's kind
(`demo_frames`; the service runs that model, no torch), two video frames per synthetic frame,
so sampling every 0.5 s of a 4 fps video picks each synthetic frame once and a person crop
from one of them finds its video frame.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from PIL import Image

from ingest.client import Summary, Uploader
from ingest.sources import Source, find_sources, read_frames
from server.testing import REPOSITORY, ServerProcess
from tests.conftest import DEMO_MODEL
from tests.server.helpers import (
    MIN_DETECTION_SCORE,
    Frame,
    iou,
    labelled_person,
    person_crop,
    search,
    synthetic_frames,
)

FPS = 4
EVERY = 0.5  # seconds: every other video frame, i.e. each synthetic frame once
CREATED = "2026-01-02T03:04:05.000000Z"
CREATED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
MAX_FILES = 4


def write_video(path: Path, images: Sequence[np.ndarray], created: str | None = None) -> Path:
    """H.264 at FPS frames per second, nearly lossless (the detector must still see people)."""
    height, width = images[0].shape[:2]
    with av.open(str(path), "w") as container:
        if created:
            container.metadata["creation_time"] = created
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "12"}
        for image in images:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def rgb(frame: Frame) -> np.ndarray:
    with Image.open(frame.path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def frames(demo_frames) -> list[Frame]:
    return synthetic_frames(demo_frames)


@pytest.fixture(scope="module")
def video(frames: list[Frame], tmp_path_factory) -> Path:
    """cam-west.mp4: each training frame for 0.5 s, with a creation time."""
    images = [rgb(frame) for frame in frames for _ in range(FPS // 2)]
    return write_video(tmp_path_factory.mktemp("videos") / "cam-west.mp4", images, CREATED)


def sample_ids(video: Path, count: int) -> list[str]:
    """The ids of the sampled frames: the synthetic frame j is video frame 2j."""
    source = Source(video.resolve(), "video", video.stem)
    return [source.video_frame_id(FPS // 2 * j) for j in range(count)]


def start_server(model_path: Path, data_dir: Path, **settings: object) -> ServerProcess:
    return ServerProcess(
        log_path=data_dir.parent / f"{data_dir.name}.log",
        model=model_path,
        data_dir=data_dir,
        min_detection_score=MIN_DETECTION_SCORE,
        **settings,
    )


def assert_finds(client: httpx.Client, frame: Frame, person: int, frame_id: str) -> None:
    """A crop of the person finds the video frame that shows them, near the top, on them."""
    response = search(client, person_crop(frame, person), top_k="5")
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    ranked = [hit["frame_id"] for hit in results]
    assert frame_id in ranked[:3], ranked
    in_frame = [hit for hit in results if hit["frame_id"] == frame_id]
    assert max(iou(hit["box"], frame.boxes[person]) for hit in in_frame) >= 0.5


def test_sampling_times_and_ids(video: Path, frames: list[Frame]) -> None:
    (source,) = find_sources([video])
    sampled = list(read_frames(source, EVERY))
    assert [f.frame_id for f in sampled] == sample_ids(video, len(frames))
    assert [f.timestamp for f in sampled] == [CREATED_AT + EVERY * j for j in range(len(frames))]
    assert {f.camera for f in sampled} == {"cam-west"}
    # --start overrides the container's creation time; ids do not depend on it
    shifted = list(read_frames(source, 1.0, start=100.0))
    assert [f.timestamp for f in shifted] == [100.0 + j for j in range(len(frames) // 2)]
    assert [f.frame_id for f in shifted] == sample_ids(video, len(frames))[::2]


def test_video_through_a_service_that_starts_late(
    video: Path, frames: list[Frame], tmp_path: Path
) -> None:
    """The README's command: its first requests meet a closed port (then 503 while the model
    loads) and are retried; every sampled frame is stored, timed and searchable; a rerun
    stores nothing twice; a wrong API key stops the run."""
    server = start_server(DEMO_MODEL, tmp_path / "data", api_key="secret")
    command = [sys.executable, "-m", "ingest", str(video), "--url", server.url]
    command += ["--every", str(EVERY), "--batch", "3", "--api-key"]
    running = subprocess.Popen(
        [*command, "secret"],
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with server:  # __enter__ starts it: the command began first, against a closed port
        out, err = running.communicate(timeout=300)
        assert running.returncode == 0, out + err
        assert "retrying" in err
        assert f"ingested {len(frames)} frames" in out and "skipped 0" in out, out
        ids = sample_ids(video, len(frames))
        headers = {"X-API-Key": "secret"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
            assert client.get("/gallery/stats").json()["frames"] == len(frames)
            for j, frame_id in enumerate(ids):
                stored = client.get(f"/gallery/frames/{frame_id}").json()
                assert stored["camera"] == "cam-west"
                assert stored["timestamp"] == pytest.approx(CREATED_AT + EVERY * j)
                assert (stored["width"], stored["height"]) == rgb(frames[j]).shape[1::-1]
            frame, person = labelled_person(frames)
            assert_finds(client, frame, person, ids[frames.index(frame)])

            again = subprocess.run(
                [*command, "secret"], cwd=REPOSITORY, capture_output=True, text=True
            )
            assert again.returncode == 0, again.stdout + again.stderr
            assert "ingested 0 frames" in again.stdout
            assert f"skipped {len(frames)} already stored" in again.stdout
            assert client.get("/gallery/stats").json()["frames"] == len(frames)

        wrong = subprocess.run([*command, "guess"], cwd=REPOSITORY, capture_output=True, text=True)
        assert wrong.returncode == 3 and "401" in wrong.stderr, wrong.stderr


@pytest.fixture(scope="module")
def archive(frames: list[Frame], tmp_path_factory) -> Path:
    """Every synthetic frame in a folder per camera, plus a broken JPEG and a text file."""
    root = tmp_path_factory.mktemp("archive")
    for path in sorted(frame.path for frame in frames):
        camera = root / f"c{path.name[1]}"
        camera.mkdir(exist_ok=True)
        shutil.copy(path, camera / path.name)
    (root / "c1" / "c1s1_broken.jpg").write_bytes(path.read_bytes()[:300])
    (root / "c1" / "notes.txt").write_text("not a frame")
    return root


class Interrupt:
    """Ctrl-C after `batches` batches: the point where a user stops a long run."""

    def __init__(self, batches: int) -> None:
        self.left = batches

    def __call__(self, summary: Summary) -> None:
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt


def test_folder_interrupted_then_rerun_stores_each_frame_once(
    archive: Path, frames: list[Frame], tmp_path: Path
) -> None:
    sources = find_sources([archive])
    images = [s for s in sources if s.path.name != "c1s1_broken.jpg"]
    assert len(images) == len(sources) - 1 == len(frames)
    assert {s.camera for s in sources} == {p.name for p in archive.iterdir()}

    def frames():
        return (f for s in sources for f in read_frames(s, EVERY))

    with start_server(DEMO_MODEL, tmp_path / "data", max_files=MAX_FILES) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            first = Uploader(client, batch_size=3)
            with pytest.raises(KeyboardInterrupt):
                first.send(frames(), on_batch=Interrupt(2))
            stored = client.get("/gallery/stats").json()["frames"]
            assert stored == first.summary.ingested >= 1

            # more per batch than the service takes (413 too-many-files): batches shrink
            second = Uploader(client, batch_size=2 * MAX_FILES).send(frames())
            assert second.ingested == len(images) - stored
            assert second.skipped == stored
            (refused,) = second.refused
            assert refused.name.endswith("c1s1_broken.jpg")
            assert (refused.status, refused.kind) == (422, "unreadable-image")
            assert "c1s1_broken.jpg" in refused.detail

            third = Uploader(client, batch_size=3).send(frames())
            assert (third.ingested, third.skipped, len(third.refused)) == (0, len(images), 1)
            assert client.get("/gallery/stats").json()["frames"] == len(images)
            for source in images:
                answer = client.get(f"/gallery/frames/{source.frame_id}")
                assert answer.status_code == 200
                assert answer.json()["camera"] == source.path.parent.name


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_pipeline_resumes_an_http_ingest_and_the_service_serves_it(
    local_ray: None, video: Path, frames: list[Frame], tmp_path: Path
) -> None:
    """Two videos and a broken one on 2 detector actors; the first batches of one video were
    stored through the service before, and the pipeline leaves them out (same frame ids)."""
    from ingest.ray_pipeline import ModelOptions, RayOptions, ingest_on_ray

    ramp = [np.full((120, 160, 3), 16 * k, np.uint8) for k in range(2 * FPS)]
    plain = write_video(tmp_path / "ramp.mkv", ramp)  # no creation time, nobody in it
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    sources = find_sources([video, plain, broken])
    data_dir = tmp_path / "data"
    with start_server(DEMO_MODEL, data_dir) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            before = Uploader(client, batch_size=3)
            with pytest.raises(KeyboardInterrupt):
                before.send(read_frames(sources[0], EVERY), on_batch=Interrupt(1))
    assert before.summary.ingested == 3

    model = ModelOptions(DEMO_MODEL, ("cpu",), MIN_DETECTION_SCORE)
    options = RayOptions(actors=2, actor_cpus=0.5, decode_cpus=0.5, batch_size=3)
    summary = ingest_on_ray(sources, data_dir, model, EVERY, options=options)
    expected = len(frames) + len(ramp) // 2
    assert (summary.ingested, summary.skipped) == (expected - 3, 3)
    (refused,) = summary.refused
    assert refused.name == str(broken) and "cannot decode the video" in refused.detail

    with start_server(DEMO_MODEL, data_dir) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            stats = client.get("/gallery/stats").json()
            assert stats["frames"] == expected
            assert stats["index_size"] == stats["detections"] >= len(frames)
            ids = sample_ids(video, len(frames))
            for j, frame_id in enumerate(ids):
                stored = client.get(f"/gallery/frames/{frame_id}").json()
                assert stored["timestamp"] == pytest.approx(CREATED_AT + EVERY * j)
                assert stored["camera"] == "cam-west"
                image = client.get(f"/gallery/frames/{frame_id}/image")
                assert image.headers["content-type"] == "image/jpeg"
            ramp_id = Source(plain.resolve(), "video", "ramp").video_frame_id(2)
            assert client.get(f"/gallery/frames/{ramp_id}").json()["timestamp"] == EVERY
            frame, person = labelled_person(frames)
            assert_finds(client, frame, person, ids[frames.index(frame)])
