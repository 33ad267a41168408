"""The HTTP service end to end: a real `python -m server` on 127.0.0.1, the bundled demo
model (no torch), synthetic frames of its kind, httpx as the client."""

from __future__ import annotations

import io
import json
import re
import socket
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from server.testing import ServerProcess
from tests.conftest import DEMO_MODEL
from tests.server.helpers import (
    MIN_DETECTION_SCORE,
    PROBLEM,
    Frame,
    assert_problem,
    encode,
    ingest,
    iou,
    labelled_person,
    person_crop,
    search,
    synthetic_frames,
)

MAX_FILES = 4
MAX_UPLOAD_MB = 1


@pytest.fixture(scope="module")
def frames(demo_frames) -> list[Frame]:
    return synthetic_frames(demo_frames)


@pytest.fixture(scope="module")
def model_path() -> Path:
    return DEMO_MODEL


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("server-data")
    with ServerProcess(
        log_path=data_dir.parent / "server.log",
        model=model_path,
        data_dir=data_dir,
        min_detection_score=MIN_DETECTION_SCORE,
        max_files=MAX_FILES,
        max_upload_mb=MAX_UPLOAD_MB,
    ) as process:
        yield process


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def gallery(client: httpx.Client, frames: list[Frame]) -> dict[str, dict]:
    """All training frames ingested, in batches of at most MAX_FILES; answers by frame id."""
    answers = {}
    for start in range(0, len(frames), MAX_FILES):
        response = ingest(client, frames[start : start + MAX_FILES])
        assert response.status_code == 201, response.text
        answers |= {frame["frame_id"]: frame for frame in response.json()["frames"]}
    return answers


# ---- service basics --------------------------------------------------------------------


def test_health_readiness_docs_and_model(client: httpx.Client, model_path: Path) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    assert_docs_served_offline(client)
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/gallery", "/search", "/gallery/frames/{frame_id}", "/metrics"} <= set(paths)
    model = client.get("/model").json()
    card = json.loads(model_path.with_name("model.json").read_text())
    assert model["card"]["onnx_sha256"] == model["sha256"]
    assert model["card"]["embedding_dim"] == model["embedding_dim"]
    assert model["providers"] == ["CPUExecutionProvider"]
    assert model["min_detection_score"] == MIN_DETECTION_SCORE
    assert model["card"] == card


def assert_docs_served_offline(client: httpx.Client, headers: dict | None = None) -> list[str]:
    """/docs and /redoc load every script and style from the service itself (no CDN)."""
    assets = []
    for page in ("/docs", "/redoc"):
        response = client.get(page, headers=headers)
        assert response.status_code == 200, response.text
        found = re.findall(
            r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+\.(?:js|css|png))['"]""", response.text
        )
        assert found, response.text
        assert not [url for url in found if "//" in url], found  # nothing from another host
        assets += found
    for url in set(assets):
        asset = client.get(url, headers=headers)
        assert asset.status_code == 200 and len(asset.content) > 1000, url
    return assets


# ---- ingest and search -----------------------------------------------------------------


def test_ingest_answers_boxes_in_original_pixels(gallery: dict, frames: list[Frame]) -> None:
    for frame in frames:
        answer = gallery[frame.frame_id]
        with Image.open(frame.path) as image:
            assert (answer["width"], answer["height"]) == image.size
        assert answer["camera"] == frame.camera
        boxes = np.array([d["box"] for d in answer["detections"]]).reshape(-1, 4)
        assert np.all(boxes[:, 2:] <= [answer["width"], answer["height"]])
        assert all(d["score"] >= MIN_DETECTION_SCORE for d in answer["detections"])
    # The model was trained on these frames: most annotated people are found where they are.
    found = [
        max((iou(d["box"], box) for d in gallery[f.frame_id]["detections"]), default=0.0) >= 0.5
        for f in frames
        for box in f.boxes
    ]
    assert np.mean(found) >= 0.6, f"only {np.mean(found):.0%} of the people detected"


