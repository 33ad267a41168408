"""Browsing and searching from what is stored (issue 11), against a real `python -m server` on
127.0.0.1 running the bundled demo model over synthetic frames of its own kind."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from server.testing import ServerProcess
from tests.conftest import DEMO_MODEL

KEY = "browse-key"
PROBLEM = "application/problem+json"
FIRST_TIME = 1_800_000_000


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[httpx.Client]:
    data_dir = tmp_path_factory.mktemp("browse-data")
    with ServerProcess(
        log_path=data_dir.parent / "browse-server.log",
        model=DEMO_MODEL,
        data_dir=data_dir,
        api_key=KEY,
    ) as server:
        with httpx.Client(base_url=server.url, timeout=60, headers={"X-API-Key": KEY}) as http:
            yield http


@pytest.fixture(scope="module")
def stored(client: httpx.Client, demo_frames: list) -> list[dict]:
    """Every demo frame ingested in one request, a second apart, frame i at FIRST_TIME + i."""
    files = [("files", (r.path.name, r.path.read_bytes(), "image/jpeg")) for r in demo_frames]
    data = {
        "camera": [f"c{r.camera}" for r in demo_frames],
        "timestamp": [str(FIRST_TIME + n) for n in range(len(demo_frames))],
    }
    response = client.post("/gallery", files=files, data=data)
    assert response.status_code == 201, response.text
    return response.json()["frames"]


def problem(response: httpx.Response, status: int, kind: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"] == f"urn:person-search:problem:{kind}", body
    return body


def test_ingest_keeps_the_file_name(client: httpx.Client, stored: list, demo_frames: list):
    assert [frame["filename"] for frame in stored] == [r.path.name for r in demo_frames]
    again = client.get(f"/gallery/frames/{stored[0]['frame_id']}").json()
    assert again["filename"] == demo_frames[0].path.name
    odd = client.post("/gallery", files=[("files", ("x" * 252 + ".jpg", b"x", "image/jpeg"))])
    assert "files[0]" in problem(odd, 422, "invalid-filename")["detail"]


def test_frames_are_listed_newest_first_page_by_page(client: httpx.Client, stored: list):
    newest_first = [frame["frame_id"] for frame in reversed(stored)]
    seen, cursor, pages = [], None, 0
    while True:
        page = client.get("/gallery/frames", params={"limit": 5, "cursor": cursor}).json()
        seen += page["frames"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and [frame["frame_id"] for frame in seen] == newest_first
    by_id = {frame["frame_id"]: frame for frame in stored}
    assert all(frame == by_id[frame["frame_id"]] for frame in seen)  # detections included

    camera = stored[3]["camera"]
    start, end = FIRST_TIME + 2, FIRST_TIME + 9
    chosen = client.get(
        "/gallery/frames", params={"camera": camera, "start": start, "end": end}
    ).json()["frames"]
    expected = [
        frame["frame_id"]
        for frame in reversed(stored)
        if frame["camera"] == camera and start <= frame["timestamp"] <= end
    ]
    assert [frame["frame_id"] for frame in chosen] == expected and expected

    problem(client.get("/gallery/frames", params={"cursor": "not-a-cursor"}), 422, "invalid-cursor")
    problem(client.get("/gallery/frames", params={"limit": 0}), 422, "validation")
    problem(client.get("/gallery/frames", params={"start": 5, "end": 1}), 422, "invalid-time-range")
    problem(httpx.get(f"{client.base_url}/gallery/frames"), 401, "unauthorized")


def test_a_detection_crop_is_the_person_with_a_margin(client: httpx.Client, stored: list):
    frame = max(stored, key=lambda f: len(f["detections"]))
    detection = frame["detections"][0]
    response = client.get(f"/gallery/detections/{detection['id']}/crop")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    x1, y1, x2, y2 = detection["box"]
    with Image.open(io.BytesIO(response.content)) as crop:
        width, height = crop.size
    # 15% of the box each side, less where the frame ends
    assert x2 - x1 <= width <= (x2 - x1) * 1.3 + 2 and y2 - y1 <= height <= (y2 - y1) * 1.3 + 2
    problem(client.get("/gallery/detections/999999/crop"), 404, "unknown-detection")


def test_search_from_a_stored_detection(client: httpx.Client, stored: list, demo_frames: list):
    """Searching from a stored detection ranks exactly like sending its frame with its box
    (the detector finds the same person, so the same embedding), minus the detection itself."""
    index = max(range(len(stored)), key=lambda n: len(stored[n]["detections"]))
    detection = stored[index]["detections"][1]
    answer = client.post("/search", data={"detection_id": detection["id"], "top_k": 5})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["query"] == {
        "box": detection["box"],
        "source": "stored",
        "iou": None,
        "clipped": False,
        "detection_id": detection["id"],
        "frame_id": stored[index]["frame_id"],
    }
    results = body["results"]
    assert len(results) == 5 and detection["id"] not in [hit["detection_id"] for hit in results]
    assert all(hit["filename"] for hit in results)

    box = ",".join(str(v) for v in detection["box"])
    frame_bytes = demo_frames[index].path.read_bytes()
    same = client.post(
        "/search",
        files={"query": ("frame.jpg", frame_bytes, "image/jpeg")},
        data={"box": box, "top_k": 6},
    ).json()
    assert same["query"]["source"] == "detection" and same["query"]["iou"] == pytest.approx(1.0)
    assert same["results"][0]["detection_id"] == detection["id"]
    assert same["results"][0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert [hit["detection_id"] for hit in same["results"][1:]] == [
        hit["detection_id"] for hit in results
    ]

    only = client.post(
        "/search", data={"detection_id": detection["id"], "camera": "c1", "min_similarity": 0.2}
    ).json()["results"]
    assert all(hit["camera"] == "c1" and hit["similarity"] >= 0.2 for hit in only)


def test_search_asks_for_a_query_or_a_detection(client: httpx.Client, stored: list):
    detection_id = stored[0]["detections"][0]["id"]
    crop = client.get(f"/gallery/detections/{detection_id}/crop").content
    both = client.post(
        "/search",
        files={"query": ("q.jpg", crop, "image/jpeg")},
        data={"detection_id": detection_id},
    )
    problem(both, 422, "query-or-detection")
    problem(client.post("/search", data={"top_k": 3}), 422, "query-or-detection")
    with_box = client.post("/search", data={"detection_id": detection_id, "box": "0,0,5,5"})
    problem(with_box, 422, "invalid-box")
    problem(client.post("/search", data={"detection_id": 999999}), 404, "unknown-detection")
    problem(client.post("/search", data={"detection_id": 0}), 422, "validation")
    twice = client.post("/search", data={"detection_id": [detection_id, detection_id]})
    problem(twice, 422, "repeated-field")


def test_new_routes_are_documented_with_their_problems(client: httpx.Client):
    paths = client.get("/openapi.json").json()["paths"]
    listing = paths["/gallery/frames"]["get"]
    assert {"camera", "start", "end", "limit", "cursor"} <= {
        p["name"] for p in listing["parameters"]
    }
    assert {"401", "422", "503"} <= set(listing["responses"])
    crop = paths["/gallery/detections/{detection_id}/crop"]["get"]["responses"]
    assert "image/jpeg" in crop["200"]["content"] and {"401", "404"} <= set(crop)
    assert PROBLEM in crop["404"]["content"]
    assert "/" not in paths and not any(path.startswith("/web") for path in paths)


def test_the_page_is_served_without_a_key(client: httpx.Client):
    bare = str(client.base_url)
    page = httpx.get(f"{bare}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "style.css"):
        asset = httpx.get(f"{bare}/web/{name}")
        assert (
            asset.status_code == 200
            and asset.content
            == (Path(__file__).resolve().parents[2] / "server" / "web" / name).read_bytes()
        )
    problem(httpx.get(f"{bare}/gallery/stats"), 401, "unauthorized")  # the data still needs it


def test_out_of_range_ids_and_cursors_are_refused(client: httpx.Client):
    huge = 2**70
    problem(client.get(f"/gallery/detections/{huge}/crop"), 422, "validation")
    problem(client.post("/search", data={"detection_id": huge}), 422, "validation")
    cursor = base64.urlsafe_b64encode(b'[1e999,"x"]').decode()
    problem(client.get("/gallery/frames", params={"cursor": cursor}), 422, "invalid-cursor")
    cursor = base64.urlsafe_b64encode(f'[{10**400},"x"]'.encode()).decode()
    problem(client.get("/gallery/frames", params={"cursor": cursor}), 422, "invalid-cursor")
    # a lone surrogate and deep nesting answered 500 (and reset the connection)
    for text in (b'[1,"\\ud800"]', b"[" * 1000 + b"]" * 1000):
        cursor = base64.urlsafe_b64encode(text).decode()
        problem(client.get("/gallery/frames", params={"cursor": cursor}), 422, "invalid-cursor")
    assert client.get("/gallery/stats").status_code == 200  # the connection still serves
