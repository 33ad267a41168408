"""Server parts in-process: settings, model card checks, image decoding, form parsing, and the
engine's coordinate mapping and query fallback on the model trained in this session."""

from __future__ import annotations

import asyncio
import io
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from inference.boxes import box_iou
from inference.card import ModelError, load_model_card
from inference.engine import Engine
from inference.preprocess import load_rgb, resize_and_pad
from server.budget import PixelBudget
from server.forms import AskedBox, parse_box, parse_timestamp, per_file
from server.imaging import decode_image
from server.problems import Problem
from server.settings import Settings
from training.data import PRW

pytestmark = pytest.mark.torch


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PS_PROVIDERS", " CUDA, cpu ")
    monkeypatch.setenv("PS_API_KEY", "")
    monkeypatch.setenv("PS_PORT", "9000")
    settings = Settings()
    assert settings.provider_list == ("cuda", "cpu")
    assert settings.api_key is None and settings.port == 9000
    assert settings.model == Path("models/demo/model.onnx").resolve()
    monkeypatch.setenv("PS_PROVIDERS", "gpu")
    with pytest.raises(ValidationError, match="providers"):
        Settings()
    monkeypatch.setenv("PS_PROVIDERS", "cpu")
    monkeypatch.setenv("PS_MAX_FILES", "0")
    with pytest.raises(ValidationError, match="max_files"):
        Settings()


def test_public_url_setting() -> None:
    assert Settings().public_url is None
    assert Settings(public_url="https://ps.example/").public_url == "https://ps.example"
    for bad in ("ps.example", "ftp://x", "https://x/?q=1"):
        with pytest.raises(ValidationError):
            Settings(public_url=bad)


def test_vector_backend_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().milvus is None  # FAISS unless told otherwise
    monkeypatch.setenv("PS_VECTOR_BACKEND", "milvus")
    monkeypatch.setenv("PS_DATA_DIR", "/srv/gallery")
    milvus = Settings().milvus
    assert milvus is not None and milvus.embedded
    assert (milvus.uri, milvus.index_type) == ("/srv/gallery/milvus.db", "HNSW")
    monkeypatch.setenv("PS_MILVUS_URI", "http://milvus:19530")
    monkeypatch.setenv("PS_MILVUS_INDEX", "flat")
    milvus = Settings().milvus
    assert milvus is not None and not milvus.embedded and milvus.index_type == "FLAT"
    for name, bad in (
        ("PS_VECTOR_BACKEND", "qdrant"),
        ("PS_MILVUS_INDEX", "diskann"),
        ("PS_MILVUS_COLLECTION_PREFIX", "has-dash"),
    ):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValidationError):
            Settings()
        monkeypatch.delenv(name)


def test_box_iou() -> None:
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0]], rtol=1e-6)


