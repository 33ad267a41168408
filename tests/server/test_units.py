"""Server parts in-process: settings, form parsing, the decode budget."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from inference.boxes import box_iou
from server.budget import PixelBudget
from server.forms import AskedBox, parse_box, parse_timestamp, per_file
from server.problems import Problem
from server.settings import Settings


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
