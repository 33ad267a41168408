"""The gallery outlives the process: a clean restart, and a SIGKILL in the middle of ingesting."""

from __future__ import annotations

import errno
import itertools
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.testing import ServerProcess
from tests.conftest import DEMO_MODEL
from tests.server.helpers import (
    MIN_DETECTION_SCORE,
    assert_problem,
    ingest,
    labelled_person,
    person_crop,
    search,
    synthetic_frames,
)


@pytest.fixture(scope="module")
def model_path() -> Path:
    return DEMO_MODEL


def start(model_path: Path, data_dir: Path, **settings: object) -> ServerProcess:
    return ServerProcess(
        log_path=data_dir.parent / f"{data_dir.name}.log",
        model=model_path,
        data_dir=data_dir,
        min_detection_score=MIN_DETECTION_SCORE,
        **settings,
    ).start()


def found_frames(client: httpx.Client, query: bytes) -> set[str]:
    response = search(client, query, top_k="1000")
    assert response.status_code == 200, response.text
    return {hit["frame_id"] for hit in response.json()["results"]}


@pytest.mark.parametrize("backend", ["faiss", "milvus"])
def test_restart_keeps_the_gallery(
    demo_frames, model_path: Path, tmp_path: Path, backend: str
) -> None:
    """Over real HTTP on each vector backend (Milvus: Milvus Lite, exact FLAT index)."""
    frames = synthetic_frames(demo_frames)[:4]
    frame, person = labelled_person(frames)
    query = person_crop(frame, person)
    vectors = {"vector_backend": backend, "milvus_index": "flat"}
    server = start(model_path, tmp_path / "data", **vectors)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert ingest(client, frames).status_code == 201
            before = client.get("/gallery/stats").json()
            assert before["index_type"] == ("flat" if backend == "faiss" else "milvus-flat")
            results_before = search(client, query, top_k="1000").json()["results"]
    finally:
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why.
        assert server.stop() in (0, -signal.SIGTERM)
    server = start(model_path, tmp_path / "data", **vectors)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            after = client.get("/gallery/stats").json()
            assert {k: after[k] for k in ("frames", "detections", "index_size")} == {
                k: before[k] for k in ("frames", "detections", "index_size")
            }
            assert after["index_origin"] == "loaded"  # saved at shutdown, not rebuilt
            results_after = search(client, query, top_k="1000").json()["results"]
            assert [(h["frame_id"], h["detection_id"]) for h in results_after] == [
                (h["frame_id"], h["detection_id"]) for h in results_before
            ]
            image = client.get(f"/gallery/frames/{frames[0].frame_id}/image")
            assert image.content == frames[0].path.read_bytes()
    finally:
        server.stop()


KILLS = 5
BATCH = 2  # frames per request: a batch is stored whole or not at all