def test_search_with_a_person_crop_finds_its_frame(
    client: httpx.Client, gallery: dict, frames: list[Frame]
) -> None:
    frame, person = labelled_person(frames)
    response = search(client, person_crop(frame, person), top_k="5")
    assert response.status_code == 200, response.text
    body = response.json()
    results = body["results"]
    assert results and body["took_ms"] > 0
    similarities = [hit["similarity"] for hit in results]
    assert similarities == sorted(similarities, reverse=True)
    best_in_frame = next(hit for hit in results if hit["frame_id"] == frame.frame_id)
    assert results.index(best_in_frame) < 3, [hit["frame_id"] for hit in results]
    assert best_in_frame["camera"] == frame.camera
    # the person's own detection is among the frame's hits (the tiny overfit model may rank a
    # neighbour of similar colours first)
    in_frame = [hit for hit in results if hit["frame_id"] == frame.frame_id]
    assert max(iou(hit["box"], frame.boxes[person]) for hit in in_frame) >= 0.5


def test_search_filters_and_explicit_box(
    client: httpx.Client, gallery: dict, frames: list[Frame]
) -> None:
    frame, person = labelled_person(frames)
    with Image.open(frame.path) as image:
        whole = encode(image.convert("RGB"))
    x1, y1, x2, y2 = frame.boxes[person]
    response = search(client, whole, box=f"{x1},{y1},{x2},{y2}", top_k="3", camera=frame.camera)
    body = response.json()
    assert response.status_code == 200, response.text
    assert body["results"] and all(hit["camera"] == frame.camera for hit in body["results"])
    assert body["query"]["source"] in ("detection", "box")
    if body["query"]["source"] == "detection":  # the detector's box of this same person
        assert body["query"]["iou"] >= 0.5
    assert iou(body["query"]["box"], frame.boxes[person]) >= 0.5
    floor = search(client, whole, box=f"{x1},{y1},{x2},{y2}", min_similarity="0.999999")
    assert all(hit["similarity"] >= 0.999999 for hit in floor.json()["results"])
    nobody = search(client, whole, camera="no-such-camera").json()["results"]
    assert nobody == []
    assert body["query"]["clipped"] is False


def test_search_box_partly_outside_is_clipped(client: httpx.Client, gallery: dict, frames):
    frame, person = labelled_person(frames)
    with Image.open(frame.path) as image:
        width, height = image.size
        whole = encode(image.convert("RGB"))
    x1, y1, x2, y2 = frame.boxes[person]
    # the person's box reaching 3 px past the left and bottom edges, as annotated query boxes can
    wider = f"{-3.0},{y1},{x2},{height + 3.0}"
    answer = search(client, whole, box=wider, top_k="3")
    assert answer.status_code == 200, answer.text
    query = answer.json()["query"]
    assert query["clipped"] is True
    if query["source"] == "box":  # the box was embedded as clipped
        assert query["box"] == [0.0, y1, x2, float(height)]
    outside = search(client, whole, box=f"{width + 1},{0},{width + 40},{40}")
    assert outside.status_code == 422
    assert outside.json()["type"].endswith("box-outside-image")


def test_frame_lookup_image_and_stats(client: httpx.Client, gallery: dict, frames: list[Frame]):
    frame = frames[0]
    stored = client.get(f"/gallery/frames/{frame.frame_id}").json()
    assert stored["detections"] == gallery[frame.frame_id]["detections"]
    assert stored["timestamp"] == gallery[frame.frame_id]["timestamp"]
    image = client.get(f"/gallery/frames/{frame.frame_id}/image")
    assert image.headers["content-type"] == "image/jpeg"
    assert image.content == frame.path.read_bytes()
    stats = client.get("/gallery/stats").json()
    assert stats["frames"] >= len(frames)
    assert stats["index_size"] == stats["detections"] >= 1


