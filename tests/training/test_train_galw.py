"""`python -m training.galw` on a small synthetic PRW: every artefact, resume, errors.

The runs use the tiny model on 320x192 frames so that the whole file stays within a couple of
minutes on two CPU cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from inference.card import OUTPUT_NAMES
from inference.preprocess import load_rgb, resize_and_pad
from training.data import load_dataset
from training.data.base import ImageRecord
from training.data.torch_dataset import EpochBatches, ScaleRange, TrainImages, collate
from training.export import load_checkpoint_model
from training.export import main as export_main
from training.model.config import CONFIGS
from training.model.tasks import REFERENCE_FIXED_WEIGHTS, TASKS
from training.run_config import OptionError, RunConfig, scaled_lr_steps
from training.synth import generate
from training.train import build_parser, main

pytestmark = pytest.mark.torch

REPO = Path(__file__).resolve().parents[2]
# small frames keep the runs that are not evaluated cheap
FAST = ["--train-sizes", "96,128", "--max-size", "128,77", "--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "prw"
    return generate(root, "prw", frames=24, identities=8, cameras=3, seed=0, size=(320, 192))


@pytest.fixture(scope="module")
def small_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six training frames: enough for the runs that check resuming, not learning."""
    root = tmp_path_factory.mktemp("synth_small") / "prw"
    return generate(root, "prw", frames=12, identities=6, cameras=3, seed=1, size=(320, 192))


