"""Tests of the galw package: weighting formulas, gradient probe, grouping, CLI, plots."""

import copy
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from galw import (
    RULWF,
    ULWF,
    FixedWeighting,
    GalwFileError,
    GradientHistory,
    GradientProbe,
    GroupedUncertainty,
    build_grouping,
    build_weighting,
    compute_slopes,
    group_by_branch,
    group_randomly,
    group_tasks,
    load_grouping,
    slope_score,
    slope_scores,
)
from galw.cli import main as cli_main

pytestmark = pytest.mark.torch

KINDS = {"a": "cls", "b": "reg", "c": "reg"}


def set_sigmas(weighting: GroupedUncertainty, sigmas: list[float]) -> None:
    with torch.no_grad():
        weighting.log_var.copy_(torch.log(torch.tensor(sigmas) ** 2))


def sigma_gradients(weighting: GroupedUncertainty, losses: dict) -> tuple[float, list[float]]:
    """Loss value and dL/dsigma per group, from the gradient w.r.t. log sigma^2."""
    weighting.zero_grad()
    total = weighting(losses)
    total.backward()
    sigma = weighting.sigma_values()
    # log_var = 2 log sigma, so dL/dsigma = dL/dlog_var * 2 / sigma
    return total.item(), (weighting.log_var.grad * 2 / sigma).tolist()


def scalar_losses(values: dict[str, float]) -> dict[str, torch.Tensor]:
    return {task: torch.tensor(value) for task, value in values.items()}


# --- weighting -----------------------------------------------------------------------------


def test_ulwf_value_and_sigma_gradient_match_hand_computation():
    weighting = ULWF(["a", "b"], KINDS)
    set_sigmas(weighting, [0.8, 1.5])
    value, grads = sigma_gradients(weighting, scalar_losses({"a": 0.7, "b": 1.3}))
    expected = 0.7 / (1 * 0.8**2) + math.log(0.8) + 1.3 / (2 * 1.5**2) + math.log(1.5)
    assert value == pytest.approx(expected, rel=1e-6)
    # d/dsigma [L / (k sigma^2) + log sigma] = -2 L / (k sigma^3) + 1 / sigma
    assert grads[0] == pytest.approx(-2 * 0.7 / 0.8**3 + 1 / 0.8, rel=1e-5)
    assert grads[1] == pytest.approx(-2 * 1.3 / (2 * 1.5**3) + 1 / 1.5, rel=1e-5)
    assert weighting.sigmas() == pytest.approx({"a": 0.8, "b": 1.5})
    assert weighting.weights() == pytest.approx({"a": 1 / 0.64, "b": 1 / (2 * 2.25)})


def test_rulwf_adds_lambda_abs_term_and_its_subgradient():
    lam = 0.5
    weighting = RULWF(["a", "b", "c"], KINDS, lam=lam)
    set_sigmas(weighting, [0.8, 1.5, 1.0])
    losses = {"a": 0.7, "b": 1.3, "c": 0.4}
    value, grads = sigma_gradients(weighting, scalar_losses(losses))
    sigmas, kinds = [0.8, 1.5, 1.0], [1, 2, 2]
    expected = sum(
        loss / (k * s**2) + math.log(s) + lam * abs(s - 1)
        for loss, s, k in zip(losses.values(), sigmas, kinds, strict=True)
    )
    assert value == pytest.approx(expected, rel=1e-6)
    assert grads[0] == pytest.approx(-2 * 0.7 / 0.8**3 + 1 / 0.8 - lam, rel=1e-5)
    assert grads[1] == pytest.approx(-2 * 1.3 / (2 * 1.5**3) + 1 / 1.5 + lam, rel=1e-5)
    # at sigma = 1 the subgradient of |sigma - 1| taken is 0
    assert grads[2] == pytest.approx(-2 * 0.4 / 2 + 1, rel=1e-5)