def test_delete_removes_the_frame_from_results(client: httpx.Client, gallery: dict, frames):
    frame, person = labelled_person(frames)
    copy_id = f"{frame.frame_id}-copy"
    assert ingest(client, [frame], frame_id=copy_id).status_code == 201
    query = person_crop(frame, person)
    before = {hit["frame_id"] for hit in search(client, query, top_k="1000").json()["results"]}
    assert copy_id in before
    assert client.delete(f"/gallery/frames/{copy_id}").status_code == 204
    after = {hit["frame_id"] for hit in search(client, query, top_k="1000").json()["results"]}
    assert copy_id not in after and frame.frame_id in after
    assert_problem(client.get(f"/gallery/frames/{copy_id}"), 404)
    assert_problem(client.get(f"/gallery/frames/{copy_id}/image"), 404)


def test_large_uploads_answer_in_their_own_pixels(
    client: httpx.Client, gallery: dict, frames: list[Frame]
) -> None:
    """A frame or query larger than the model's input is decoded at that size; its boxes
    still come back in the upload's pixels."""
    frame, person = labelled_person(frames)
    with Image.open(frame.path) as image:
        large = image.convert("RGB").resize((image.width * 3, image.height * 3))
    files = [("files", ("large.jpg", encode(large), "image/jpeg"))]
    response = client.post("/gallery", files=files, data={"frame_id": "large"})
    assert response.status_code == 201, response.text
    stored = response.json()["frames"][0]
    assert (stored["width"], stored["height"]) == large.size
    boxes = np.array([d["box"] for d in stored["detections"]]).reshape(-1, 4)
    assert max(iou(box, frame.boxes[person] * 3) for box in boxes) >= 0.5
    x1, y1, x2, y2 = frame.boxes[person] * 3
    query = search(client, encode(large), box=f"{x1},{y1},{x2},{y2}", top_k="3").json()
    assert iou(query["query"]["box"], frame.boxes[person] * 3) >= 0.5
    assert client.delete("/gallery/frames/large").status_code == 204


def test_metrics_count_requests_inference_and_gallery(client: httpx.Client, gallery: dict):
    client.get("/healthz")
    text = client.get("/metrics").text
    assert 'ps_http_requests_total{method="POST",route="/gallery",status="201"}' in text
    assert 'ps_inference_seconds_count{kind="detect"}' in text
    frames = next(line for line in text.splitlines() if line.startswith("ps_gallery_frames "))
    assert float(frames.split()[1]) >= len(gallery)


# ---- bad input -------------------------------------------------------------------------


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: a decompression bomb's signature."""
    data = bytearray(encode(np.zeros((8, 8, 3), np.uint8), "PNG"))
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    return bytes(data)