def run_cli(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "training.galw", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def test_full_run_writes_every_artefact_and_a_working_onnx_model(synthetic, tmp_path):
    run = tmp_path / "run"
    result = run_cli(
        "--dataset", "prw", "--data-root", str(synthetic), "--config", "tiny",
        "--probe-epochs", "2", "--epochs", "2", "--out", str(run),
        # smaller than the automatic sizes, and one probed batch per epoch, for CI's CPUs
        "--train-sizes", "128,192", "--batch-size", "4", "--probe-samples", "1", "--workers", "0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for name in (
        "config.json", "gradients.json", "gradient_magnitudes.png", "groups.json",
        "train_log.jsonl", "sigmas.png", "embedding_spread.png", "metrics.json", "model.onnx",
        "model.json", "checkpoints/last.pth", "checkpoints/final.pth",
    ):  # fmt: skip
        assert (run / name).is_file(), name

    gradients = json.loads((run / "gradients.json").read_text())["tasks"]
    assert set(gradients) == set(TASKS)
    assert all(len(entry["magnitudes"]) == 2 for entry in gradients.values())

    groups = json.loads((run / "groups.json").read_text())["groups"]
    assert len(groups) == 4
    assert sorted(task for group in groups for task in group) == sorted(TASKS)

    # the main run logs one sigma per group, the probe run none
    steps = [r for r in read_log(run) if r["event"] == "step"]
    assert {r["phase"] for r in steps} == {"probe", "main"}
    main_steps = [r for r in steps if r["phase"] == "main"]
    assert all(len(r["sigmas"]) == 4 and set(r["losses"]) == set(TASKS) for r in main_steps)
    assert all(r["sigmas"] == {} for r in steps if r["phase"] == "probe")
    # each main epoch logs how far apart the branches hold different people
    spreads = [r for r in read_log(run) if r["event"] == "embedding_spread"]
    assert [r["epoch"] for r in spreads] == [0, 1] and {r["phase"] for r in spreads} == {"main"}
    for record in spreads:
        for branch in ("alignps", "roi"):
            assert -1.0 <= record[f"{branch}_cosine_between_people"] <= 1.0
        assert isinstance(record["collapsed"], list)
    assert "mean cosine between different people" in result.stderr

    metrics = json.loads((run / "metrics.json").read_text())
    for embedding in ("alignps", "roi", "concat"):
        for setting in ("all_cameras", "cross_camera"):
            scores = metrics[embedding][setting]
            assert 0.0 <= scores["mAP"] <= 1.0 and 0.0 <= scores["det_recall"] <= 1.0
    # the exported graph asked the three ways the service is asked, through its engine
    modes = metrics["query_modes"]
    assert modes["data_root"] == str(synthetic) and modes["det_thresh"] == 0.15
    for mode in ("crop", "frame", "stored"):
        assert 0.0 <= modes[mode]["mAP"] <= 1.0 and 0.0 <= modes[mode]["top1"] <= 1.0
    assert modes["frame"]["det_recall"] == modes["crop"]["det_recall"]  # one gallery

    card = json.loads((run / "model.json").read_text())
    onnx_bytes = (run / "model.onnx").read_bytes()
    assert card["onnx_sha256"] == hashlib.sha256(onnx_bytes).hexdigest()
    assert card["metrics"] == metrics and card["training"]["weighting"] == "galw"
    assert card["training"]["grouping"]["groups"] == groups
    # the reference's search threshold for PRW, queries embedded from their best detection
    assert card["search_score_threshold"] == metrics["det_thresh"] == 0.15
    assert metrics["query_embedding"] == "detection"
    assert card["max_size"] == [320, 192]  # the frames' own size, chosen by the run
    # the commands that made the model: the training command and the generator's
    assert card["training"]["command"].startswith("python -m training.galw --dataset prw")
    synth = json.loads((synthetic / "synth.json").read_text())["command"]
    assert card["training"]["synth_command"] == synth
    check_onnx_matches_checkpoint(run, card, synthetic)

    # re-exporting the final checkpoint writes the card the run wrote
    again = tmp_path / "again" / "model.onnx"
    assert (
        export_main(["--checkpoint", str(run / "checkpoints" / "final.pth"), "--out", str(again)])
        == 0
    )
    card_again = json.loads(again.with_name("model.json").read_text())
    checksums = ("onnx_sha256",)
    assert {k: v for k, v in card_again.items() if k not in checksums} == {
        k: v for k, v in card.items() if k not in checksums
    }


def check_onnx_matches_checkpoint(run: Path, card: dict, data_root: Path) -> None:
    """The exported graph runs in ONNX Runtime and embeds a box as the trained weights do."""
    record = load_dataset("prw", data_root, "test").images[0]
    prepared = resize_and_pad(load_rgb(record.path), tuple(card["max_size"]))
    boxes = (record.boxes[:1] * prepared.scale).astype(np.float32)
    session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    det_boxes, det_scores, det_embeddings, box_embeddings = session.run(
        list(OUTPUT_NAMES), {"image": prepared.image[None], "boxes": boxes}
    )
    assert det_boxes.shape[1] == 4 and len(det_scores) == len(det_boxes)
    assert det_embeddings.shape == (len(det_boxes), card["embedding_dim"])
    model, _ = load_checkpoint_model(run / "checkpoints" / "final.pth")
    with torch.no_grad():
        out = model(torch.from_numpy(prepared.image)[None], query_boxes=torch.from_numpy(boxes))
    expected = F.normalize(torch.cat([out["query_alignps"], out["query_roi"]], dim=1), dim=1)
    np.testing.assert_allclose(box_embeddings, expected.numpy(), atol=1e-3)


def test_resume_after_interruptions_repeats_the_uninterrupted_run(small_synthetic, tmp_path):
    options = [
        "--dataset", "prw", "--data-root", str(small_synthetic), "--config", "tiny",
        "--probe-epochs", "2", "--epochs", "1", "--batch-size", "3", "--probe-samples", "1",
        "--log-every", "1", "--checkpoint-every", "2", "--no-eval", "--no-export", *FAST,
    ]  # fmt: skip
    # 6 training frames in batches of 3: 2 iterations per epoch, 4 probe + 2 main in all
    assert main([*options, "--out", str(tmp_path / "whole")]) == 0

    stopped = tmp_path / "stopped"
    assert main([*options, "--out", str(stopped), "--stop-after-iters", "3"]) == 0
    checkpoint = torch.load(stopped / "checkpoints" / "last.pth", weights_only=False)
    assert checkpoint["phase"] == "probe" and checkpoint["progress"]["batch"] == 1
    # a record written after the checkpoint by a process that then crashed: resume drops it
    with (stopped / "train_log.jsonl").open("a") as log:
        log.write(json.dumps({"event": "step", "phase": "probe", "step": 4, "loss": 0.0}) + "\n")
    resume = ["--out", str(stopped), "--resume", "--workers", "0", "--no-progress"]
    assert main([*resume, "--stop-after-iters", "2"]) == 0  # stops inside the main epoch
    checkpoint = torch.load(stopped / "checkpoints" / "last.pth", weights_only=False)
    assert checkpoint["phase"] == "main" and checkpoint["progress"]["batch"] == 1
    assert main(resume) == 0

    for name in ("gradients.json", "groups.json"):
        assert json.loads((stopped / name).read_text()) == json.loads(
            (tmp_path / "whole" / name).read_text()
        )
    whole = torch.load(tmp_path / "whole" / "checkpoints" / "final.pth", weights_only=False)
    again = torch.load(stopped / "checkpoints" / "final.pth", weights_only=False)
    for key, value in whole["model"].items():
        torch.testing.assert_close(again["model"][key], value, rtol=1e-4, atol=1e-6, msg=key)
    torch.testing.assert_close(again["weighting"], whole["weighting"])
    # the log of the resumed run holds each step once, with the same losses
    logged = [(r["phase"], r["step"], r["loss"]) for r in read_log(stopped) if r["event"] == "step"]
    expected = [
        (r["phase"], r["step"], r["loss"])
        for r in read_log(tmp_path / "whole")
        if r["event"] == "step"
    ]
    assert [r[:2] for r in logged] == [r[:2] for r in expected]
    np.testing.assert_allclose([r[2] for r in logged], [r[2] for r in expected], rtol=1e-4)


def test_ctrl_c_leaves_a_resumable_checkpoint(small_synthetic, tmp_path):
    run = tmp_path / "run"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "training.galw", "--dataset", "prw",
            "--data-root", str(small_synthetic), "--config", "tiny", "--weighting", "rulwf",
            "--epochs", "3", "--batch-size", "2", "--log-every", "1", "--no-eval",
            "--no-export", "--out", str(run), *FAST,
        ],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    log = run / "train_log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and log.read_text().strip()) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-2000:]
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "probe run skipped" in stderr
    assert f"python -m training.galw --out {run} --resume" in stderr
    checkpoint = torch.load(run / "checkpoints" / "last.pth", weights_only=False)
    done = checkpoint["progress"]["iteration"]
    assert checkpoint["phase"] == "main" and done >= 1
    assert main(["--out", str(run), "--resume", "--stop-after-iters", "1", *FAST[-3:]]) == 0
    resumed = torch.load(run / "checkpoints" / "last.pth", weights_only=False)
    assert resumed["progress"]["iteration"] == done + 1


