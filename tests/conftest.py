"""Shared fixtures: `tiny` overfitted on a few synthetic frames and its ONNX export, and frames
of the bundled demo model's kind.

The model and export tests reuse one run (`overfit_run`) so it trains once per session. A test
module that needs torch says so with `pytestmark = pytest.mark.torch`; with PS_NO_TORCH=1
(`make test-fast`) torch cannot be imported and those modules are not collected, so the rest is
proved to run without it. torch is imported only where a fixture needs it.
"""

from __future__ import annotations

import importlib.abc
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from inference.preprocess import load_rgb, resize_and_pad
from training.data import PRW, GalleryEntry, Query
from training.synth import generate

NO_TORCH = os.environ.get("PS_NO_TORCH") == "1"


class _TorchBlocker(importlib.abc.MetaPathFinder):
    """Makes `import torch` fail as if it were not installed (a None in sys.modules would
    break libraries that look torch up there, e.g. scipy's array-API helpers)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(f"No module named {fullname!r} (PS_NO_TORCH=1)")
        return None


if NO_TORCH:
    sys.meta_path.insert(0, _TorchBlocker())
TORCH_MARK = re.compile(r"^pytestmark = .*pytest\.mark\.torch", re.MULTILINE)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if NO_TORCH and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        return bool(TORCH_MARK.search(collection_path.read_text())) or None
    return None


if TYPE_CHECKING:
    import torch

    from training.model import PersonSearchModel

FRAME_SIZE = (384, 216)  # synthetic frame width, height; padded to 384 x 224
DET_THRESH = 0.2  # search/detection score threshold (AlignPS's scripts use 0.2)
# Single-thread training is deterministic on one CPU model but not across models, so the run
# must overfit with room to spare on any of them: with 400 iterations an Intel Xeon (AVX-512)
# ended at detection recall 0.71 (seed 0) and 0.86 (seed 1), where an AMD EPYC passed; with 600
# the Xeon reached recall 1.0, mAP 0.97, top-1 0.94 (seed 0) and 1.0, 1.0, 1.0 (seed 1).
OVERFIT_ITERATIONS = 600


@dataclass
class OverfitRun:
    """A trained tiny model, the synthetic PRW-layout dataset it saw, and its ONNX export."""

    model: PersonSearchModel
    root: Path  # dataset root (PRW layout); the model was trained on its train split
    onnx_path: Path  # model card at onnx_path.with_name("model.json")
    seconds: float  # training time


def frame_tensors(dataset: PRW) -> torch.Tensor:
    """All frames of a split as one uint8 batch [N, 3, H, W] at scale 1, padded to 32."""
    import torch

    frames = [resize_and_pad(load_rgb(r.path), scale=1.0).image for r in dataset.images]
    return torch.from_numpy(np.stack(frames))


def train_tiny(
    dataset: PRW, iterations: int, batch: int = 2, seed: int = 0, lr: float = 2e-3
) -> PersonSearchModel:
    """Plain summed losses, AdamW, a cosine decay: enough to overfit a handful of frames."""
    import torch

    from training.model import build_model

    torch.manual_seed(seed)
    model = build_model("tiny", num_ids=dataset.num_ids, queue_size=16).train()
    images = frame_tensors(dataset)
    targets = [
        {"boxes": torch.from_numpy(r.boxes).float(), "pids": torch.from_numpy(r.pids)}
        for r in dataset.images
    ]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, lr, total_steps=iterations, pct_start=0.1
    )
    generator = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic, and 2 threads on a busy 2-core box run slower
    try:
        _fit(model, images, targets, optimizer, schedule, generator, iterations, batch)
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def _fit(model, images, targets, optimizer, schedule, generator, iterations, batch) -> None:
    import torch

    for _ in range(iterations):
        chosen = torch.randperm(len(images), generator=generator)[:batch]
        losses = model(images[chosen], [targets[i] for i in chosen])
        optimizer.zero_grad()
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        schedule.step()


def search_protocol(dataset: PRW) -> tuple[list[Query], list[list[GalleryEntry]]]:
    """Every labelled person in a frame queries the other frames (gt where that id appears)."""
    queries, galleries = [], []
    for record in dataset.images:
        for box, pid in zip(record.boxes, record.pids, strict=True):
            gallery = [
                GalleryEntry(other.name, _box_of(other, pid))
                for other in dataset.images
                if other.name != record.name
            ]
            if pid >= 0 and any(entry.gt_box is not None for entry in gallery):
                queries.append(Query(record.name, box, int(pid), record.camera))
                galleries.append(gallery)
    return queries, galleries


def _box_of(record, pid: int) -> np.ndarray | None:
    rows = np.flatnonzero(record.pids == pid)
    return record.boxes[rows[0]] if len(rows) else None


@pytest.fixture(scope="session")
def overfit_run(tmp_path_factory) -> OverfitRun:
    if NO_TORCH:
        pytest.fail("overfit_run trains with torch: mark the module `pytest.mark.torch`")
    from training.export import export_onnx

    root = generate(
        tmp_path_factory.mktemp("synth") / "prw",
        "prw",
        frames=16,
        identities=8,
        cameras=3,
        seed=0,
        size=FRAME_SIZE,
        test_fraction=0.5,
    )
    start = time.perf_counter()
    model = train_tiny(PRW(root, "train"), iterations=OVERFIT_ITERATIONS)
    seconds = time.perf_counter() - start
    onnx_path = tmp_path_factory.mktemp("model") / "model.onnx"
    card = {
        "dataset": "synthetic PRW (overfit test)",
        "max_size": list(FRAME_SIZE),  # trained at scale 1: serve at the frames' own size
        "search_score_threshold": DET_THRESH,
    }
    export_onnx(model, onnx_path, card_fields=card)
    return OverfitRun(model, root, onnx_path, seconds)


DEMO_MODEL = Path(__file__).resolve().parents[1] / "models" / "demo" / "model.onnx"


@pytest.fixture(scope="session")
def demo_frames(tmp_path_factory) -> list:
    """Synthetic frames of the bundled demo model's own kind (960x540, PRW layout), both
    splits, with their labelled people (training.data.ImageRecord)."""
    root = generate(
        tmp_path_factory.mktemp("demo-synth") / "prw",
        "prw",
        frames=14,
        identities=6,
        cameras=2,
        seed=11,
        size=(960, 540),
    )
    return [record for split in ("train", "test") for record in PRW(root, split).images]