def jpeg(width: int = 64, height: int = 128) -> bytes:
    rng = np.random.default_rng(0)
    return encode(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def animated_png() -> bytes:
    buffer = io.BytesIO()
    still = [Image.new("RGB", (32, 64), colour) for colour in ("red", "blue")]
    still[0].save(buffer, "PNG", save_all=True, append_images=still[1:])
    return buffer.getvalue()


BAD_UPLOADS = {
    "not an image": (b"this is plain text, not an image", 415),
    "png of width 0": (png_claiming_size(0, 64), 422),
    "animated png": (animated_png(), 422),
    "truncated image": (jpeg()[:600], 422),
    "empty file": (b"", 422),
    "decompression bomb": (png_claiming_size(60_000, 60_000), 413),
    "over the pillow limit": (png_claiming_size(20_000, 10_000), 413),
    "file too large": (
        encode(np.random.default_rng(1).integers(0, 255, (800, 800, 3), np.uint8), "PNG"),
        413,
    ),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
@pytest.mark.parametrize("route", ["/gallery", "/search"])
def test_bad_images_get_their_4xx(client: httpx.Client, route: str, case: str) -> None:
    data, status = BAD_UPLOADS[case]
    field = "files" if route == "/gallery" else "query"
    frame_id = {"frame_id": f"bad-{case.replace(' ', '-')}"} if route == "/gallery" else {}
    response = client.post(route, files={field: ("upload.bin", data)}, data=frame_id)
    body = assert_problem(response, status)
    if status == 413 and "too large" not in case:
        assert "PS_MAX_PIXELS" in body["detail"]  # never Pillow's own, much higher limit
    assert client.get("/healthz").status_code == 200
    if route == "/gallery":  # nothing was stored
        assert_problem(client.get(f"/gallery/frames/{frame_id['frame_id']}"), 404)


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"box": "64,0,65,10"}, 422),  # outside the 64x128 query
        ({"box": "-9,0,-1,10"}, 422),
        ({"box": "10,10,5,20"}, 422),  # corners out of order
        ({"box": "1,2,3"}, 422),
        ({"box": "a,b,c,d"}, 422),
        ({"top_k": "ten"}, 422),
        ({"top_k": "0"}, 422),
        ({"top_k": "1001"}, 422),
        ({"min_similarity": "nan"}, 422),
        ({"min_score": "2"}, 422),
        ({"start": "yesterday"}, 422),
        ({"start": "2024-01-02", "end": "2024-01-01"}, 422),
    ],
)
def test_bad_search_fields_get_422(client: httpx.Client, fields: dict, status: int) -> None:
    assert_problem(search(client, jpeg(), **fields), status)
    assert client.get("/healthz").status_code == 200


def test_repeated_search_fields_are_refused(client: httpx.Client) -> None:
    twice = client.post("/search", files={"query": ("q.jpg", jpeg())}, data={"top_k": ["1", "2"]})
    assert assert_problem(twice, 422)["type"].endswith(":repeated-field")
    two_queries = [("query", ("a.jpg", jpeg())), ("query", ("b.jpg", jpeg()))]
    body = assert_problem(client.post("/search", files=two_queries), 422)
    assert body["type"].endswith(":repeated-field") and "query" in body["detail"]


def test_bad_ingest_requests(client: httpx.Client, gallery: dict, frames: list[Frame]) -> None:
    frame = frames[0]
    one = [("files", ("f.jpg", jpeg()))]
    assert_problem(client.post("/gallery", files=one, data={"frame_id": "../etc/passwd"}), 422)
    assert_problem(client.post("/gallery", files=one, data={"frame_id": "a\\b"}), 422)
    assert_problem(client.post("/gallery", files=one, data={"frame_id": frame.frame_id}), 409)
    assert_problem(client.post("/gallery", files=one, data={"timestamp": "soon"}), 422)
    for camera in ("c" * 129, "c1\x00", "c1\n"):
        body = assert_problem(client.post("/gallery", files=one, data={"camera": camera}), 422)
        assert body["type"].endswith(":invalid-camera")
    two = one + [("files", ("g.jpg", jpeg()))]
    assert_problem(client.post("/gallery", files=two, data={"frame_id": ["x1", "x1"]}), 409)
    assert_problem(client.post("/gallery", files=two, data={"frame_id": "only-one"}), 422)
    tiny = [("files", ("f.jpg", b"x"))]  # 1001: over the multipart parser's own default
    for files in (one * (MAX_FILES + 1), tiny * 1001):
        body = assert_problem(client.post("/gallery", files=files), 413)
        assert body["type"].endswith(":too-many-files")
    assert_problem(client.post("/gallery", data={"camera": "c1"}), 422)  # no files at all
    assert_problem(client.post("/gallery", json={"files": []}), 422)
    # A body over the whole-request limit is refused while it streams in.
    huge = b"\0" * ((MAX_UPLOAD_MB * MAX_FILES + 2) * 1024 * 1024)
    assert_problem(client.post("/gallery", files={"files": ("big.jpg", huge)}), 413)
    assert client.get("/healthz").status_code == 200
    assert client.get("/gallery/stats").json()["frames"] == len(gallery)