def train_auxiliary_task(data_root: Path, run: Path, task: str, *options: str) -> None:
    """One fixed-weight epoch with an auxiliary task: its loss is in every step, at weight 1."""
    result = run_cli(
        "--dataset", "prw", "--data-root", str(data_root), "--config", "tiny",
        "--weighting", "fixed", "--epochs", "1", "--batch-size", "3",
        "--no-eval", "--no-export", "--out", str(run), *FAST, *options,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [r for r in read_log(run) if r["event"] == "step"]
    assert steps and all(r["losses"][task] > 0 for r in steps)
    assert steps[-1]["weights"][task] == 1.0


def test_attribute_task_trains_from_the_generators_labels(small_synthetic, tmp_path):
    run = tmp_path / "attr"
    train_auxiliary_task(small_synthetic, run, "attr", "--attr")
    model, _ = load_checkpoint_model(run / "checkpoints" / "final.pth")
    assert model.attr_head is not None and model.attr_head.out_features == 50
    missing = run_cli(
        "--dataset", "prw", "--data-root", str(small_synthetic), "--attr", str(tmp_path / "no"),
        "--out", str(tmp_path / "x"),
    )  # fmt: skip
    assert missing.returncode == 2 and "--attr" in missing.stderr


def test_crop_task_trains_with_people_cut_out_of_their_frames(small_synthetic, tmp_path):
    run = tmp_path / "crop"
    # people at the frames' own size: every batch has some big enough to cut
    train_auxiliary_task(
        small_synthetic, run, "crop_reid", "--model-option", "crop_queries=3",
        "--train-sizes", "288,320", "--max-size", "320,192",
    )  # fmt: skip
    model, _ = load_checkpoint_model(run / "checkpoints" / "final.pth")
    assert model.config.crop_queries == 3  # the checkpoint's network config carries the option
    saved = json.loads((run / "config.json").read_text())
    assert saved["options"]["model_options"] == [["crop_queries", 3]]
    assert saved["options"]["model_config"]["crop_queries"] == 3


def test_model_options_are_typed_and_round_trip(tmp_path):
    config = parse_config("--config", "tiny", "--model-option", "crop_queries=6",
                          "--model-option", "fcos_oim_focal=true", "--model-option",
                          "anchor_sizes=8,16,32", data_root=tmp_path)  # fmt: skip
    model = config.model_config
    assert (model.crop_queries, model.fcos_oim_focal) == (6, True)
    assert model.anchor_sizes == (8, 16, 32) and model.name == "tiny"
    record = json.loads(json.dumps(config.with_sizes((320, 192), (96, 128)).to_record()))
    assert RunConfig.from_record(record).model_config == model
    assert parse_config("--config", "tiny", data_root=tmp_path).model_config.crop_queries == 0


def test_bad_data_root_is_a_clear_error(tmp_path):
    result = run_cli("--dataset", "prw", "--data-root", str(tmp_path / "absent"), "--out",
                     str(tmp_path / "run"), "--config", "tiny")  # fmt: skip
    assert result.returncode == 2
    assert "no such directory" in result.stderr and "Traceback" not in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(
        [
            "--dataset",
            "prw",
            "--data-root",
            str(empty),
            "--out",
            str(tmp_path / "r2"),
            "--config",
            "tiny",
        ]
    )
    assert code == 2
    assert not (tmp_path / "r2" / "config.json").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--probe-epochs", "0"], "--grouping slope needs a probe run"),
        (["--groups", "11"], "--groups must be between 1 and the 10 tasks"),
        (["--weighting", "fixed", "--grouping", "branch"], "drop --grouping"),
        (["--grouping", "no-such-groups.json"], "not slope|branch|random nor a groups file"),
        (["--config", "r101"], "--config r101: choose one of"),
        (["--config", "r50"], "frozen batch norm, which cannot learn from random weights"),
        (["--fixed-weights", "roi_cls=2"], "applies to --weighting fixed only"),
        (["--weighting", "fixed", "--fixed-weights", "nope=2"], "unknown task 'nope'"),
        (["--weighting", "fixed", "--fixed-weights", "roi_cls=x"], "is not name=number"),
        (["--model-option", "nope=1"], "give name=value, a name among"),
        (["--model-option", "crop_queries"], "give name=value"),
        (["--model-option", "crop_queries=many"], "'many' is not a int"),
        (["--model-option", "fcos_oim_focal=maybe"], "is not a true/false"),
        (["--model-option", "norm=layer"], "norm must be one of frozen_bn, bn, gn, got 'layer'"),
        (["--model-option", "crop_queries=2", "--groups", "12"], "between 1 and the 11 tasks"),
    ],
)
def test_impossible_options_are_refused(tmp_path, capsys, options, message):
    argv = ["--dataset", "prw", "--data-root", str(tmp_path), "--out", str(tmp_path / "run")]
    if "--config" not in options:
        argv += ["--config", "tiny"]
    assert main([*argv, *options]) == 2
    assert message in capsys.readouterr().err


