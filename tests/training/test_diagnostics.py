"""Collapse figures of the re-id branches (logged per epoch by the training loop)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.model import build_model
from training.model.diagnostics import collapsed_branches, embedding_spread
from training.plots import plot_embedding_spread

pytestmark = pytest.mark.torch

torch.set_num_threads(2)


def _frames():
    torch.manual_seed(0)
    images = [torch.randint(0, 256, (1, 3, 128, 192), dtype=torch.uint8) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[10.0, 10.0, 50.0, 120.0], [80.0, 5.0, 130.0, 110.0]]),
         "pids": torch.tensor([0, 1])},
        {"boxes": torch.tensor([[20.0, 15.0, 70.0, 125.0]]), "pids": torch.tensor([-1])},
    ]  # fmt: skip
    return images, targets


def test_spread_is_measured_on_both_branches_and_keeps_the_training_mode():
    model = build_model("tiny", num_ids=3, queue_size=4).train()
    images, targets = _frames()
    spread = embedding_spread(model, images, targets)
    assert model.training
    for branch in ("alignps", "roi"):
        assert -1.0 <= spread[f"{branch}_cosine_between_people"] <= 1.0
        assert math.isnan(spread[f"{branch}_lut_cosine"])  # no row written yet


def test_identical_lookup_rows_read_as_collapsed():
    model = build_model("tiny", num_ids=3, queue_size=4)
    row = F.normalize(torch.randn(model.fcos_oim.lut.shape[1]), dim=0)
    model.fcos_oim.lut[:] = row
    model.roi_oim.lut[0] = F.normalize(torch.randn(model.roi_oim.lut.shape[1]), dim=0)
    model.roi_oim.lut[1] = -model.roi_oim.lut[0]
    images, targets = _frames()
    spread = embedding_spread(model, images, targets)
    assert abs(spread["alignps_lut_cosine"] - 1.0) < 1e-5
    assert abs(spread["roi_lut_cosine"] + 1.0) < 1e-5


def test_collapsed_branches_names_the_branches_over_the_threshold():
    spread = {"alignps_cosine_between_people": 0.995, "roi_cosine_between_people": 0.26}
    assert collapsed_branches(spread) == ["alignps"]
    assert collapsed_branches({"roi_cosine_between_people": float("nan")}) == []


def test_spread_plot_is_drawn_from_the_log_records(tmp_path):
    records = [
        {"event": "step", "epoch": 0},
        *(
            {"event": "embedding_spread", "epoch": epoch, "alignps_cosine_between_people": c,
             "roi_cosine_between_people": c / 2, "alignps_lut_cosine": c,
             "roi_lut_cosine": float("nan")}
            for epoch, c in enumerate([0.9, 0.5, 0.2])
        ),
    ]  # fmt: skip
    path = tmp_path / "spread.png"
    plot_embedding_spread(records, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no embedding_spread"):
        plot_embedding_spread(records[:1], tmp_path / "none.png")
