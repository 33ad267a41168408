"""benchmarks.latency runs every contestant with the same K people per frame and emits JSON
(a batch of two frames: our graph takes them in one run)."""

from __future__ import annotations

import json

import pytest

from benchmarks.latency import BOUND, PEERS, main
from benchmarks.ort_profile import main as profile_main

pytestmark = pytest.mark.torch


def test_latency_benchmark_emits_figures_for_every_contestant(tmp_path, capsys):
    argv = ["--config", "tiny", "--size", "160x96", "--persons", "2", "--runs", "1", "--batch", "2",
            "--warmup", "0", "--threads", "1", "--int8", "--io-binding", "--workdir", str(tmp_path),
            "--json"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    names = [row["model"] for row in result["rows"]]
    assert set(names) == {"ours-ort", BOUND, "ours-int8", "ours-eager", "reid", *PEERS}
    assert all(0 < row["p10_ms"] <= row["median_ms"] <= row["p90_ms"] for row in result["rows"])
    by_name = {row["model"]: row["median_ms"] for row in result["rows"]}
    # one round: the stack's time is the sum of its two parts, each figure rounded to 0.1 ms
    assert abs(by_name["fcos+reid"] - (by_name["fcos"] + by_name["reid"])) <= 0.1 + 1e-9
    assert set(result["ratios"]) >= {"fcos/ours-ort", "frcnn/ours-ort", "ours-eager/ours-ort"}
    assert result["persons"] == 2 and result["size"] == "160x96"
    close = result["int8_vs_fp32"]
    assert close["fp32_detections"] == 2 * 2  # two held-out frames, K = 2 each
    assert -1 <= close["min_cosine"] <= close["median_cosine"] <= 1
    # the graphs it exported, profiled per op type by benchmarks.ort_profile
    graphs = sorted(tmp_path.glob("*/model.onnx"))
    assert len(graphs) == 2  # fp32 and int8
    assert (
        profile_main([*map(str, graphs), "--size", "160x96", "--runs", "1", "--threads", "1"]) == 0
    )
    printed = capsys.readouterr().out
    assert "| DeformConv |" in printed and "| QLinearConv |" in printed
