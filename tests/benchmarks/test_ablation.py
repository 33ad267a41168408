"""`python -m benchmarks.ablation`: the variant table, the run order and dependency, resuming a
partly done set, and one real two-variant set on a handful of frames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import ablation
from training.model.tasks import REFERENCE_FIXED_WEIGHTS, TASKS
from training.synth import generate

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def tiny_prw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ablation") / "prw"
    return generate(root, "prw", frames=8, identities=4, cameras=2, seed=3, size=(320, 180))


def test_the_variants_differ_only_in_weighting_and_grouping():
    names = ablation.VARIANT_NAMES
    assert len(set(names)) == len(names)
    assert {"fixed", "ulwf", "rulwf", "ulwf_slope", "galw", "galw_branch", "galw_random"} <= set(
        names
    )
    for variant in ablation.VARIANTS:
        assert variant.options[:2] in (
            ("--weighting", "fixed"),
            ("--weighting", "ulwf"),
            ("--weighting", "rulwf"),
            ("--weighting", "galw"),
        ), variant
        # nothing of the recipe or budget is set per variant
        assert not {"--epochs", "--lr", "--seed", "--config"} & set(variant.options)
    # a variant that reuses another's groups comes after it in the run order
    order = list(names)
    for variant in ablation.VARIANTS:
        if variant.groups_from is not None:
            assert order.index(variant.groups_from) < order.index(variant.name)


def test_plan_runs_variant_by_variant_over_the_seeds(tmp_path):
    variants = ablation.select_variants("fixed,galw,ulwf_slope", with_attributes=False)
    jobs = ablation.plan(tmp_path, variants, [0, 1])
    assert [(job.variant.name, job.seed) for job in jobs] == [
        ("galw", 0), ("galw", 1), ("fixed", 0), ("fixed", 1), ("ulwf_slope", 0), ("ulwf_slope", 1),
    ]  # fmt: skip
    assert jobs[3].run == tmp_path / "seed1" / "fixed"
    with pytest.raises(Exception, match="reuses the groups of galw"):
        ablation.select_variants("fixed,ulwf_slope", with_attributes=False)
    with pytest.raises(Exception, match="unknown"):
        ablation.select_variants("fixed,gawl", with_attributes=False)
    assert "galw_attr" not in [v.name for v in ablation.select_variants("all", False)]
    assert "galw_attr" in [v.name for v in ablation.select_variants("all", True)]


def test_commands_share_the_recipe_and_budget_and_resume_a_started_run(tmp_path):
    budget = ablation.BUDGETS["smoke"]
    variants = ablation.select_variants("all", with_attributes=False)
    jobs = ablation.plan(tmp_path / "out", variants, [5])
    lines = {
        job.variant.name: ablation.command(job, tmp_path, budget, tmp_path / "out") for job in jobs
    }

    def value(line, option):
        return line[line.index(option) + 1]

    for line in lines.values():
        assert value(line, "--seed") == "5"
        assert value(line, "--epochs") == str(budget.epochs)
        assert value(line, "--max-size") == budget.max_size
        assert value(line, "--lr") == "0.002"
    slope_groups = tmp_path / "out" / "seed5" / "galw" / "groups.json"
    assert value(lines["ulwf_slope"], "--grouping") == str(slope_groups)
    assert value(lines["ulwf_slope"], "--weighting") == "ulwf"
    assert value(lines["galw_random"], "--grouping") == "random"
    assert "--grouping" not in lines["rulwf"] and "--grouping" not in lines["fixed"]

    started = jobs[0]
    started.run.mkdir(parents=True)
    (started.run / "config.json").write_text("{}")
    line = ablation.command(started, tmp_path, budget, tmp_path / "out")
    assert "--resume" in line and "--weighting" not in line


def test_a_two_variant_set_runs_summarises_and_is_skipped_once_done(tiny_prw, tmp_path, capsys):
    out, artefacts = tmp_path / "runs", tmp_path / "docs"
    argv = [
        "--data-root", str(tiny_prw), "--budget", "smoke", "--seeds", "0",
        "--variants", "fixed,rulwf", "--out", str(out), "--artefacts", str(artefacts),
    ]  # fmt: skip
    assert ablation.main(argv) == 0
    for name in ("fixed", "rulwf"):
        run = out / "seed0" / name
        assert (run / "metrics.json").is_file()
        assert not (run / "model.onnx").exists()  # the set does not export
        assert (artefacts / "seed0" / name / "metrics.json").is_file()
        assert not list((artefacts / "seed0" / name).glob("*.pth"))
    fixed_config = json.loads((out / "seed0" / "fixed" / "config.json").read_text())["options"]
    assert fixed_config["fixed_weights"] == REFERENCE_FIXED_WEIGHTS
    assert fixed_config["epochs"] == ablation.BUDGETS["smoke"].epochs
    summary = json.loads((out / "summary.json").read_text())
    for name in ("fixed", "rulwf"):
        seed0 = summary["variants"][name]["seeds"]["0"]
        metrics = json.loads((out / seed0["metrics"]).read_text())
        assert seed0["concat_mAP"] == metrics["concat"]["all_cameras"]["mAP"]
        assert summary["variants"][name]["stats"]["concat_mAP"]["std"] == 0.0
    assert summary["variants"]["rulwf"]["groups"]["0"] == [[task] for task in TASKS]
    assert set(summary["variants"]["rulwf"]["seeds"]["0"]["final_sigmas"]) == set(TASKS)
    assert "final_sigmas" not in summary["variants"]["fixed"]["seeds"]["0"]
    assert set(summary["variants"]["fixed"]["seeds"]["0"]["last_epoch_losses"]) == set(TASKS)
    assert (out / "sigmas.png").is_file()  # rulwf has sigmas; fixed has none
    assert (out / "results.png").is_file()
    assert "| fixed weights (reference) (`fixed`) | 1 |" in (out / "summary.md").read_text()

    stamp = (out / "seed0" / "fixed" / "metrics.json").stat().st_mtime_ns
    capsys.readouterr()
    assert ablation.main(argv) == 0
    assert "done, skipped" in capsys.readouterr().out
    assert (out / "seed0" / "fixed" / "metrics.json").stat().st_mtime_ns == stamp
