"""benchmarks.frame_latency runs the bundled model on real frames and prints its figures."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.frame_latency import main
from training.synth import generate


def test_frame_latency_reports_each_model(tmp_path, capsys):
    demo = Path(__file__).resolve().parents[2] / "models" / "demo" / "model.onnx"
    root = generate(tmp_path / "prw", "prw", frames=6, identities=4, cameras=2, seed=3,
                    size=(320, 192))  # fmt: skip
    assert main(["--model", str(demo), "--model", str(demo), "--frames", str(root / "frames"),
                 "--runs", "2", "--json"]) == 0  # fmt: skip
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and all(row["frames"] == 2 for row in rows)
    assert all(0 < row["p10_ms"] <= row["p50_ms"] <= row["p90_ms"] for row in rows)
    card = json.loads(demo.with_name("model.json").read_text())
    assert rows[0]["input"] == "{}x{}".format(*card["max_size"])