def test_form_values() -> None:
    assert parse_box("1, 2.5,30,40", 30, 40) == AskedBox((1.0, 2.5, 30.0, 40.0), clipped=False)
    # a box reaching outside the image is clipped to it (PRW's query boxes can start at x = -2)
    assert parse_box("-2,5,31,44", 30, 40) == AskedBox((0.0, 5.0, 30.0, 40.0), clipped=True)
    for text, kind in [
        ("30,0,35,40", "box-outside-image"),  # touches the image's edge, no area inside
        ("-9,-9,-1,-1", "box-outside-image"),
        ("0,0,inf,4", "invalid-box"),
        ("5,5,5,9", "invalid-box"),
        ("1;2;3;4", "invalid-box"),
    ]:
        with pytest.raises(Problem) as caught:
            parse_box(text, 30, 40)
        assert caught.value.kind == kind and caught.value.status == 422
    assert parse_timestamp("1700000000.5") == 1700000000.5
    assert parse_timestamp("2024-01-01T00:00:00Z") == parse_timestamp("2024-01-01T00:00:00")
    assert parse_timestamp("2024-01-01T01:00:00+01:00") == 1704067200.0
    for bad in ("nan", "inf", "tomorrow"):
        with pytest.raises(Problem):
            parse_timestamp(bad)
    assert per_file(None, 2, "camera", shared=True) == [None, None]
    assert per_file(["c"], 3, "camera", shared=True) == ["c", "c", "c"]
    with pytest.raises(Problem):
        per_file(["a"], 2, "frame_id", shared=False)


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def test_decoding_modes_orientation_and_formats() -> None:
    rgba = Image.new("RGBA", (30, 20), (10, 20, 30, 128))
    decoded = decode_image(_encoded(rgba, "PNG"), "x", 10_000)
    assert decoded.pixels.shape == (20, 30, 3) and decoded.suffix == ".png"
    assert decode_image(_encoded(Image.new("L", (5, 4)), "PNG"), "x", 100).pixels.shape == (4, 5, 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    rotated = decode_image(_encoded(Image.new("RGB", (30, 20)), "JPEG", exif=exif), "x", 10_000)
    assert (rotated.width, rotated.height) == (20, 30)
    with pytest.raises(Problem) as caught:  # a real image, but not a format we accept
        decode_image(_encoded(Image.new("RGB", (8, 8)), "GIF"), "x", 10_000)
    assert caught.value.status == 415
    pages = [Image.new("RGB", (8, 8), colour) for colour in ("red", "blue")]
    for fmt in ("PNG", "WEBP", "TIFF"):  # animated PNG and WebP, multi-page TIFF
        with pytest.raises(Problem) as caught:
            decode_image(_encoded(pages[0], fmt, save_all=True, append_images=pages[1:]), "x", 99)
        assert (caught.value.status, caught.value.kind) == (422, "animated-image")


def test_large_images_are_decoded_at_the_model_size() -> None:
    """What stays decoded is the size the engine feeds the network, not the upload's; boxes
    map between the two."""
    fit = (960, 540)
    rng = np.random.default_rng(0)
    # PNG: decoded whole, then shrunk exactly as the engine would have shrunk it.
    noise = Image.fromarray(rng.integers(0, 255, (900, 1600, 3), dtype=np.uint8))
    png = decode_image(_encoded(noise, "PNG"), "x", 10**8, fit)
    assert png.pixels.shape == (540, 960, 3) and (png.width, png.height) == (1600, 900)
    engine_view = resize_and_pad(np.asarray(noise), max_size=fit, divisor=1).image
    np.testing.assert_array_equal(png.pixels, engine_view.transpose(1, 2, 0))
    np.testing.assert_allclose(
        png.to_original(np.array([[96, 54, 960, 540]])), [[160, 90, 1600, 900]], rtol=1e-6
    )
    np.testing.assert_allclose(png.to_pixels((160, 90, 1600, 900)), (96, 54, 960, 540), rtol=1e-6)
    # A 6300 x 6300 PNG of a few KB (the memory attack) holds 540 x 540 pixels.
    flat = decode_image(_encoded(Image.new("RGB", (6300, 6300), (9, 9, 9)), "PNG"), "x", 10**8, fit)
    assert flat.pixels.shape == (540, 540, 3) and (flat.width, flat.height) == (6300, 6300)
    # JPEG: decoded at a reduced DCT scale, then to the same size; EXIF turns are applied.
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    turned = decode_image(_encoded(noise, "JPEG", exif=exif), "x", 10**8, fit)
    assert (turned.width, turned.height) == (900, 1600)
    assert turned.pixels.shape == (960, 540, 3)
    # Smaller than the model's size: kept as it is (the engine may enlarge it).
    small = decode_image(_encoded(Image.new("RGB", (300, 200)), "PNG"), "x", 10**8, fit)
    assert small.pixels.shape == (200, 300, 3)


def test_pixel_budget_is_never_exceeded() -> None:
    budget = PixelBudget(100)
    seen: list[int] = []

    async def decode(pixels: int) -> None:
        async with budget.hold(pixels):
            seen.append(budget.in_use)
            await asyncio.sleep(random.random() / 100)

    async def many() -> None:
        sizes = [random.randint(1, 100) for _ in range(60)] + [10_000]  # one over the budget
        await asyncio.gather(*(decode(size) for size in sizes))

    random.seed(0)
    asyncio.run(many())
    assert len(seen) == 61 and max(seen) <= 100 and budget.peak <= 100
    assert budget.peak > 100 // 2  # several held at once: it is a budget, not a mutex
    assert budget.in_use == 0


@pytest.fixture(scope="module")
def engine(overfit_run) -> Engine:
    engine = Engine(overfit_run.onnx_path, ["cpu"], min_score=0.2)
    engine.warm_up()
    return engine


def test_model_card_mismatch_and_missing_files(overfit_run, tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    shutil.copy(overfit_run.onnx_path, model)
    with pytest.raises(ModelError, match="model card"):
        load_model_card(model)
    card = json.loads(overfit_run.onnx_path.with_name("model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**card, "onnx_sha256": "0" * 64}))
    with pytest.raises(ModelError, match="do not belong together"):
        load_model_card(model)
    with pytest.raises(ModelError, match="not found"):
        load_model_card(tmp_path / "absent.onnx")
    (tmp_path / "model.json").write_text(json.dumps({**card, "search_score_threshold": 0.3}))
    assert load_model_card(model).card.score_threshold == 0.3


def test_boxes_come_back_in_original_pixels(engine: Engine, overfit_run) -> None:
    """The same content at twice the size reaches the network at the same input size, so
    its detections must come back at exactly twice the coordinates."""
    record = next(r for r in PRW(overfit_run.root, "train").images if len(r.boxes))
    image = load_rgb(record.path)
    height, width = image.shape[:2]
    double = np.asarray(Image.fromarray(image).resize((width * 2, height * 2), Image.NEAREST))
    small, large = engine.detect(image), engine.detect(double)
    assert len(small.boxes) >= 1
    assert np.all(small.boxes >= 0) and np.all(small.boxes[:, 2:] <= [width, height])
    # Resampling shifts borderline detections in and out; the confident ones must agree.
    confident = small.scores >= 0.3
    assert confident.any()
    pairs = box_iou(small.boxes[confident] * 2, large.boxes)
    assert np.all(pairs.max(axis=1) >= 0.75), pairs  # a wrong scale gives ~0
    norms = np.linalg.norm(small.embeddings, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-3)
    assert small.embeddings.shape[1] == engine.embedding_dim


def test_query_uses_the_detection_or_falls_back_to_the_box(engine: Engine, overfit_run) -> None:
    record = next(r for r in PRW(overfit_run.root, "train").images if len(r.boxes))
    image = load_rgb(record.path)
    found = engine.detect(image)
    best = int(np.argmax(found.scores))
    matched = engine.embed_query(image, found.boxes[best])
    assert matched.source == "detection" and matched.iou == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(matched.embedding, found.embeddings[best], atol=1e-5)
    blank = np.zeros((128, 64, 3), np.uint8)
    fallback = engine.embed_query(blank)
    assert fallback.source == "box" and fallback.iou is None
    np.testing.assert_array_equal(fallback.box, [0, 0, 64, 128])
    assert abs(np.linalg.norm(fallback.embedding) - 1.0) < 1e-3
