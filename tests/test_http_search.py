"""`python -m benchmarks.http_search`: the three query modes asked over real HTTP against a
service started on the demo model agree with `training.evaluate --query-mode all`, which runs the
same engine in process (crop and stored queries take the same path both ways)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.http_search import main as http_main
from training.evaluate.__main__ import main as evaluate_main
from training.synth import generate

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "models" / "demo" / "model.onnx"


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("http-search") / "prw"
    generate(root, "prw", frames=16, identities=6, cameras=3, seed=11, size=(480, 270))
    return root


def test_http_modes_agree_with_the_engine(split: Path, tmp_path: Path, capsys) -> None:
    common = ["--dataset", "prw", "--data-root", str(split), "--no-progress"]
    assert evaluate_main([*common, "--model", str(DEMO), "--query-mode", "all", "--json"]) == 0
    engine = json.loads(capsys.readouterr().out)["query_modes"]
    assert set(engine) == {"frame", "crop", "stored"}
    report_path = tmp_path / "http.json"
    assert http_main([*common, "--model", str(DEMO), "--json", str(report_path)]) == 0
    table = capsys.readouterr().out
    assert "crop" in table and "stored" in table and "frame" in table
    report = json.loads(report_path.read_text())
    assert report["gallery"]["frames"] == report["frames"]  # every test frame was ingested
    http = report["modes"]
    for mode in ("crop", "stored", "frame"):
        assert http[mode]["num_queries"] == engine[mode]["num_queries"] > 0
        assert 0.0 <= http[mode]["mAP"] <= http[mode]["top10"] + 1.0
    # the crop is the same file and the gallery the same detections: the same ranking
    for key in ("mAP", "top1", "top5"):
        assert http["crop"][key] == pytest.approx(engine["crop"][key], abs=1e-6), key
    # a stored detection's vector is the one the engine computed for the gallery; only the
    # queries whose person was not detected are asked differently (the service's frame query)
    differing = http["stored"].get("asked_as_frame", 0) / http["stored"]["num_queries"]
    assert abs(http["stored"]["top1"] - engine["stored"]["top1"]) <= differing + 1e-6


def test_crop_context_benchmark_scores_every_surrounding(split: Path, capsys) -> None:
    from benchmarks.crop_context import main as context_main

    argv = ["--model", str(DEMO), "--data-root", str(split), "--placements", "2", "--no-progress"]
    assert context_main(argv) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == {"alone", "pad", "stored", "mean", "frame"}
    for line in rows.values():
        m_ap, top1 = (float(v) for v in line.split()[-2:])
        assert 0.0 <= m_ap <= 1.0 and 0.0 <= top1 <= 1.0
