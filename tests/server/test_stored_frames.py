"""The stored-frame path over HTTP: a rerun of already stored frames costs no detection, real
camera names are accepted, and a stored image damaged on disk is the server's fault."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.testing import ServerProcess
from tests.conftest import DEMO_MODEL
from tests.server.helpers import Frame, assert_problem, ingest, synthetic_frames


@pytest.fixture(scope="module")
def frames(demo_frames) -> list[Frame]:
    return synthetic_frames(demo_frames)[:4]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("stored-frames")
    log = data_dir.parent / "stored-frames.log"
    with ServerProcess(log_path=log, model=DEMO_MODEL, data_dir=data_dir) as process:
        yield process


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def detections_run(client: httpx.Client) -> float:
    """How many frames the detector has run on (the metrics' detect count)."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith('ps_inference_seconds_count{kind="detect"}'):
            return float(line.split()[1])
    return 0.0


def test_sending_stored_frames_again_runs_no_detection(client: httpx.Client, frames) -> None:
    assert ingest(client, frames[:2]).status_code == 201
    before = detections_run(client)
    again = ingest(client, frames[:2])
    body = assert_problem(again, 409)
    assert body["type"].endswith(":frame-exists")
    assert detections_run(client) == before  # refused before decoding and detecting


@pytest.mark.parametrize(
    "camera",
    [
        "fire \U0001f469\u200d\U0001f692",  # an emoji sequence: zero-width joiner
        "\u0645\u06cc\u200c\u0631\u0648\u062f",  # Persian: zero-width non-joiner
        "gate\u00a02",  # a no-break space
    ],
)
def test_real_camera_names_are_accepted(client: httpx.Client, frames, camera: str) -> None:
    frame = frames[2]
    response = ingest(client, [frame], frame_id=f"cam-{ord(camera[-1]):x}", camera=camera)
    assert response.status_code == 201, response.text
    assert response.json()["frames"][0]["camera"] == camera
    listed = client.get("/gallery/frames", params={"camera": camera}).json()["frames"]
    assert [f["camera"] for f in listed] == [camera]


@pytest.mark.parametrize("camera", ["two\nlines", "nul\x00", "para\u2029graph"])
def test_control_characters_in_camera_names_are_refused(
    client: httpx.Client, frames, camera: str
) -> None:
    body = assert_problem(ingest(client, [frames[3]], frame_id="bad-camera", camera=camera), 422)
    assert body["type"].endswith(":invalid-camera")


def test_a_stored_image_damaged_on_disk_is_a_server_error(
    client: httpx.Client, server: ServerProcess, frames
) -> None:
    response = ingest(client, [frames[3]], frame_id="damaged")
    assert response.status_code == 201, response.text
    (person,) = response.json()["frames"][0]["detections"][:1]
    image = Path(server.env["PS_DATA_DIR"]) / "frames" / "damaged.jpg"
    image.write_bytes(image.read_bytes()[:200])
    body = assert_problem(client.get(f"/gallery/detections/{person['id']}/crop"), 500)
    assert body["type"].endswith(":stored-image-damaged")
    assert server.log_path is not None and "damaged.jpg" in server.log_path.read_text()
