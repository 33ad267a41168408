"""What a second break-it round found (issue 23), against a real `python -m server` on 127.0.0.1
running the bundled demo model: the page at one address, timestamps a date can hold, empty time
bounds, repeated fields and keys, problem details a user can act on, a quiet Milvus Lite start."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from server.testing import ServerProcess
from tests.conftest import DEMO_MODEL
from tests.server.helpers import assert_problem

KEY = "hardening-key"
LATEST = 8.64e12  # seconds: the last moment a JavaScript Date holds


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("hardening-data")
    with ServerProcess(
        log_path=data_dir.parent / "hardening-server.log",
        model=DEMO_MODEL,
        data_dir=data_dir,
        api_key=KEY,
        max_files=2,
    ) as process:
        yield process


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60, headers={"X-API-Key": KEY}) as http:
        yield http


def problem(response: httpx.Response, status: int, kind: str) -> dict:
    body = assert_problem(response, status)
    assert body["type"] == f"urn:person-search:problem:{kind}", body
    return body


def one_frame(demo_frames: list) -> list:
    record = demo_frames[0]
    return [("files", (record.path.name, record.path.read_bytes(), "image/jpeg"))]


def test_the_page_has_one_address(server: ServerProcess):
    """/web/index.html was the page without its Content-Security-Policy, with its relative
    links resolving to /web/web/app.js (404): it now sends the browser to /."""
    moved = httpx.get(f"{server.url}/web/index.html")
    assert moved.status_code == 308 and moved.headers["location"] == "/"
    page = httpx.get(f"{server.url}/web/index.html", follow_redirects=True)
    assert page.status_code == 200 and str(page.url) == f"{server.url}/"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'src="web/app.js"' in page.text
    assert httpx.get(f"{server.url}/web/app.js").status_code == 200


def test_timestamps_are_what_a_date_can_hold(client: httpx.Client, demo_frames: list):
    for text in ("1e308", str(LATEST * 1.001), str(-LATEST * 1.001)):
        answer = client.post("/gallery", files=one_frame(demo_frames), data={"timestamp": text})
        assert "JavaScript Date" in problem(answer, 422, "timestamp-out-of-range")["detail"]
        listing = client.get("/gallery/frames", params={"start": text})
        problem(listing, 422, "timestamp-out-of-range")
        search = client.post("/search", data={"detection_id": 1, "end": text})
        problem(search, 422, "timestamp-out-of-range")
    stored = client.post("/gallery", files=one_frame(demo_frames), data={"timestamp": str(LATEST)})
    assert stored.status_code == 201, stored.text
    assert stored.json()["frames"][0]["timestamp"] == LATEST


def test_an_empty_time_bound_is_no_bound(client: httpx.Client):
    """The document lets `start` and `end` be any string; an empty one (what a form sends for
    a field left blank) was refused as a bad number."""
    for params in ({"end": ""}, {"start": ""}, {"start": "", "end": ""}):
        assert client.get("/gallery/frames", params=params).status_code == 200, params
    problem(client.get("/gallery/frames", params={"end": "soon"}), 422, "invalid-number")


def test_too_many_files_and_fields_say_what_to_do(client: httpx.Client, demo_frames: list):
    files = one_frame(demo_frames) * 3
    detail = problem(client.post("/gallery", files=files), 413, "too-many-files")["detail"]
    assert detail.endswith(
        "Send the other files in further requests (the service's PS_MAX_FILES setting)."
    )
    fields = {"camera": ["c"] * 1001}
    detail = problem(client.post("/gallery", data=fields), 413, "too-many-fields")["detail"]
    assert "PS_MAX_FILES" not in detail and detail.endswith(
        "Send fewer form fields in one request."
    )


def test_a_single_field_given_twice_is_repeated_whatever_its_values(client: httpx.Client):
    """top_k as 5 and 0 answered `validation` (FastAPI kept the 0) instead of repeated-field."""
    for values in (["5", "0"], ["0", "5"], ["5", "5"]):
        twice = client.post("/search", data={"detection_id": "1", "top_k": values})
        assert "top_k" in problem(twice, 422, "repeated-field")["detail"]


def test_two_api_keys_are_refused(server: ServerProcess):
    for keys in ([KEY, "wrong"], ["wrong", KEY], [KEY, KEY]):
        answer = httpx.get(
            f"{server.url}/gallery/stats", headers=[("X-API-Key", key) for key in keys]
        )
        assert "given 2 times" in problem(answer, 401, "unauthorized")["detail"]
    assert httpx.get(f"{server.url}/gallery/stats", headers={"X-API-Key": KEY}).status_code == 200


def test_milvus_lite_starts_without_an_error_in_the_log(tmp_path):
    """pymilvus asks Milvus Lite for a call it does not implement while an index builds; its
    gRPC server logged that as an ERROR with a traceback at every start."""
    log_path = tmp_path / "milvus-server.log"
    with ServerProcess(
        log_path=log_path,
        model=DEMO_MODEL,
        data_dir=tmp_path / "data",
        vector_backend="milvus",
        log_level="info",
    ):
        pass
    log = log_path.read_text()
    assert "Milvus collection" in log  # the collection was built, so the call was made
    assert " ERROR " not in log and "Traceback" not in log, log
