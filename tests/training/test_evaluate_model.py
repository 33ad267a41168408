"""`python -m training.evaluate --model`: the bundled demo model scored on generated test splits
through the service's ONNX Runtime engine (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.evaluate.__main__ import main
from training.synth import generate

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "models" / "demo" / "model.onnx"


@pytest.fixture(scope="module", params=["prw", "cuhk"])
def split(request, tmp_path_factory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp(f"eval-{request.param}") / request.param
    # the demo model's own frame size; few frames keep the ONNX runs to seconds
    generate(root, request.param, frames=16, identities=8, cameras=3, seed=4, size=(384, 216))
    return request.param, root


def evaluate(capsys, *argv: str) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_demo_model_is_scored_and_its_results_file_agrees(split, tmp_path, capsys):
    name, root = split
    saved = tmp_path / "R.json"
    common = ["--dataset", name, "--data-root", str(root), "--json"]
    if name == "cuhk":
        common += ["--gallery-size", "-1"]
    metrics = evaluate(capsys, *common, "--model", str(DEMO), "--save-results", str(saved),
                       "--no-progress")  # fmt: skip
    for key in ("mAP", "top1", "det_ap", "det_recall"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["det_recall"] > 0  # the demo model finds people in frames like its own
    assert metrics["det_thresh"] == {"prw": 0.15, "cuhk": 0.2}[name]
    assert metrics["query_embedding"] == "detection"
    assert 0 <= metrics["queries_from_detection"] <= metrics["num_queries"]
    if name == "prw":  # the demo model was trained on PRW-layout frames
        assert metrics["queries_from_detection"] > 0
    assert metrics["model_id"].startswith("sha256:")
    # the saved results file scores the same through --results
    rescored = evaluate(capsys, *common, "--results", str(saved))
    for key in ("mAP", "top1", "top5", "top10", "det_ap", "det_recall", "num_queries"):
        assert rescored[key] == metrics[key], key


def test_queries_can_be_embedded_from_their_boxes(split, capsys):
    name, root = split
    argv = ["--dataset", name, "--data-root", str(root), "--model", str(DEMO), "--json",
            "--no-progress", "--query-embedding", "box", "--det-thresh", "0.3"]  # fmt: skip
    if name == "cuhk":
        argv += ["--gallery-size", "-1"]
    metrics = evaluate(capsys, *argv)
    assert metrics["query_embedding"] == "box" and metrics["queries_from_detection"] == 0
    assert metrics["det_thresh"] == 0.3


def test_model_errors_are_reported(tmp_path, split, capsys):
    name, root = split
    assert (
        main(["--dataset", name, "--data-root", str(root), "--model", str(tmp_path / "x.onnx")])
        == 1
    )
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--dataset", name, "--data-root", str(root), "--results", "R.json",
              "--save-results", "S.json"])  # fmt: skip


def test_each_branch_is_its_part_of_the_concat_embedding(split, tmp_path, capsys):
    name, root = split
    common = ["--dataset", name, "--data-root", str(root), "--model", str(DEMO), "--json",
              "--no-progress", "--query-embedding", "box"]  # fmt: skip
    if name == "cuhk":
        common += ["--gallery-size", "-1"]
    card = json.loads(DEMO.with_name("model.json").read_text())
    dims = {"alignps": card["config"]["neck_channels"], "roi": card["config"]["roi_emb_dim"]}
    concat = evaluate(capsys, *common, "--save-results", str(tmp_path / "concat.json"))
    assert concat["embedding"] == "concat"
    whole = json.loads((tmp_path / "concat.json").read_text())
    start = 0
    for branch, dim in dims.items():
        saved = tmp_path / f"{branch}.json"
        metrics = evaluate(capsys, *common, "--embedding", branch, "--save-results", str(saved))
        assert metrics["embedding"] == branch and 0.0 <= metrics["mAP"] <= 1.0
        part = json.loads(saved.read_text())
        for image, entry in whole["gallery"].items():
            vectors = np.asarray(entry["embeddings"], dtype=np.float32).reshape(
                -1, sum(dims.values())
            )
            expected = vectors[:, start : start + dim]
            expected /= np.maximum(np.linalg.norm(expected, axis=1, keepdims=True), 1e-12)
            got = np.asarray(part["gallery"][image]["embeddings"], dtype=np.float32)
            np.testing.assert_allclose(got.reshape(expected.shape), expected, atol=1e-5)
        start += dim


def test_stored_queries_take_the_detection_on_the_person_else_keep_the_frame_query():
    from types import SimpleNamespace

    from training.data.base import Query
    from training.evaluate.query_modes import with_stored_queries

    queries = [
        Query("a.jpg", np.array([10, 10, 50, 90], np.float32), pid=1, camera=1),
        Query("b.jpg", np.array([10, 10, 50, 90], np.float32), pid=2, camera=1),
        Query("c.jpg", np.array([10, 10, 50, 90], np.float32), pid=3, camera=2),
    ]
    unit = np.eye(4, dtype=np.float32)
    results = {
        "gallery": {
            # the person's detection (IoU 0.8) and a neighbour's
            "a.jpg": {
                "boxes": [[12, 10, 50, 86], [60, 10, 90, 90]],
                "scores": [0.9, 0.9],
                "embeddings": [unit[0], unit[1]],
            },
            # the person's detection scores below the threshold: not stored
            "b.jpg": {"boxes": [[10, 10, 50, 90]], "scores": [0.1], "embeddings": [unit[2]]},
            # a detection overlapping the person too little (IoU < 0.5)
            "c.jpg": {"boxes": [[30, 10, 70, 90]], "scores": [0.9], "embeddings": [unit[3]]},
        },  # fmt: skip
        "queries": [{"embedding": -unit[k]} for k in range(3)],
    }
    dataset = SimpleNamespace(name="prw", queries=queries)
    stored, without = with_stored_queries(dataset, results, min_score=0.5)
    assert without == 2
    np.testing.assert_array_equal(stored["queries"][0]["embedding"], unit[0])
    np.testing.assert_array_equal(stored["queries"][1]["embedding"], -unit[1])
    np.testing.assert_array_equal(stored["queries"][2]["embedding"], -unit[2])
    assert stored["gallery"] is results["gallery"]


def test_query_modes_need_a_model(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--dataset", "prw", "--data-root", str(tmp_path), "--results", "R.json",
              "--query-mode", "crop"])  # fmt: skip
    assert "--query-mode needs --model" in capsys.readouterr().err


def test_all_query_modes_share_the_gallery_and_differ_only_in_queries(split, capsys):
    name, root = split
    common = ["--dataset", name, "--data-root", str(root), "--json", "--no-progress"]
    if name == "cuhk":
        common += ["--gallery-size", "-1"]
    modes = evaluate(capsys, *common, "--model", str(DEMO), "--query-mode", "all")["query_modes"]
    assert set(modes) == {"frame", "crop", "stored"}
    for mode, metrics in modes.items():
        assert metrics["query_mode"] == mode and 0.0 <= metrics["mAP"] <= 1.0
        # one gallery: detection figures are the same whichever way the queries are asked
        assert metrics["det_ap"] == modes["frame"]["det_ap"]
    stored = modes["stored"]
    assert 0 <= stored["queries_without_stored_detection"] <= stored["num_queries"]
    single = evaluate(capsys, *common, "--model", str(DEMO), "--query-mode", "crop")
    assert single["query_mode"] == "crop" and single["mAP"] == modes["crop"]["mAP"]