def test_frame_id_with_a_trailing_newline_is_refused(client: httpx.Client) -> None:
    one = [("files", ("f.jpg", jpeg()))]
    assert_problem(client.post("/gallery", files=one, data={"frame_id": "abc\n"}), 422)
    assert_problem(client.get("/gallery/frames/abc%0A"), 422)
    assert_problem(client.delete("/gallery/frames/abc%0A"), 422)


def test_image_url_is_relative_whatever_the_host_header(client: httpx.Client) -> None:
    one = [("files", ("f.jpg", jpeg()))]
    response = client.post(
        "/gallery", files=one, data={"frame_id": "hosted"}, headers={"Host": "evil.example:666"}
    )
    assert response.status_code == 201, response.text
    url = response.json()["frames"][0]["image_url"]
    assert url == "/gallery/frames/hosted/image"
    frame = client.get("/gallery/frames/hosted", headers={"Host": "evil.example:666"}).json()
    assert frame["image_url"] == url
    assert client.get(url).status_code == 200
    assert client.delete("/gallery/frames/hosted").status_code == 204


def test_image_read_racing_its_delete_is_whole_or_404(server: ServerProcess) -> None:
    """Each read answers the whole image or 404 unknown-frame / image-missing, never a 500,
    a cut-off body or a dropped connection."""
    image = encode(np.random.default_rng(0).integers(0, 255, (560, 560, 3), np.uint8), "PNG")
    assert len(image) < MAX_UPLOAD_MB * 1024 * 1024
    outcomes: list[object] = []  # 200, 404, or what went wrong (threads cannot assert)

    def read(frame_id: str) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for _ in range(40):  # until the delete has happened
                try:
                    response = http.get(f"/gallery/frames/{frame_id}/image")
                except httpx.HTTPError as error:
                    outcomes.append(repr(error))
                    continue
                whole = response.status_code == 200 and response.content == image
                problem = response.status_code == 404 and response.headers[
                    "content-type"
                ].startswith(PROBLEM)
                outcomes.append(response.status_code if whole or problem else response.text)
                if response.status_code == 404:
                    return

    with httpx.Client(base_url=server.url, timeout=60) as http:
        for round_ in range(20):
            frame_id = f"race{round_}"
            files = {"files": ("r.png", image, "image/png")}
            response = http.post("/gallery", files=files, data={"frame_id": frame_id})
            assert response.status_code == 201, response.text
            readers = [threading.Thread(target=read, args=(frame_id,)) for _ in range(6)]
            for reader in readers:
                reader.start()
            assert http.delete(f"/gallery/frames/{frame_id}").status_code == 204
            for reader in readers:
                reader.join()
    assert set(outcomes) <= {200, 404}, [o for o in outcomes if o not in (200, 404)][:3]
    assert outcomes.count(404) == 20 * 6


def test_a_batch_is_stored_whole_or_not_at_all(server: ServerProcess) -> None:
    """Two batches racing for one frame id: one is stored whole, the other answers 409 and
    leaves none of its frames behind."""
    rounds = 6  # before the fix, every round stored the refused batch's other frame
    outcomes: dict[str, list[int]] = {"a": [], "b": []}

    def post(side: str, start: threading.Barrier) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for round_ in range(rounds):
                files = [("files", ("1.jpg", jpeg())), ("files", ("2.jpg", jpeg()))]
                ids = [f"{side}-own{round_}", f"shared{round_}"]
                start.wait()
                response = http.post("/gallery", files=files, data={"frame_id": ids})
                outcomes[side].append(response.status_code)

    start = threading.Barrier(2)
    racers = [threading.Thread(target=post, args=(side, start)) for side in outcomes]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for round_, statuses in enumerate(zip(outcomes["a"], outcomes["b"], strict=True)):
            assert sorted(statuses) == [201, 409], statuses
            for side, status in zip(outcomes, statuses, strict=True):
                stored = http.get(f"/gallery/frames/{side}-own{round_}").status_code
                assert stored == (200 if status == 201 else 404), (round_, side, status)
                if status == 201:
                    assert http.delete(f"/gallery/frames/{side}-own{round_}").status_code == 204
            assert http.delete(f"/gallery/frames/shared{round_}").status_code == 204