def test_sigkill_while_ingesting_loses_no_acknowledged_frame(
    demo_frames, model_path: Path, tmp_path: Path
) -> None:
    """Killed KILLS times while ingesting batches: after each restart every acknowledged frame
    is there, every batch is there whole or not at all, the index agrees with SQLite; at the
    end every acknowledged frame with a person is found by a search."""
    frames = synthetic_frames(demo_frames)
    data_dir = tmp_path / "data"
    acknowledged: list[str] = []
    sent: list[list[str]] = []  # every batch sent, acknowledged or not
    refused: list[str] = []
    numbers = itertools.count()

    def keep_ingesting(server: ServerProcess, enough: threading.Event, goal: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            while not refused:
                batch = [next(numbers) for _ in range(BATCH)]
                ids = [f"f{n:04d}" for n in batch]
                sent.append(ids)
                try:
                    response = ingest(
                        client, [frames[n % len(frames)] for n in batch], frame_id=ids
                    )
                except httpx.TransportError:
                    return  # the server died under this request: it was never acknowledged
                if response.status_code != 201:
                    refused.append(response.text)
                    return
                acknowledged.extend(ids)
                if len(acknowledged) >= goal:
                    enough.set()

    for kill in range(KILLS):
        server = start(model_path, data_dir)
        if kill:
            check_after_a_kill(server, acknowledged, sent)
        enough = threading.Event()
        writer = threading.Thread(
            target=keep_ingesting, args=(server, enough, len(acknowledged) + 2 * BATCH)
        )
        writer.start()
        try:
            assert enough.wait(120), f"the server did not acknowledge frames: {refused}"
        finally:
            server.kill()
            writer.join(60)
        assert not writer.is_alive() and not refused

    server = start(model_path, data_dir)
    try:
        check_after_a_kill(server, acknowledged, sent)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            # Every acknowledged frame with a detection comes back from a search.
            frame, person = labelled_person(frames)
            found = found_frames(client, person_crop(frame, person))
            with_people = [
                f for f in acknowledged if client.get(f"/gallery/frames/{f}").json()["detections"]
            ]
            assert with_people and set(with_people) <= found
    finally:
        server.stop()


def check_after_a_kill(server: ServerProcess, acknowledged: list[str], sent: list[list[str]]):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        stats = client.get("/gallery/stats").json()
        assert stats["frames"] >= len(acknowledged)
        assert stats["index_size"] == stats["detections"]  # the index agrees with SQLite
        for frame_id in acknowledged:
            assert client.get(f"/gallery/frames/{frame_id}").status_code == 200, frame_id
            assert client.get(f"/gallery/frames/{frame_id}/image").status_code == 200
        for batch in sent:
            stored = [client.get(f"/gallery/frames/{f}").status_code == 200 for f in batch]
            assert all(stored) or not any(stored), (batch, stored)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MiB file system (tmpfs) that the test can fill."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path, name: str) -> None:
    """Write into `disk` until it has no byte left."""
    with open(disk / name, "ab", buffering=0) as filler:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    filler.write(b"\0" * size)
            except OSError as error:
                assert error.errno == errno.ENOSPC


def test_a_full_disk(demo_frames, model_path: Path, small_disk: Path) -> None:
    """A full disk answers 507 and stores nothing; the service restarts and serves on it
    (the index is rebuilt in memory, not saved); it stores again once there is room."""
    frames = synthetic_frames(demo_frames)[:5]
    data_dir = small_disk / "data"
    server = start(model_path, data_dir)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert ingest(client, frames[:4]).status_code == 201
            fill(small_disk, "filler-1")
            body = assert_problem(ingest(client, frames[4:]), 507)
            assert body["type"].endswith(":insufficient-storage")
            assert_problem(client.get(f"/gallery/frames/{frames[4].frame_id}"), 404)
            deleted = client.delete(f"/gallery/frames/{frames[0].frame_id}")
            assert deleted.status_code in (204, 507), deleted.text
            if deleted.status_code == 507:
                assert client.get(f"/gallery/frames/{frames[0].frame_id}").status_code == 200
            assert not list((data_dir / "frames").glob(".*.tmp"))
            kept = client.get("/gallery/stats").json()["frames"]
    finally:
        server.stop()
    # Start-up must not need to write: no saved index to load, and no room to save one.
    for derived in ("index.faiss", "index.json"):
        (data_dir / derived).unlink(missing_ok=True)
    (data_dir / "frames" / ".half-written.jpg.tmp").write_bytes(b"\xff\xd8")
    fill(small_disk, "filler-2")
    server = start(model_path, data_dir)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            stats = client.get("/gallery/stats").json()
            assert stats["frames"] == kept and stats["index_size"] == stats["detections"] > 0
            assert stats["index_origin"].startswith("rebuilt")
            frame, person = labelled_person(frames[:4])
            assert found_frames(client, person_crop(frame, person))
            assert not list((data_dir / "frames").glob(".*.tmp"))  # removed at start
            for filler in ("filler-1", "filler-2"):
                (small_disk / filler).unlink()
            assert ingest(client, frames[4:]).status_code == 201
    finally:
        server.stop()