def test_grouped_tasks_share_one_sigma():
    weighting = GroupedUncertainty([["a", "b"], ["c"]], KINDS, lam=1.0)
    set_sigmas(weighting, [1.2, 0.9])
    value, grads = sigma_gradients(weighting, scalar_losses({"a": 0.7, "b": 1.3, "c": 0.4}))
    inner = 0.7 / 1 + 1.3 / 2
    expected = inner / 1.2**2 + math.log(1.2) + 0.2 + 0.4 / (2 * 0.81) + math.log(0.9) + 0.1
    assert value == pytest.approx(expected, rel=1e-6)
    assert grads[0] == pytest.approx(-2 * inner / 1.2**3 + 1 / 1.2 + 1, rel=1e-5)
    assert grads[1] == pytest.approx(-2 * 0.4 / (2 * 0.9**3) + 1 / 0.9 - 1, rel=1e-5)
    assert weighting.sigmas() == pytest.approx({"a+b": 1.2, "c": 0.9})
    assert weighting.weights()["b"] == pytest.approx(1 / (2 * 1.44))


def test_loss_gradient_equals_reported_weight():
    weighting = GroupedUncertainty([["a", "c"], ["b"]], KINDS, lam=1.0)
    set_sigmas(weighting, [0.7, 1.9])
    losses = {task: torch.tensor(1.0, requires_grad=True) for task in KINDS}
    weighting(losses).backward()
    for task, weight in weighting.weights().items():
        assert losses[task].grad.item() == pytest.approx(weight, rel=1e-6)


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_sigma_converges_to_the_minimiser(lam):
    # For one cls task with constant loss L, the minimum of L / sigma^2 + log sigma
    # + lam |sigma - 1| over sigma > 1 solves sigma^3 lam + sigma^2 - 2 L = 0.
    loss = 2.0
    weighting = RULWF(["a"], KINDS, lam=lam) if lam else ULWF(["a"], KINDS)
    optimiser = torch.optim.Adam(weighting.parameters(), lr=0.05)
    for _ in range(600):
        optimiser.zero_grad()
        weighting({"a": torch.tensor(loss)}).backward()
        optimiser.step()
    roots = np.roots([lam, 1.0, 0.0, -2 * loss]) if lam else np.array([math.sqrt(2 * loss)])
    expected = max(r.real for r in roots if abs(r.imag) < 1e-9 and r.real > 1)
    assert weighting.sigmas()["a"] == pytest.approx(expected, rel=1e-3)


def test_fixed_weighting_and_factory():
    fixed = build_weighting("fixed", ["a", "b"], KINDS, fixed={"a": 2.0, "b": 0.5})
    assert isinstance(fixed, FixedWeighting)
    assert fixed(scalar_losses({"a": 1.5, "b": 4.0})).item() == pytest.approx(5.0)
    assert fixed.sigmas() == {}
    tasks = list(KINDS)
    assert build_weighting("fixed", tasks, KINDS).weights() == dict.fromkeys(tasks, 1.0)
    assert build_weighting("ulwf", tasks, KINDS).lam == 0.0
    assert build_weighting("rulwf", tasks, KINDS, lam=0.3).lam == 0.3
    galw = build_weighting("galw", tasks, KINDS, groups=[["c"], ["a", "b"]])
    assert galw.groups == [["c"], ["a", "b"]] and galw.lam == 1.0
    assert build_weighting("ulwf", tasks, KINDS, groups=[["a", "b", "c"]]).sigmas() == {
        "a+b+c": 1.0
    }


def test_weighting_errors_are_clear():
    tasks = list(KINDS)
    with pytest.raises(ValueError, match="needs groups"):
        build_weighting("galw", tasks, KINDS)
    with pytest.raises(ValueError, match="missing \\['c'\\]"):
        build_weighting("galw", tasks, KINDS, groups=[["a", "b"]])
    with pytest.raises(ValueError, match="unknown weighting"):
        build_weighting("equal", tasks, KINDS)
    with pytest.raises(ValueError, match="kind 'box'"):
        ULWF(["a"], {"a": "box"})
    with pytest.raises(KeyError, match="missing \\['b'\\], unknown \\['z'\\]"):
        ULWF(["a", "b"], KINDS)(scalar_losses({"a": 1.0, "z": 1.0}))
    with pytest.raises(ValueError, match="scalar"):
        ULWF(["a"], KINDS)({"a": torch.ones(3)})


