"""`python -m benchmarks.http_search`: the three query modes asked over real HTTP against a
service started on the demo model agree with `training.evaluate --query-mode all`, which runs the
same engine in process (crop and stored queries take the same path both ways)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from benchmarks.http_search import main as http_main
from training.evaluate.__main__ import main as evaluate_main
from training.synth import generate

REPO = Path(__file__).resolve().parents[2]
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


def test_place_at_random_keeps_the_person_whole_inside_the_scene() -> None:
    import numpy as np

    from inference.engine import place_at_random

    rng = np.random.default_rng(0)
    scene = np.zeros((40, 60, 3), np.uint8)
    person = np.full((30, 10, 3), 200, np.uint8)
    for _ in range(20):
        placed = place_at_random(scene, person, rng)
        assert placed is not None
        composed, box = placed
        x1, y1, x2, y2 = box.astype(int)
        assert 0 <= x1 and x2 <= 60 and 0 <= y1 and y2 <= 40 and (x2 - x1, y2 - y1) == (10, 30)
        assert (composed[y1:y2, x1:x2] == 200).all() and composed.sum() == person.sum()
    assert not scene.any()  # the stored frame itself is left alone
    assert place_at_random(scene, np.zeros((41, 5, 3), np.uint8), rng) is None


def test_query_scenes_place_a_crop_into_stored_frames(split: Path, tmp_path: Path) -> None:
    import httpx

    from benchmarks.http_search import crop_upload, ingest
    from server.testing import ServerProcess
    from training.data import load_dataset

    dataset = load_dataset("prw", split, "test")
    with (
        ServerProcess(model=DEMO, data_dir=tmp_path / "data", query_scenes=2) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        crop = {"query": crop_upload(dataset, 0)}
        # no stored frame yet: the crop is embedded alone
        alone = client.post("/search", files=crop).json()["query"]
        assert alone["source"] in ("detection", "box")
        ingest(client, dataset, show_progress=False)
        placed = client.post("/search", files=crop)
        assert placed.status_code == 200, placed.text
        body = placed.json()
        assert body["query"]["source"] == "scenes" and body["results"]
        height, width = Image.open(io.BytesIO(crop["query"][1])).size[::-1]
        assert body["query"]["box"] == [0.0, 0.0, float(width), float(height)]
        # a query with a box is asked within its own image, never placed
        record = dataset.image(dataset.queries[0].image)
        framed = client.post(
            "/search",
            files={"query": (record.name, record.path.read_bytes(), "image/jpeg")},
            data={"box": ",".join(f"{v:g}" for v in dataset.queries[0].box)},
        ).json()["query"]
        assert framed["source"] in ("detection", "box")