def test_unknown_and_path_like_frame_ids(client: httpx.Client, gallery: dict) -> None:
    for method in ("GET", "DELETE"):
        assert_problem(client.request(method, "/gallery/frames/nope"), 404)
        assert_problem(client.request(method, "/gallery/frames/.hidden"), 422)
        assert_problem(client.request(method, "/gallery/frames/a%5Cb"), 422)
    assert_problem(client.get("/gallery/frames/nope/image"), 404)
    # An encoded slash cannot reach a frame route at all.
    assert_problem(client.get("/gallery/frames/..%2F..%2Fgallery.sqlite3"), 404)
    assert client.get("/healthz").status_code == 200


# ---- API key ---------------------------------------------------------------------------


def test_api_key_guards_everything_but_health(tmp_path: Path) -> None:
    with (
        ServerProcess(
            model=DEMO_MODEL,
            data_dir=tmp_path,
            api_key="s3cret",
            min_detection_score=MIN_DETECTION_SCORE,
            public_url="https://ps.example/base/",
        ) as keyed,
        httpx.Client(base_url=keyed.url, timeout=60) as http,
    ):
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 200
        assert_docs_served_offline(http)  # the docs and their assets need no key
        for method, path in [
            ("GET", "/model"),
            ("GET", "/metrics"),
            ("GET", "/gallery/stats"),
            ("GET", "/gallery/frames/x"),
            ("DELETE", "/gallery/frames/x"),
        ]:
            assert_problem(http.request(method, path), 401)
            assert_problem(http.request(method, path, headers={"X-API-Key": "wrong"}), 401)
        assert_problem(search(http, jpeg()), 401)
        good = {"X-API-Key": "s3cret"}
        assert http.get("/gallery/stats", headers=good).status_code == 200
        response = http.post("/search", files={"query": ("q.jpg", jpeg())}, headers=good)
        assert response.status_code == 200, response.text
        # PS_PUBLIC_URL, not the Host header, makes image_url absolute.
        response = http.post(
            "/gallery",
            files={"files": ("f.jpg", jpeg())},
            data={"frame_id": "pub"},
            headers={**good, "Host": "evil.example:666"},
        )
        assert response.status_code == 201, response.text
        url = response.json()["frames"][0]["image_url"]
        assert url == "https://ps.example/base/gallery/frames/pub/image"
        assert_key_checked_before_the_body(keyed)


def status_before_the_body(server: ServerProcess, path: str, headers: dict[str, str]) -> int | None:
    """Send only a POST's head (its body never comes): the status answered within a few
    seconds, or None when the service waits for the body."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as connection:
        connection.sendall(head.encode())
        try:
            status_line = connection.makefile("rb").readline()
        except TimeoutError:
            return None
    return int(status_line.split()[1]) if status_line else None


def assert_key_checked_before_the_body(keyed: ServerProcess) -> None:
    """Without the key, a large upload is refused from its head, never received; /search's
    own (one image) body limit holds for a keyed client as well."""
    multipart = "multipart/form-data; boundary=x"
    huge = {"Content-Type": multipart, "Content-Length": str(300 * 1024 * 1024)}
    for path in ("/gallery", "/search"):
        assert status_before_the_body(keyed, path, huge) == 401
    no_boundary = {"Content-Type": "multipart/form-data", "Content-Length": "0"}
    assert status_before_the_body(keyed, "/gallery", no_boundary) == 401
    # default PS_MAX_UPLOAD_MB (20 MiB) + 1 MiB of fields; /gallery takes 32 such files
    over_one_image = {**huge, "Content-Length": str(22 * 1024 * 1024), "X-API-Key": "s3cret"}
    assert status_before_the_body(keyed, "/search", over_one_image) == 413