# --- gradient probe ------------------------------------------------------------------------


def test_probe_magnitude_matches_hand_computation():
    theta = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    phi = nn.Parameter(torch.tensor([[3.0, 4.0]]))
    x = torch.tensor([0.3, 0.1, 2.0])
    probe = GradientProbe([("theta", theta), ("phi", phi)], ["a", "b"], KINDS)
    losses = {"a": (theta @ x) ** 2, "b": 0.5 * (phi**2).sum() + (theta @ x) ** 2}
    taken = probe.record(losses)
    grad_theta = 2 * (theta @ x).item() * x  # d (theta.x)^2 / d theta
    # task a does not reach phi: that tensor counts as a zero gradient in the mean
    assert taken["a"] == pytest.approx(grad_theta.norm().item() / 2, rel=1e-6)
    assert taken["b"] == pytest.approx((grad_theta.norm().item() + 5.0) / 2, rel=1e-6)


def test_probe_averages_per_epoch_and_skips_losses_without_graph():
    w = nn.Parameter(torch.tensor([1.0]))
    probe = GradientProbe([w], ["a", "b"], KINDS, every=2)
    assert [probe.should_sample(i) for i in range(4)] == [True, False, True, False]
    probe.record({"a": 2 * w.sum(), "b": torch.tensor(0.0)})
    probe.record({"a": 4 * w.sum(), "b": torch.tensor(0.0), "extra": torch.tensor(1.0)})
    assert probe.end_epoch()["a"] == pytest.approx(3.0)
    probe.record({"a": w.sum(), "b": 3 * w.sum()})
    probe.end_epoch()
    assert probe.magnitudes["a"] == pytest.approx([3.0, 1.0])
    assert math.isnan(probe.magnitudes["b"][0]) and probe.magnitudes["b"][1] == pytest.approx(3.0)
    with pytest.raises(RuntimeError, match="no sample"):
        probe.end_epoch()
    restored = GradientProbe([w], ["a", "b"], KINDS)
    restored.load_state_dict(copy.deepcopy(probe.state_dict()))
    assert restored.history().to_dict() == probe.history().to_dict()


def test_probe_grad_scale_is_divided_out_and_overflow_skipped():
    w = nn.Parameter(torch.tensor([1.0, 1.0]))
    probe = GradientProbe([w], ["a"], KINDS)
    assert probe.record({"a": (w * 3).sum()}, grad_scale=1024.0)["a"] == pytest.approx(
        3 * math.sqrt(2)
    )
    assert probe.record({"a": (w * float("inf")).sum()}) == {}


def make_model_and_batch():
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8))
    heads = nn.ModuleDict({"a": nn.Linear(8, 2), "b": nn.Linear(8, 1)})
    model = nn.ModuleDict({"trunk": trunk, "heads": heads})
    inputs, labels, targets = torch.randn(5, 6), torch.randint(0, 2, (5,)), torch.randn(5, 1)
    return model, (inputs, labels, targets)


def compute_losses(model, batch):
    inputs, labels, targets = batch
    features = model["trunk"](inputs)
    return {
        "a": nn.functional.cross_entropy(model["heads"]["a"](features), labels),
        "b": nn.functional.mse_loss(model["heads"]["b"](features), targets),
    }


def train_step(model, weighting, optimiser, batch, probe=None):
    losses = compute_losses(model, batch)
    if probe is not None:
        probe.record(losses)
    optimiser.zero_grad()
    weighting(losses).backward()
    optimiser.step()