def test_resume_needs_a_run_directory(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "nothing"), "--resume"]) == 2
    assert "config.json not found" in capsys.readouterr().err


def parse_config(*options: str, data_root: Path) -> RunConfig:
    argv = ["--dataset", "prw", "--data-root", str(data_root), "--out", str(data_root / "run")]
    return RunConfig.from_arguments(build_parser().parse_args([*argv, *options]))


def test_run_config_fills_the_reference_defaults_and_is_frozen(tmp_path):
    config = parse_config("--config", "tiny", "--batch-size", "2", "--epochs", "12",
                          data_root=tmp_path)  # fmt: skip
    assert config.lr == pytest.approx(0.0015 * 2 / 5)
    assert config.lr_steps == (8, 11) and config.probe_epochs == 12
    assert config.grouping == "slope" and config.phases == ("probe", "main")
    assert config.det_thresh == 0.15 and config.fixed_weights is None
    with pytest.raises(AttributeError):
        config.lr = 1.0  # type: ignore[misc]
    cuhk = RunConfig.from_arguments(
        build_parser().parse_args(
            ["--dataset", "cuhk", "--data-root", str(tmp_path), "--out", "r", "--config", "tiny"]
        )
    )
    assert cuhk.det_thresh == 0.2
    assert scaled_lr_steps((16, 22), 24, 2) == (1, 2)


