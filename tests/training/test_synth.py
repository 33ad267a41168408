"""The synthetic generator: layouts, MATLAB shapes, determinism, statistics, read-back."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat

from training.data import CUHKSYSU, PRW, UNLABELLED
from training.synth import ATTRIBUTE_NAMES, generate, plan_dataset, visible_box
from training.synth.sizes import PRESETS, format_size, parse_size

SMALL = {"frames": 24, "identities": 8, "cameras": 3, "seed": 5, "size": (320, 192)}


@pytest.fixture(scope="module")
def prw_root(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("prw") / "data", "prw", **SMALL)


@pytest.fixture(scope="module")
def cuhk_root(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("cuhk") / "data", "cuhk", **SMALL)


def _plan():
    return plan_dataset(
        SMALL["frames"], SMALL["identities"], SMALL["cameras"], SMALL["seed"], SMALL["size"]
    )


def _digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_prw_layout_is_complete(prw_root: Path) -> None:
    frames = sorted(p.name for p in (prw_root / "frames").iterdir())
    assert len(frames) == SMALL["frames"]
    assert sorted(p.name for p in (prw_root / "annotations").iterdir()) == [
        f"{name}.mat" for name in frames
    ]
    train = [str(c[0][0]) for c in loadmat(prw_root / "frame_train.mat")["img_index_train"]]
    test = [str(c[0][0]) for c in loadmat(prw_root / "frame_test.mat")["img_index_test"]]
    assert sorted(f"{name}.jpg" for name in train + test) == frames
    rows = loadmat(prw_root / "annotations" / f"{frames[0]}.mat")["box_new"]
    assert rows.ndim == 2 and rows.shape[1] == 5 and rows.dtype == np.float64
    raw = (prw_root / "query_info.txt").read_bytes()
    lines = raw.split(b"\r\n")
    assert lines[-1] == b"" and all(b"\n" not in line for line in lines)
    for line in lines[:-1]:
        pid, x, y, w, h, frame = line.decode().split()
        crop = Image.open(prw_root / "query_box" / f"{pid}_{frame}.jpg")
        x1 = max(float(x), 0.0)
        assert crop.size == (round(float(x) + float(w) - x1), round(float(h)))
    assert len(list((prw_root / "query_box").iterdir())) == len(lines) - 1


def test_cuhk_mat_files_have_the_real_access_paths(cuhk_root: Path) -> None:
    annotation = cuhk_root / "annotation"
    images = loadmat(annotation / "Images.mat")["Img"]
    assert images.shape == (1, SMALL["frames"])
    first = images[0, 0]
    assert str(first["imname"][0]).startswith("s") and first["box"].shape[0] == 1
    assert first["box"][0, 0]["idlocate"].dtype == np.uint16
    assert first["box"][0, 0]["idlocate"].shape == (1, 4)
    pool = loadmat(annotation / "pool.mat")["pool"]
    assert pool.shape[1] == 1 and str(pool[0, 0][0]).endswith(".jpg")
    train = loadmat(annotation / "test/train_test/Train.mat")["Train"]
    person = train[0, 0][0, 0]
    assert str(person["idname"][0]).startswith("p")
    scenes = person["scene"]
    assert scenes.shape[0] == 1 and scenes[0, 0]["idlocate"].dtype == np.uint16
    protocol = loadmat(annotation / "test/train_test/TestG50.mat")["TestG50"].squeeze()
    query = protocol[0]["Query"][0, 0]
    assert str(query["imname"][0]).endswith(".jpg") and str(query["idname"][0]).startswith("p")
    gallery = protocol[0]["Gallery"].squeeze()
    positives = [g for g in gallery if g["idlocate"].size]
    negatives = [g for g in gallery if not g["idlocate"].size]
    assert positives and negatives and gallery[0]["idlocate"].size  # positives come first
    assert negatives[0]["idlocate"].shape == (1, 0)
    # The pool of 12 test images is too small for 50: the gallery is all but the query's image.
    assert len(gallery) == len(pool) - 1
    assert not (annotation / "test/train_test/TestG100.mat").exists()


def test_cuhk_writes_each_gallery_size_the_pool_allows(tmp_path: Path) -> None:
    root = generate(tmp_path / "d", "cuhk", frames=106, identities=6, cameras=2, size=(96, 72))
    protocol = root / "annotation/test/train_test"
    assert sorted(p.name for p in protocol.glob("TestG*.mat")) == ["TestG50.mat"]
    galleries = loadmat(protocol / "TestG50.mat")["TestG50"].squeeze()["Gallery"]
    assert {g.size for g in galleries} == {50}
    assert CUHKSYSU(root, "test").gallery_sizes == [50]


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path, prw_root: Path) -> None:
    again = generate(tmp_path / "again", "prw", **SMALL)
    assert _digest(again) == _digest(prw_root)
    other = generate(tmp_path / "other", "prw", **{**SMALL, "seed": 6})
    assert _digest(other) != _digest(prw_root)


@pytest.mark.parametrize("dataset", [PRW, CUHKSYSU])
def test_loaders_read_back_the_planned_boxes_and_ids(dataset, prw_root, cuhk_root) -> None:
    _assert_loaders_read_back(dataset, prw_root if dataset is PRW else cuhk_root, _plan())


def _assert_loaders_read_back(dataset, root: Path, plan) -> None:
    id_name = str if dataset is PRW else (lambda pid: f"p{pid}")
    for split in ("train", "test"):
        loaded = dataset(root, split)
        planned = [f for f in plan.frames if f.split == split]
        assert len(loaded.images) == len(planned)
        expected = []
        for frame in planned:
            for person in frame.people:
                box = visible_box(person.box, frame.camera.size)
                if person.pid is None:
                    pid = UNLABELLED
                elif split == "train":
                    pid = loaded.train_id_names.index(id_name(person.pid))
                else:
                    pid = person.pid
                expected.append((box, pid))
        found = sorted(
            (tuple(int(v) for v in box), int(pid))
            for record in loaded.images
            for box, pid in zip(record.boxes, record.pids, strict=True)
        )
        assert found == sorted(expected)


def test_identities_split_cameras_and_unlabelled(prw_root: Path) -> None:
    train, test = PRW(prw_root, "train"), PRW(prw_root, "test")
    train_ids = set(train.train_id_names)
    test_ids = {str(int(p)) for r in test.images for p in r.pids if p != UNLABELLED}
    assert train_ids and test_ids and not train_ids & test_ids
    assert train.num_ids == len(train_ids)
    cameras: dict[str, set[int]] = {}
    for record in test.images:
        for pid in record.pids:
            if pid != UNLABELLED:
                cameras.setdefault(str(int(pid)), set()).add(record.camera)
    assert min(len(seen) for seen in cameras.values()) >= 2
    assert any((r.pids == UNLABELLED).any() for r in train.images + test.images)
    # One query per test identity and camera that sees it.
    assert len(test.queries) == sum(len(seen) for seen in cameras.values())


def test_statistics_follow_prw_test_set() -> None:
    plan = plan_dataset(400, 100, 6, seed=0, size=(640, 360))
    people = [p for f in plan.frames for p in f.people]
    heights = np.array([p.box[3] - p.box[1] for p in people]) / 360
    p5, p50, p95 = np.percentile(heights, [5, 50, 95])
    assert 0.07 < p5 < 0.11 and 0.13 < p50 < 0.18 and 0.35 < p95 < 0.55  # PRW: .084 .155 .456
    per_frame = [len(f.people) for f in plan.frames]
    assert np.median(per_frame) == 3 and 6 <= np.percentile(per_frame, 95) <= 11
    labelled = np.mean([p.pid is not None for p in people])
    assert 0.7 < labelled < 0.82
    aspect = np.median([(p.box[2] - p.box[0]) / (p.box[3] - p.box[1]) for p in people])
    assert 0.32 < aspect < 0.4


def test_small_frames_keep_people_visible() -> None:
    plan = plan_dataset(60, 10, 3, seed=1, size=(320, 192))
    heights = [p.box[3] - p.box[1] for f in plan.frames for p in f.people]
    assert min(heights) >= 30 and max(heights) > 100


def test_attributes_json(prw_root: Path) -> None:
    document = json.loads((prw_root / "attributes.json").read_text())
    assert document["vector_names"] == list(ATTRIBUTE_NAMES)
    identities = document["identities"]
    assert len(identities) == SMALL["identities"]
    assert set(PRW(prw_root, "train").train_id_names) <= set(identities)
    for attributes in identities.values():
        vector = attributes["vector"]
        assert len(vector) == len(ATTRIBUTE_NAMES) and set(vector) <= {0, 1}
        on = {ATTRIBUTE_NAMES[i] for i, v in enumerate(vector) if v}
        assert f"upper_color={attributes['upper_color']}" in on
        assert ("hat" in on) == attributes["hat"]
    clothing = {
        (a["upper_color"], a["upper_pattern"], a["lower_color"]) for a in identities.values()
    }
    assert len(clothing) == len(identities)  # identities are told apart by their clothes


def test_same_identity_looks_alike_across_cameras(prw_root: Path) -> None:
    """Nearest torso/legs colour of a sighting is mostly a sighting of the same person."""
    test = PRW(prw_root, "test")
    features, pids = [], []
    for record in test.images:
        pixels = np.asarray(Image.open(record.path).convert("RGB"), dtype=np.float32)
        for box, pid in zip(record.boxes.astype(int), record.pids, strict=True):
            if pid == UNLABELLED:
                continue
            x1, y1, x2, y2 = box
            h, w = y2 - y1, x2 - x1
            torso = pixels[y1 + int(0.2 * h) : y1 + int(0.45 * h), x1 + w // 3 : x2 - w // 3]
            legs = pixels[y1 + int(0.6 * h) : y1 + int(0.75 * h), x1 + w // 3 : x2 - w // 3]
            features.append(np.concatenate([torso.mean((0, 1)), legs.mean((0, 1))]))
            pids.append(int(pid))
    features, pids = np.array(features), np.array(pids)
    distances = np.linalg.norm(features[:, None] - features[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    assert np.mean(pids[distances.argmin(1)] == pids) >= 0.75


def test_command_line(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    command = [sys.executable, "-m", "training.synth", "--out", str(out), "--format", "cuhk"]
    command += ["--frames", "6", "--identities", "4", "--cameras", "2", "--size", "160x96"]
    done = subprocess.run(command + ["--quiet"], capture_output=True, text=True, check=True)
    assert "wrote 6 cuhk frames" in done.stderr
    assert len(list((out / "Image" / "SSM").iterdir())) == 6
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 2 and "not empty" in again.stderr
    bad = subprocess.run(command[:-2] + ["--size", "big"], capture_output=True, text=True)
    assert bad.returncode == 2 and "WxH" in bad.stderr


# ----- frame size mixes: one size per camera, PRW's 73% / 27% of the frames


def test_size_specs() -> None:
    assert parse_size("640x360") == (((640, 360), 1.0),)
    assert parse_size(" PRW ") == PRESETS["prw"] == (((1920, 1080), 0.73), ((720, 576), 0.27))
    assert parse_size("200x100:3,100x80:1") == (((200, 100), 0.75), ((100, 80), 0.25))
    aspects = [w / h for (w, h), _ in PRESETS["prw-scaled"]]
    assert aspects == [w / h for (w, h), _ in PRESETS["prw"]]
    for spec, message in [
        ("big", "WxH"),
        ("640x360:1,320x256", "WxH"),
        ("640x360:0.5,320x256:x", "WxH"),
        ("640x360:1,320x256:0", "positive"),
        ("640x360:1,640x360:1", "twice"),
        ("640x32", "at least 64x64"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_size(spec)


def test_size_mix_gives_each_camera_one_size_in_the_mix_proportions() -> None:
    plans = [plan_dataset(200, 40, 6, seed, "prw-scaled") for seed in range(4)]
    assignments = set()
    for plan in plans:
        sizes = [camera.size for camera in plan.cameras]
        assert sorted(sizes) == [(320, 256)] * 2 + [(640, 360)] * 4  # 6 x 0.27 = 1.6 -> 2
        assignments.add(tuple(sizes))
        for frames in (plan.frames, [f for f in plan.frames if f.split == "test"]):
            large = np.mean([f.camera.size == (640, 360) for f in frames])
            assert large == pytest.approx(0.73, abs=0.01)
        for size in set(sizes):  # people scale with their frame's height
            people = [p for f in plan.frames if f.camera.size == size for p in f.people]
            assert max(p.box[3] for p in people) <= size[1]
            relative = np.median([(p.box[3] - p.box[1]) / size[1] for p in people])
            assert 0.13 < relative < 0.19  # PRW: 0.155
    assert len(assignments) > 1  # which cameras get which size depends on the seed
    again = plan_dataset(200, 40, 6, 0, "prw-scaled")
    assert [c.size for c in again.cameras] == [c.size for c in plans[0].cameras]
    assert again.frames == plans[0].frames
    with pytest.raises(ValueError, match="3 frame sizes need at least as many cameras"):
        plan_dataset(20, 4, 2, 0, "96x64:1,80x64:1,64x64:1")


def test_a_size_mix_written_is_read_back(tmp_path: Path) -> None:
    spec, cameras = "192x108:0.73,120x96:0.27", 3
    command = [sys.executable, "-m", "training.synth", "--format", "prw", "--frames", "18"]
    command += ["--identities", "6", "--cameras", str(cameras), "--seed", "2", "--size", spec]
    for out in ("a", "b"):
        subprocess.run(command + ["--out", str(tmp_path / out), "--quiet"], check=True)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    plan = plan_dataset(18, 6, cameras, 2, parse_size(spec))
    _assert_loaders_read_back(PRW, tmp_path / "a", plan)
    size_of_camera = {camera.index: camera.size for camera in plan.cameras}
    records = PRW(tmp_path / "a", "train").images + PRW(tmp_path / "a", "test").images
    for record in records:
        assert Image.open(record.path).size == size_of_camera[record.camera]
    assert sorted(set(size_of_camera.values())) == [(120, 96), (192, 108)]
    cuhk = generate(tmp_path / "cuhk", "cuhk", 18, 6, cameras, 2, spec)
    _assert_loaders_read_back(CUHKSYSU, cuhk, plan)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"cameras": 1}, "2 cameras"),
        ({"frames": 2}, "3 frames"),
        ({"identities": 1}, "2 identities"),
        ({"fmt": "coco"}, "format"),
        ({"cameras": 10}, "9 cameras"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, arguments: dict, message: str) -> None:
    options = {"fmt": "prw", "frames": 6, "identities": 4, "cameras": 2, "size": (96, 64)}
    with pytest.raises(ValueError, match=message):
        generate(tmp_path / "x", **{**options, **arguments})


def test_synth_json_records_a_command_that_remakes_the_dataset(prw_root: Path, tmp_path) -> None:
    recipe = json.loads((prw_root / "synth.json").read_text())
    assert recipe["options"]["seed"] == SMALL["seed"]
    command = recipe["command"].split()
    assert command[:3] == ["python", "-m", "training.synth"]
    remade = tmp_path / "remade"
    command[command.index("--out") + 1] = str(remade)
    done = subprocess.run(
        [sys.executable, *command[1:], "--quiet"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    for name in ("query_info.txt", "frame_test.mat", "synth.json"):
        assert (remade / name).read_bytes() == (prw_root / name).read_bytes(), name


@pytest.mark.parametrize("spec", ["640x360", "prw", "prw-scaled", "640x360:0.6,320x256:0.4"])
def test_format_size_reads_back_as_the_same_mix(spec: str) -> None:
    assert parse_size(format_size(parse_size(spec))) == parse_size(spec)