def test_probe_leaves_parameters_grads_and_optimiser_untouched():
    model, batch = make_model_and_batch()
    weighting = RULWF(["a", "b"], KINDS)
    params = [*model.parameters(), *weighting.parameters()]
    optimiser = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    train_step(model, weighting, optimiser, batch)  # creates .grad and momentum buffers
    probe = GradientProbe(model["trunk"].named_parameters(), ["a", "b"], KINDS)

    before = copy.deepcopy((model.state_dict(), [p.grad for p in params], optimiser.state_dict()))
    losses = compute_losses(model, batch)
    probe.record(losses)
    after = (model.state_dict(), [p.grad for p in params], optimiser.state_dict())
    for key, value in before[0].items():
        assert torch.equal(value, after[0][key])
    assert all(torch.equal(g0, g1) for g0, g1 in zip(before[1], after[1], strict=True))
    assert before[2]["param_groups"] == after[2]["param_groups"]
    for index, state in before[2]["state"].items():
        assert torch.equal(state["momentum_buffer"], after[2]["state"][index]["momentum_buffer"])
    # the graph is still usable after probing
    weighting(losses).backward()


def test_training_with_probe_equals_training_without():
    runs = []
    for use_probe in (False, True):
        model, batch = make_model_and_batch()
        weighting = GroupedUncertainty([["a", "b"]], KINDS)
        optimiser = torch.optim.SGD([*model.parameters(), *weighting.parameters()], lr=0.1)
        probe = GradientProbe(model["trunk"].parameters(), ["a", "b"], KINDS) if use_probe else None
        for _ in range(3):
            train_step(model, weighting, optimiser, batch, probe)
        runs.append([*model.parameters(), *weighting.parameters()])
    assert all(torch.equal(p, q) for p, q in zip(*runs, strict=True))


# --- grouping ------------------------------------------------------------------------------


def test_slopes_and_scores_match_hand_computation():
    slopes = compute_slopes({"up": [1.0, 3.0, 2.0], "down": [4.0, 1.0], "flat": [2.0, 2.0, 2.0]})
    assert slopes == pytest.approx({"up": 0.5, "down": -3.0, "flat": 0.0})
    for s in (0.5, -3.0, 1e-9, -250.0):
        expected = math.copysign(1 / (1 + math.exp(-math.log(abs(s)))), s)
        assert slope_score(s) == pytest.approx(expected, rel=1e-12)
    assert slope_score(0.0) == 0.0
    # log-standardised: log|s| = log 1e-3, log 1e-1 -> z = -1, +1 (mean and std over the two)
    scores = slope_scores({"a": 1e-3, "b": -1e-1, "c": 0.0})
    sigmoid = 1 / (1 + math.exp(1.0))
    assert scores == pytest.approx({"a": sigmoid, "b": -(1 - sigmoid), "c": 0.0}, rel=1e-12)
    with pytest.raises(ValueError, match="scoring"):
        slope_scores({"a": 1.0}, "natural")
    # a missing epoch (NaN) drops the two differences that touch it
    assert compute_slopes({"t": [1.0, math.nan, 5.0, 6.0]})["t"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="two consecutive epochs"):
        compute_slopes({"t": [1.0]})


def planted_magnitudes(seed: int) -> tuple[dict[str, list[float]], set[frozenset[str]]]:
    """Ten tasks whose magnitudes fall along three well-separated slopes, with noise."""
    rng = np.random.default_rng(seed)
    centres = {"fast": -0.6, "flat": 0.0, "rise": 0.9}
    sizes = {"fast": 4, "flat": 3, "rise": 3}
    magnitudes, planted, index = {}, [], 0
    for name, slope in centres.items():
        members = []
        for _ in range(sizes[name]):
            task = f"t{index}"
            index += 1
            task_slope = slope + rng.normal(0, 0.03)
            epochs = np.arange(6)
            magnitudes[task] = list(5.0 + task_slope * epochs + rng.normal(0, 0.01, 6))
            members.append(task)
        planted.append(frozenset(members))
    order = [str(t) for t in rng.permutation(list(magnitudes))]  # input order must not matter
    return {task: magnitudes[task] for task in order}, set(planted)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_groups", [3, "auto"])
