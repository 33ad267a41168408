"""The ONNX Runtime engine on the bundled demo model (no torch): model card checks, boxes in the
image's own pixels whether it is given as an array or as a decoded (shrunk) upload, and the
query's choice between a detection and the asked box."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference.boxes import box_iou
from inference.card import ModelError, load_model_card
from inference.engine import Engine
from inference.imaging import decode_image
from inference.preprocess import load_rgb
from tests.conftest import DEMO_MODEL


@pytest.fixture(scope="module")
def engine() -> Engine:
    engine = Engine(DEMO_MODEL, ["cpu"])
    engine.warm_up()
    return engine


@pytest.fixture(scope="module")
def crowded(demo_frames) -> np.ndarray:
    """The demo frame with the most labelled people."""
    return load_rgb(max(demo_frames, key=lambda record: len(record.boxes)).path)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_model_card_mismatch_and_missing_files(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    shutil.copy(DEMO_MODEL, model)
    with pytest.raises(ModelError, match="model card"):
        load_model_card(model)
    card = json.loads(DEMO_MODEL.with_name("model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**card, "onnx_sha256": "0" * 64}))
    with pytest.raises(ModelError, match="do not belong together"):
        load_model_card(model)
    with pytest.raises(ModelError, match="not found"):
        load_model_card(tmp_path / "absent.onnx")
    (tmp_path / "model.json").write_text(json.dumps({**card, "search_score_threshold": 0.3}))
    assert load_model_card(model).card.score_threshold == 0.3


def test_boxes_come_back_in_the_images_own_pixels(engine: Engine, crowded: np.ndarray) -> None:
    """Twice the size reaches the network at the same input size, so detections come back at
    twice the coordinates; and an upload decoded straight to the model's size (what the
    service and the bulk ingest hold) answers in the upload's pixels, as the array does."""
    height, width = crowded.shape[:2]
    double = np.asarray(Image.fromarray(crowded).resize((width * 2, height * 2), Image.NEAREST))
    small, large = engine.detect(crowded), engine.detect(double)
    assert len(small.boxes) >= 2
    assert np.all(small.boxes >= 0) and np.all(small.boxes[:, 2:] <= [width, height])
    confident = small.scores >= 0.3
    assert confident.any()
    pairs = box_iou(small.boxes[confident] * 2, large.boxes)
    assert np.all(pairs.max(axis=1) >= 0.75), pairs  # a wrong scale gives ~0
    np.testing.assert_allclose(np.linalg.norm(small.embeddings, axis=1), 1.0, atol=1e-3)
    assert small.embeddings.shape[1] == engine.embedding_dim

    upload = decode_image(_png(double), "double", 10**8, engine.card.max_size)
    assert upload.shrunk and (upload.width, upload.height) == (width * 2, height * 2)
    (decoded,) = engine.detect_batch([upload])
    np.testing.assert_allclose(decoded.boxes, large.boxes, atol=0.05)
    np.testing.assert_allclose(decoded.scores, large.scores, atol=1e-5)
    # a query box in the upload's pixels lands on the same person as in the array
    best = int(np.argmax(large.scores))
    asked = engine.embed_query(upload, large.boxes[best])
    assert asked.source == "detection" and asked.iou == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(asked.box, large.boxes[best], atol=0.05)


def test_query_uses_the_detection_or_falls_back_to_the_box(
    engine: Engine, crowded: np.ndarray
) -> None:
    found = engine.detect(crowded)
    best = int(np.argmax(found.scores))
    matched = engine.embed_query(crowded, found.boxes[best])
    assert matched.source == "detection" and matched.iou == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(matched.embedding, found.embeddings[best], atol=1e-5)
    blank = np.zeros((128, 64, 3), np.uint8)
    fallback = engine.embed_query(blank)
    assert fallback.source == "box" and fallback.iou is None
