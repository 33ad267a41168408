"""The checkpoint header: written and read as one type; older and broken checkpoints."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from training.checkpoint import CheckpointError, CheckpointHeader, save_checkpoint
from training.export import load_checkpoint_model, main
from training.model import build_model
from training.model.config import CONFIGS

pytestmark = pytest.mark.torch

HEADER = CheckpointHeader(
    config=dataclasses.replace(CONFIGS["tiny"], crop_queries=2),
    num_ids=3,
    queue_size=4,
    attr_dim=0,
    dataset="prw",
    max_size=(320, 192),
    metrics={"mAP": 0.5, "det_thresh": 0.15},
)


def test_the_header_round_trips_through_a_checkpoint(tmp_path):
    model = build_model(HEADER.config, HEADER.num_ids, HEADER.queue_size)
    path = save_checkpoint({**HEADER.to_state(), "model": model.state_dict()}, tmp_path / "c.pth")
    reloaded, header = load_checkpoint_model(path)
    assert header == HEADER and reloaded.config.crop_queries == 2


def test_a_checkpoint_of_an_older_version_takes_the_defaults():
    # the config by name and no attr_dim, dataset or size (checkpoints before the header)
    header = CheckpointHeader.from_state({"config": "tiny", "num_ids": 3, "queue_size": 4}, "old")
    assert header == CheckpointHeader(CONFIGS["tiny"], num_ids=3, queue_size=4)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_ids": None}, r"not a model checkpoint: it lacks \['num_ids'\]"),
        ({"max_size": None, "max_sizes": [320, 192]}, "'max_sizes'.*misspelling of 'max_size'"),
        ({"config": "r101"}, "cannot rebuild the network config: unknown model config 'r101'"),
        ({"config": {"name": "tiny"}}, "cannot rebuild the network config"),
    ],
)
def test_a_missing_misspelt_or_broken_key_is_a_clear_error(change, message):
    state = {**HEADER.to_state(), "model": {}, **change}
    state = {key: value for key, value in state.items() if value is not None}
    with pytest.raises(CheckpointError, match=message):
        CheckpointHeader.from_state(state, "ckpt.pth")


def test_export_names_what_a_checkpoint_lacks(tmp_path, capsys):
    path = save_checkpoint({"model": {}}, tmp_path / "weights_only.pth")
    with pytest.raises(SystemExit) as exit_:
        main(["--checkpoint", str(path), "--out", str(tmp_path / "model.onnx")])
    assert exit_.value.code == 2
    assert "weights_only.pth: not a model checkpoint: it lacks" in capsys.readouterr().err
    header_only = save_checkpoint(HEADER.to_state(), tmp_path / "header.pth")
    with pytest.raises(CheckpointError, match="holds no weights"):
        load_checkpoint_model(header_only)
    assert torch.load(header_only, weights_only=False)["config"]["crop_queries"] == 2