def test_slope_grouping_recovers_planted_clusters(seed, n_groups):
    """Clusters planted on a linear scale of slopes: the literal reading of Eq. 8."""
    magnitudes, planted = planted_magnitudes(seed)
    grouping = group_tasks(magnitudes, n_groups, scoring="literal")
    assert {frozenset(group) for group in grouping.groups} == planted
    means = [np.mean([grouping.scores[t] for t in group]) for group in grouping.groups]
    assert means == sorted(means)
    assert set(grouping.slopes) == set(magnitudes)


def planted_orders_of_magnitude(seed: int):
    """Nine tasks whose slopes fall in three groups by sign and order of magnitude."""
    rng = np.random.default_rng(seed)
    centres = {"falls-fast": -3e-2, "falls-slowly": -2e-4, "rises": 1e-3}
    magnitudes, planted, index = {}, [], 0
    for slope in centres.values():
        members = []
        for _ in range(3):
            task_slope = slope * np.exp(rng.normal(0, 0.2))
            magnitudes[f"t{index}"] = list(1.0 + task_slope * np.arange(5))
            members.append(f"t{index}")
            index += 1
        planted.append(frozenset(members))
    return magnitudes, set(planted)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_log_standardised_scores_group_by_sign_and_order_of_magnitude(seed):
    magnitudes, planted = planted_orders_of_magnitude(seed)
    grouping = group_tasks(magnitudes, 3)
    assert grouping.scoring == "log-standardised"
    assert {frozenset(group) for group in grouping.groups} == planted
    # the literal reading sees two of the three groups as one (all slopes are ~0)
    literal = group_tasks(magnitudes, 3, scoring="literal")
    assert {frozenset(group) for group in literal.groups} != planted
    assert set(grouping.all_scores) == {"log-standardised", "literal"}
    assert grouping.all_scores["literal"] == literal.scores


def test_log_standardised_grouping_ignores_the_units_of_the_magnitudes():
    magnitudes, _ = planted_magnitudes(1)
    scaled = {task: [100.0 * m for m in values] for task, values in magnitudes.items()}
    for n_groups in (2, 3, 4):
        default = group_tasks(magnitudes, n_groups)
        assert group_tasks(scaled, n_groups).groups == default.groups
        assert group_tasks(scaled, n_groups).scores == pytest.approx(default.scores)
    # the literal reading does depend on them
    assert any(
        group_tasks(scaled, n, scoring="literal").groups
        != group_tasks(magnitudes, n, scoring="literal").groups
        for n in (2, 3, 4)
    )


def test_slope_grouping_gives_exactly_g_groups():
    magnitudes, _ = planted_magnitudes(0)
    for n_groups in (1, 2, 5, 10):
        grouping = group_tasks(magnitudes, n_groups, linkage="average")
        assert len(grouping.groups) == n_groups
        assert sorted(grouping.tasks) == sorted(magnitudes)
    with pytest.raises(ValueError, match="1..10"):
        group_tasks(magnitudes, 11)


def test_random_grouping_is_a_seeded_partition():
    tasks = [f"t{i}" for i in range(10)]
    partitions = []
    for seed in range(6):
        grouping = group_randomly(tasks, 4, seed)
        assert grouping.groups == group_randomly(tasks, 4, seed).groups
        assert len(grouping.groups) == 4 and all(grouping.groups)
        assert sorted(grouping.tasks) == tasks
        partitions.append(grouping.groups)
    assert len({json.dumps(p) for p in partitions}) > 1
    assert group_randomly(tasks, 10, 3).groups == [[t] for t in tasks]


