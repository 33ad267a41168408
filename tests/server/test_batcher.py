"""The service's dynamic batcher: batches close when full, when the wait runs out or at close;
batched detections equal unbatched ones (the real engine on the bundled demo model)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from inference.engine import Engine
from inference.preprocess import load_rgb
from server.batcher import Batcher, BatcherClosed, BatchRecord
from training.synth import generate

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo" / "model.onnx"
PATIENCE_S = 3600.0  # a wait no test survives: reaching the end proves it was not waited out


def doubled(items: list[int]) -> list[int]:
    return [2 * item for item in items]


def test_a_full_batch_runs_without_waiting_for_more():
    batcher = Batcher(doubled, max_batch=4, max_wait_s=PATIENCE_S)
    futures = [batcher.submit(i) for i in range(4)]
    assert [f.result(timeout=60) for f in futures] == [0, 2, 4, 6]
    batcher.close()
    assert batcher.history == [BatchRecord(4, "full")]


def test_a_batch_waits_for_more_until_closed():
    batcher = Batcher(doubled, max_batch=8, max_wait_s=PATIENCE_S)
    futures = [batcher.submit(i) for i in range(3)]
    assert not any(f.done() for f in futures)  # still waiting for the batch to fill
    batcher.close()
    assert [f.result(timeout=0) for f in futures] == [0, 2, 4]
    assert batcher.history == [BatchRecord(3, "closing")]
    with pytest.raises(BatcherClosed):
        batcher.submit(3)


def test_no_wait_batches_only_what_is_already_queued():
    started, release = threading.Event(), threading.Event()

    def gated(items: list[int]) -> list[int]:
        started.set()
        release.wait(timeout=60)
        return doubled(items)

    batcher = Batcher(gated, max_batch=8, max_wait_s=0.0)
    first = batcher.submit(0)
    assert started.wait(timeout=60)  # the first batch runs alone, nothing else was queued
    later = [batcher.submit(i) for i in (1, 2, 3)]
    release.set()
    assert [f.result(timeout=60) for f in [first, *later]] == [0, 2, 4, 6]
    batcher.close()
    assert batcher.history == [BatchRecord(1, "waited"), BatchRecord(3, "waited")]


def test_a_failing_item_fails_alone():
    def strict(items: list[int]) -> list[int]:
        if any(item < 0 for item in items):
            raise ValueError("negative")
        return doubled(items)

    batcher = Batcher(strict, max_batch=3, max_wait_s=PATIENCE_S)
    futures = [batcher.submit(i) for i in (1, -1, 2)]
    assert futures[0].result(timeout=60) == 2 and futures[2].result(timeout=60) == 4
    with pytest.raises(ValueError, match="negative"):
        futures[1].result(timeout=60)
    batcher.close()


def test_batched_detections_equal_unbatched(tmp_path):
    root = generate(tmp_path / "prw", "prw", frames=4, identities=4, cameras=2, seed=11,
                    size=(480, 270))  # fmt: skip
    frames = [load_rgb(path) for path in sorted((root / "frames").glob("*.jpg"))]
    engine = Engine(DEMO, ["cpu"], threads=1)
    batcher = Batcher(engine.detect_batch, max_batch=len(frames), max_wait_s=PATIENCE_S)
    futures = [batcher.submit(frame) for frame in frames]
    batched = [f.result(timeout=120) for f in futures]
    batcher.close()
    assert batcher.history == [BatchRecord(len(frames), "full")]
    assert sum(len(found.scores) for found in batched) > 0
    for frame, together in zip(frames, batched, strict=True):
        alone = engine.detect(frame)
        np.testing.assert_allclose(together.boxes, alone.boxes, atol=1e-3)
        np.testing.assert_allclose(together.scores, alone.scores, atol=1e-5)
        np.testing.assert_allclose(together.embeddings, alone.embeddings, atol=1e-5)
