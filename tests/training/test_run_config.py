"""Reproducing a run's network from the command line: ``--model-option`` overrides resolved into
the RunConfig's ModelConfig, saved in config.json and read back as saved."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import pytest

from training.model.config import CONFIGS, ModelConfig
from training.run_config import OptionError, RunConfig
from training.train import build_parser

pytestmark = pytest.mark.torch

REPO = Path(__file__).resolve().parents[2]
COMMAND = "python -m training.galw"


def resolve(argv: list[str]) -> RunConfig:
    return RunConfig.from_arguments(build_parser().parse_args(argv))


def saved_and_read_back(config: RunConfig) -> RunConfig:
    """config.json's ``options``, as written and as --resume reads them."""
    record = json.loads(json.dumps(config.with_sizes((960, 540), (800, 1120)).to_record()))
    return RunConfig.from_record(record)


def test_the_focal_oim_row_of_the_results_is_a_command(tmp_path):
    # docs/RESULTS.md, "What made the AlignPS branch collapse": "focal OIM (the reference's
    # variant)": tiny, AdamW 2e-3, lr x0.1 at epoch 12 of 16, GALW
    config = resolve(
        ["--dataset", "prw", "--data-root", str(tmp_path), "--out", str(tmp_path / "run"),
         "--config", "tiny", "--model-option", "fcos_oim_focal=true",
         "--optimizer", "adamw", "--lr", "0.002", "--epochs", "16", "--lr-steps", "12"]
    )  # fmt: skip
    assert config.model_config == dataclasses.replace(CONFIGS["tiny"], fcos_oim_focal=True)
    assert config.model_options == (("fcos_oim_focal", True),) and config.config == "tiny"
    assert (config.optimizer, config.lr, config.lr_steps) == ("adamw", 0.002, (12,))
    assert config.weighting == "galw" and config.phases == ("probe", "main")
    record = config.to_record()
    assert record["model_config"]["fcos_oim_focal"] is True
    assert record["model_options"] == [["fcos_oim_focal", True]]
    assert saved_and_read_back(config) == config.with_sizes((960, 540), (800, 1120))


def test_the_demo_models_command_rebuilds_its_cards_network(tmp_path):
    card = json.loads((REPO / "models" / "demo" / "model.json").read_text())
    command = card["training"]["command"]
    assert command.startswith(COMMAND)
    argv = shlex.split(command.removeprefix(COMMAND))
    argv[argv.index("--data-root") + 1] = str(tmp_path)
    config = resolve(argv)
    assert config.model_config == ModelConfig.from_dict(card["config"])


def test_resume_uses_the_saved_network_even_if_its_named_config_changed(tmp_path, monkeypatch):
    argv = ["--dataset", "prw", "--data-root", str(tmp_path), "--out", str(tmp_path / "run"),
            "--config", "tiny", "--model-option", "fcos_queue_dims=64"]  # fmt: skip
    record = json.loads(json.dumps(resolve(argv).to_record()))
    monkeypatch.setitem(CONFIGS, "tiny", dataclasses.replace(CONFIGS["tiny"], neck_channels=64))
    read_back = RunConfig.from_record(record).model_config
    assert (read_back.neck_channels, read_back.fcos_queue_dims) == (32, 64)


def test_a_record_naming_an_unknown_config_is_refused():
    old = json.loads((REPO / "tests" / "data" / "old_run_config.json").read_text())["options"]
    with pytest.raises(OptionError, match="saved config 'r101'"):
        RunConfig.from_record({**old, "config": "r101"})