def test_branch_given_and_file_groupings(tmp_path):
    tasks = ["a", "b", "c", "d"]
    branches = {"a": "x", "b": "y", "c": "x", "d": "z"}
    assert group_by_branch(tasks, branches).groups == [["a", "c"], ["b"], ["d"]]
    assert build_grouping("branch", tasks, branches=branches).strategy == "branch"
    path = tmp_path / "by_hand.json"
    path.write_text(json.dumps([["d", "a"], ["b", "c"]]))
    assert build_grouping(str(path), tasks).groups == [["d", "a"], ["b", "c"]]
    path.write_text(json.dumps({"groups": [["a"], ["b", "c"]]}))
    with pytest.raises(GalwFileError, match="missing \\['d'\\]"):
        build_grouping(str(path), tasks)
    path.write_text(json.dumps({"groups": [["a", "b"], ["b", "c", "d"]]}))
    with pytest.raises(GalwFileError, match="more than one group"):
        load_grouping(path)
    with pytest.raises(ValueError, match="needs the probe"):
        build_grouping("slope", tasks)


# --- files, CLI, plots ---------------------------------------------------------------------


def write_gradients(path, magnitudes):
    kinds = {task: "reg" if int(task[1:]) % 2 else "cls" for task in magnitudes}
    GradientHistory(kinds, magnitudes).save(path)


def test_cli_round_trip(tmp_path):
    magnitudes, planted = planted_magnitudes(4)
    magnitudes["t0"][2] = math.nan  # written as null, read back as a missing epoch
    write_gradients(tmp_path / "gradients.json", magnitudes)
    assert (
        json.loads((tmp_path / "gradients.json").read_text())["tasks"]["t0"]["magnitudes"][2]
        is None
    )
    out = tmp_path / "groups.json"
    done = subprocess.run(
        [sys.executable, "-m", "galw", "group", "--gradients", str(tmp_path / "gradients.json"),
         "--groups", "3", "--out", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert {frozenset(group) for group in data["groups"]} == planted
    assert set(data["slopes"]) == set(data["scores"]) == set(magnitudes)
    assert data["scoring"] == "log-standardised"
    assert data["scores"] == pytest.approx(slope_scores(data["slopes"]))
    assert data["all_scores"]["literal"]["t1"] == pytest.approx(slope_score(data["slopes"]["t1"]))
    loaded = load_grouping(out, list(magnitudes))
    assert loaded.groups == data["groups"] and loaded.all_scores == data["all_scores"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"tasks": []}', "expected"),
        ('{"tasks": {"a": {"kind": "box", "magnitudes": [1, 2]}}}', "'kind' must be"),
        ('{"tasks": {"a": {"kind": "cls", "magnitudes": [1, "x"]}}}', "list of numbers"),
        ('{"tasks": {"a": {"kind": "cls", "magnitudes": [1.0]}}}', "two consecutive epochs"),
        ('{"tasks": {"a": {"kind": "cls", "magnitudes": [1, 2]}}}', "1..1, got 3"),
    ],
)
def test_cli_reports_malformed_files(tmp_path, capsys, content, message):
    path = tmp_path / "gradients.json"
    path.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["group", "--gradients", str(path), "--groups", "3"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_rejects_bad_group_count_and_missing_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_main(["group", "--gradients", "x.json", "--groups", "zero"])
    assert "positive integer or 'auto'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["group", "--gradients", str(tmp_path / "none.json"), "--groups", "2"])
    assert "cannot read" in capsys.readouterr().err


def test_cli_auto_prints_groups(capsys, tmp_path):
    magnitudes, planted = planted_magnitudes(5)
    write_gradients(tmp_path / "g.json", magnitudes)
    assert cli_main(["group", "--gradients", str(tmp_path / "g.json"), "--groups", "auto"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {frozenset(group) for group in printed["groups"]} == planted


def test_plots_write_png_files(tmp_path):
    from galw.plots import plot_gradient_magnitudes, plot_sigmas

    magnitudes, _ = planted_magnitudes(0)
    plot_gradient_magnitudes(magnitudes, tmp_path / "gradients.png")
    records = [{"step": s, "sigmas": {"a+b": 1 + 0.01 * s, "c": 1 - 0.01 * s}} for s in range(5)]
    plot_sigmas([{"step": 0, "loss": 1.0}, *records], tmp_path / "sigmas.png")
    for name in ("gradients.png", "sigmas.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="'sigmas'"):
        plot_sigmas([{"step": 1}], tmp_path / "none.png")
