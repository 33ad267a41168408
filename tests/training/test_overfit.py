"""`tiny` overfits a handful of synthetic frames: it finds and re-identifies the people it saw,
in PyTorch and through the exported ONNX graph."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from inference.card import OUTPUT_NAMES
from tests.conftest import DET_THRESH, frame_tensors, search_protocol
from training.data import PRW
from training.evaluate import evaluate_detection, evaluate_search

pytestmark = pytest.mark.torch

# (image [1,3,H,W] uint8, query boxes [Q,4]) -> (boxes, scores, det embeddings, box embeddings)
Runner = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, ...]]


def torch_runner(model) -> Runner:
    def run(image: np.ndarray, boxes: np.ndarray):
        with torch.no_grad():
            out = model(torch.from_numpy(image), query_boxes=torch.from_numpy(boxes))
        det = F.normalize(torch.cat([out["emb_alignps"], out["emb_roi"]], 1), dim=1)
        box = F.normalize(torch.cat([out["query_alignps"], out["query_roi"]], 1), dim=1)
        return out["boxes"].numpy(), out["scores"].numpy(), det.numpy(), box.numpy()

    return run


def onnx_runner(path) -> Runner:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = list(OUTPUT_NAMES)
    return lambda image, boxes: tuple(session.run(names, {"image": image, "boxes": boxes}))


def search_results(dataset: PRW, run: Runner) -> tuple[dict, list, list]:
    """Results in the evaluator's format over the train frames, and the search protocol."""
    frames = {
        r.name: f[None].numpy() for r, f in zip(dataset.images, frame_tensors(dataset), strict=True)
    }
    results: dict = {"gallery": {}, "queries": []}
    for name, frame in frames.items():
        boxes, scores, embeddings, _ = run(frame, np.zeros((0, 4), np.float32))
        results["gallery"][name] = {"boxes": boxes, "scores": scores, "embeddings": embeddings}
    queries, galleries = search_protocol(dataset)
    for query in queries:
        box = query.box[None].astype(np.float32)
        results["queries"].append({"embedding": run(frames[query.image], box)[3][0]})
    return results, queries, galleries


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_tiny_overfits_synthetic_frames(overfit_run, backend):
    dataset = PRW(overfit_run.root, "train")
    run = (
        torch_runner(overfit_run.model)
        if backend == "torch"
        else onnx_runner(overfit_run.onnx_path)
    )
    results, queries, galleries = search_results(dataset, run)
    detection = evaluate_detection(dataset.images, results, det_thresh=DET_THRESH)
    search = evaluate_search(queries, galleries, results, det_thresh=DET_THRESH)
    assert len(queries) >= 8
    assert detection["recall"] >= 0.9, detection
    # The training differs between CPU models (tests/conftest.py, OVERFIT_ITERATIONS); the
    # bars leave room for one or two misses while an untrained network (top-1 near 0.1) fails.
    assert search["mAP"] >= 0.85, search
    assert search["top1"] >= 0.8, search