def test_fixed_weights_default_to_the_reference_and_take_overrides(tmp_path):
    fixed = parse_config("--config", "tiny", "--weighting", "fixed", data_root=tmp_path)
    assert fixed.fixed_weights == REFERENCE_FIXED_WEIGHTS and fixed.phases == ("main",)
    changed = parse_config("--config", "tiny", "--weighting", "fixed", "--fixed-weights",
                           "roi_cls=2.5, fcos_tri=0", data_root=tmp_path)  # fmt: skip
    assert changed.fixed_weights == {**REFERENCE_FIXED_WEIGHTS, "roi_cls": 2.5, "fcos_tri": 0.0}


def test_saved_config_round_trips_and_old_run_configs_still_load(tmp_path):
    config = parse_config("--config", "tiny", data_root=tmp_path).with_sizes((320, 192), (96, 128))
    record = json.loads(json.dumps(config.to_record()))
    assert RunConfig.from_record(record) == config
    # the config.json of a run made before RunConfig existed (the first demo model's)
    saved = json.loads((REPO / "tests" / "data" / "old_run_config.json").read_text())["options"]
    old = RunConfig.from_record(saved)
    assert old.max_size == (384, 216) and old.query_embedding == "detection"
    assert old.model_config == CONFIGS["tiny"]  # resolved from the name it saved
    with pytest.raises(OptionError, match="does not know"):
        RunConfig.from_record({**record, "no_such_option": 1})


def test_batches_are_fixed_by_seed_and_epoch_and_resume_skips_the_consumed_ones():
    whole = list(EpochBatches(10, 3, seed=5, epoch=2))
    assert len(whole) == 4 and sorted(i for b in whole for _, i in b) == list(range(10))
    assert list(EpochBatches(10, 3, seed=5, epoch=2, start=2)) == whole[2:]
    assert list(EpochBatches(10, 3, seed=5, epoch=3)) != whole


def test_augmented_boxes_follow_the_person_through_resize_and_flip(tmp_path):
    # a bright person-sized rectangle on a dark frame: the box must stay on it
    pixels = np.zeros((120, 200, 3), np.uint8)
    pixels[20:100, 30:70] = 255
    path = tmp_path / "frame.png"
    from PIL import Image

    Image.fromarray(pixels).save(path)
    box = np.array([[30, 20, 70, 100]], np.float32)
    record = ImageRecord("frame.png", path, box, np.array([0]), 1)
    images = TrainImages([record], ScaleRange(100, 300, short_ratio=0.6), seed=0, flip_prob=0.5)
    flips = set()
    for epoch in range(8):
        image, target = images[(epoch, 0)]
        x1, y1, x2, y2 = target["boxes"][0].round().int().tolist()
        inside = image[:, y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].float().mean()
        assert inside > 240 and image.float().mean() < inside / 3
        flips.add(x1 > image.shape[2] - x2)
    assert flips == {True, False}  # both orientations were drawn
    batch, targets = collate([images[(0, 0)], images[(1, 0)]])
    assert batch.dtype == torch.uint8 and batch.shape[2] % 32 == 0 and batch.shape[3] % 32 == 0
