"""The evaluation protocols: hand-computed cases, scikit-learn cross-checks, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from training.data import load_dataset
from training.data.base import UNLABELLED, GalleryEntry, ImageRecord, Query
from training.evaluate import (
    ResultsError,
    average_precision,
    evaluate_dataset,
    evaluate_detection,
    evaluate_search,
    load_results,
    save_results,
    small_box_iou_threshold,
)

PERSON = [0.0, 0.0, 50.0, 100.0]
ELSEWHERE = [200.0, 200.0, 250.0, 300.0]


def unit(angle_degrees: float, scale: float = 1.0) -> list[float]:
    """A 2-d embedding whose similarity to [1, 0] is cos(angle) (scale tests normalisation)."""
    angle = np.radians(angle_degrees)
    return [scale * np.cos(angle), scale * np.sin(angle)]


def sim(cosine: float) -> list[float]:
    return unit(np.degrees(np.arccos(cosine)), scale=3.0)


def image(boxes=(), sims=(), scores=None) -> dict:
    return {
        "boxes": [list(b) for b in boxes],
        "scores": list(scores) if scores is not None else [0.9] * len(boxes),
        "embeddings": [sim(s) for s in sims],
    }


def query(name: str = "q.jpg") -> Query:
    return Query(image=name, box=np.array(PERSON), pid=1, camera=1)


def entry(name: str, holds_person: bool) -> GalleryEntry:
    return GalleryEntry(image=name, gt_box=np.array(PERSON) if holds_person else None)


def search_one(gallery: list[GalleryEntry], detections: dict, **kwargs) -> dict:
    results = {"gallery": detections, "queries": [{"embedding": [2.0, 0.0]}]}
    return evaluate_search([query()], [gallery], results, **kwargs)


# ----- search: hand-computed cases


def test_missed_ground_truth_lowers_ap_through_recall():
    gallery = [entry("a.jpg", True), entry("b.jpg", True), entry("c.jpg", False)]
    detections = {
        "a.jpg": image([PERSON], [0.8]),
        "b.jpg": image(),  # the person is there but nothing was detected
        "c.jpg": image([PERSON], [0.9]),
    }
    metrics = search_one(gallery, detections)
    # ranking: c (0.9, wrong), a (0.8, right): AP 1/2; recall 1/2
    assert metrics["mAP"] == pytest.approx(0.25)
    assert (metrics["top1"], metrics["top5"], metrics["top10"]) == (0.0, 1.0, 1.0)


def test_gallery_image_missing_from_results_still_counts_its_ground_truth():
    gallery = [entry("a.jpg", True), entry("b.jpg", True), entry("c.jpg", False)]
    detections = {"a.jpg": image([PERSON], [0.8]), "c.jpg": image([PERSON], [0.5])}
    assert search_one(gallery, detections)["mAP"] == pytest.approx(0.5)


@pytest.mark.parametrize(("first", "top1"), [("neg.jpg", 0.0), ("pos.jpg", 1.0)])
def test_tied_similarities(first, top1):
    gallery = [entry("neg.jpg", False), entry("pos.jpg", True)]
    if first == "pos.jpg":
        gallery.reverse()
    detections = {"neg.jpg": image([PERSON], [0.5]), "pos.jpg": image([PERSON], [0.5])}
    metrics = search_one(gallery, detections)
    # tied items enter the ranking together: precision 1/2 at the only threshold
    assert metrics["mAP"] == pytest.approx(0.5)
    assert metrics["mAP"] == pytest.approx(average_precision_score([0, 1], [0.5, 0.5]))
    assert metrics["top1"] == top1  # ties keep the gallery order


def test_empty_gallery_image_is_harmless():
    gallery = [entry("a.jpg", True), entry("empty.jpg", False)]
    detections = {"a.jpg": image([PERSON], [0.7]), "empty.jpg": image()}
    assert search_one(gallery, detections)["mAP"] == pytest.approx(1.0)


def test_query_never_detected_scores_zero_and_counts_in_the_mean():
    galleries = [[entry("a.jpg", True)], [entry("a.jpg", False), entry("b.jpg", True)]]
    detections = {"a.jpg": image([PERSON], [0.9]), "b.jpg": image([ELSEWHERE], [0.99])}
    results = {"gallery": detections, "queries": [{"embedding": [1, 0]}, {"embedding": [1, 0]}]}
    metrics = evaluate_search([query(), query()], galleries, results)
    assert metrics["mAP"] == pytest.approx(0.5)
    assert metrics["top1"] == metrics["top10"] == pytest.approx(0.5)


def test_only_the_most_similar_overlapping_detection_is_positive():
    far, near_a, near_b = ELSEWHERE, [0, 5, 50, 105], [2, 0, 52, 100]
    detections = {"a.jpg": image([far, near_a, near_b], [0.9, 0.8, 0.7])}
    metrics = search_one([entry("a.jpg", True)], detections)
    # ranking 0.9 (no overlap), 0.8 (positive), 0.7 (overlaps, but not first): AP 1/2
    assert metrics["mAP"] == pytest.approx(0.5)
    assert (metrics["top1"], metrics["top5"]) == (0.0, 1.0)


@pytest.mark.parametrize(("gt_height", "shift", "found"), [(20, 8, True), (200, 80, False)])
def test_small_boxes_get_a_lower_iou_bar(gt_height, shift, found):
    width = gt_height / 2
    gt = np.array([0, 0, width, gt_height], dtype=float)
    shifted = [0, shift, width, gt_height + shift]  # IoU (h - d) / (h + d) = 0.43 in both cases
    detections = {"a.jpg": image([shifted], [0.9])}
    metrics = search_one([GalleryEntry("a.jpg", gt)], detections)
    assert metrics["mAP"] == (1.0 if found else 0.0)


def test_small_box_iou_threshold_formula():
    assert small_box_iou_threshold(np.array([0, 0, 10, 20])) == pytest.approx(200 / 600)
    assert small_box_iou_threshold(np.array([5, 5, 105, 205])) == 0.5


def test_detections_below_det_thresh_are_dropped():
    gallery = [entry("a.jpg", True), entry("c.jpg", False)]
    detections = {
        "a.jpg": image([PERSON], [0.8], scores=[0.5]),  # at the threshold: kept
        "c.jpg": image([PERSON], [0.9], scores=[0.3]),
    }
    assert search_one(gallery, detections)["mAP"] == pytest.approx(1.0)
    assert search_one(gallery, detections, det_thresh=0.2)["mAP"] == pytest.approx(0.5)
    assert search_one(gallery, detections, det_thresh=0.6)["mAP"] == 0.0


def test_image_listed_twice_counts_its_ground_truth_twice_but_is_scored_once():
    """SeqNet's eval_search_cuhk: two ground truths, one ranked detection of a.jpg."""
    detections = {"a.jpg": image([PERSON], [0.8]), "c.jpg": image([PERSON], [0.9])}
    gallery = [entry("a.jpg", True), entry("c.jpg", False), entry("a.jpg", True)]
    # ranking 0.9 wrong, 0.8 right: AP 1/2, recall 1 of 2 ground truths
    metrics = search_one(gallery, detections)
    assert metrics["mAP"] == pytest.approx(0.5 * 0.5)
    assert metrics["top1"] == 0.0 and metrics["top5"] == 1.0
    # the first listing decides the label: listed first without the person, a.jpg is negative
    gallery = [entry("a.jpg", False), entry("c.jpg", False), entry("a.jpg", True)]
    assert search_one(gallery, detections)["mAP"] == 0.0


def test_query_image_listed_in_its_own_gallery_is_kept():
    detections = {"q.jpg": image([PERSON], [0.95]), "a.jpg": image([PERSON], [0.8])}
    gallery = [entry("q.jpg", True), entry("a.jpg", True)]
    assert search_one(gallery, detections)["mAP"] == pytest.approx(1.0)


def test_query_without_ground_truth_is_left_out_and_counted():
    galleries = [[entry("a.jpg", True)], [entry("c.jpg", False)]]
    detections = {"a.jpg": image([PERSON], [0.9]), "c.jpg": image([PERSON], [0.9])}
    results = {"gallery": detections, "queries": [{"embedding": [1, 0]}] * 2}
    metrics = evaluate_search([query(), query()], galleries, results)
    assert (metrics["mAP"], metrics["queries_without_gt"], metrics["num_queries"]) == (1.0, 1, 2)


# ----- scikit-learn cross-checks


def test_average_precision_matches_sklearn_on_random_rankings():
    rng = np.random.default_rng(0)
    for _ in range(300):
        size = int(rng.integers(1, 60))
        labels = rng.random(size) < rng.random()
        if not labels.any():
            labels[rng.integers(size)] = True
        scores = rng.normal(size=size)
        if rng.random() < 0.5:
            scores = np.round(scores, 1)  # many ties
        expected = average_precision_score(labels, scores)
        assert average_precision(labels, scores) == pytest.approx(expected, abs=1e-12)


def test_search_matches_sklearn_on_random_galleries():
    rng = np.random.default_rng(1)
    for _ in range(40):
        num_images, dim = int(rng.integers(2, 25)), 8
        q = rng.normal(size=dim)
        gallery, detections, labels, scores, num_gt = [], {}, [], [], 0
        for index in range(num_images):
            name = f"{index}.jpg"
            holds = bool(rng.random() < 0.4)
            num_gt += holds
            count = int(rng.integers(0, 4))
            # a detection either sits exactly on the person or far away: its label is known
            on_person = holds and count > 0 and rng.random() < 0.8
            boxes = [PERSON if (on_person and k == 0) else ELSEWHERE for k in range(count)]
            vectors = rng.normal(size=(count, dim))
            gallery.append(entry(name, holds))
            detections[name] = {"boxes": boxes, "scores": [0.9] * count, "embeddings": vectors}
            labels += [on_person and k == 0 for k in range(count)]
            cosine = vectors @ q / np.linalg.norm(vectors, axis=1) / np.linalg.norm(q)
            scores += list(cosine)
        results = {"gallery": detections, "queries": [{"embedding": q}]}
        if num_gt == 0:
            continue
        metrics = evaluate_search([query()], [gallery], results)
        labels, scores = np.array(labels, dtype=bool), np.array(scores)
        expected = 0.0
        if labels.any():
            expected = average_precision_score(labels, scores) * labels.sum() / num_gt
        assert metrics["mAP"] == pytest.approx(expected, abs=1e-6)
        ranked = labels[np.argsort(-scores)]
        for k in (1, 5, 10):
            assert metrics[f"top{k}"] == float(ranked[:k].any())


# ----- detection


def record(name: str, boxes: list, pids: list) -> ImageRecord:
    return ImageRecord(
        name=name,
        path=Path(name),
        boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
        pids=np.array(pids, dtype=np.int64),
        camera=1,
    )


def detection_case() -> tuple[list[ImageRecord], dict]:
    images = [
        record("1.jpg", [PERSON, ELSEWHERE], [3, 4]),
        record("2.jpg", [PERSON], [UNLABELLED]),
        record("3.jpg", [ELSEWHERE], [5]),
    ]
    gallery = {
        "1.jpg": {
            "boxes": [PERSON, [400, 0, 450, 100], [0, 10, 50, 110]],
            "scores": [0.9, 0.8, 0.7],
        },
        "2.jpg": {"boxes": [], "scores": []},
        "3.jpg": {"boxes": [ELSEWHERE], "scores": [0.6]},
    }
    return images, {"gallery": gallery, "queries": []}


def test_detection_ap_and_recall_by_hand():
    images, results = detection_case()
    metrics = evaluate_detection(images, results)
    # true, false, false (a second box on a matched person), true; 2 of 4 people found
    assert metrics["recall"] == pytest.approx(0.5)
    assert metrics["ap"] == pytest.approx((1 + 2 / 4) / 2 * 0.5)
    assert metrics["ap"] == pytest.approx(
        average_precision_score([1, 0, 0, 1], [0.9, 0.8, 0.7, 0.6]) * 0.5
    )


def test_detection_labelled_only_and_thresholds():
    images, results = detection_case()
    assert evaluate_detection(images, results, labelled_only=True)["recall"] == pytest.approx(2 / 3)
    assert evaluate_detection(images, results, det_thresh=0.65)["recall"] == pytest.approx(0.25)
    assert evaluate_detection(images[1:2], results)["recall"] == 0.0


@pytest.mark.parametrize(("iou_thresh", "recall"), [(0.8, 1.0), (0.9, 0.0)])
def test_detection_iou_thresh(iou_thresh, recall):
    images = [record("1.jpg", [PERSON], [1])]
    shifted = [0, 10, 50, 110]  # IoU 90 / 110 = 0.82 with the person
    results = {"gallery": {"1.jpg": {"boxes": [shifted], "scores": [0.9]}}, "queries": []}
    assert evaluate_detection(images, results, iou_thresh=iou_thresh)["recall"] == recall


def test_detection_pairs_mutual_best_overlaps():
    images = [record("1.jpg", [PERSON], [1])]
    boxes = [[0, 20, 50, 120], PERSON]  # the higher-scoring box overlaps less
    results = {"gallery": {"1.jpg": {"boxes": boxes, "scores": [0.9, 0.6]}}, "queries": []}
    metrics = evaluate_detection(images, results)
    assert metrics["recall"] == 1.0
    assert metrics["ap"] == pytest.approx(0.5)  # ranking: false, true


# ----- results files and errors


def test_results_round_trip_with_numpy(tmp_path):
    results = {
        "gallery": {
            "a.jpg": {
                "boxes": np.zeros((1, 4)),
                "scores": np.float32([0.5]),
                "embeddings": np.ones((1, 3), dtype=np.float32),
            }
        },
        "queries": [{"embedding": np.arange(3.0)}],
    }
    path = save_results(results, tmp_path / "sub" / "R.json")
    loaded = load_results(path)
    assert loaded["gallery"]["a.jpg"]["embeddings"] == [[1.0, 1.0, 1.0]]
    assert loaded["queries"][0]["embedding"] == [0.0, 1.0, 2.0]


def test_unreadable_results_files_are_named(tmp_path):
    with pytest.raises(ResultsError, match="missing.json"):
        load_results(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ResultsError, match="bad.json"):
        load_results(tmp_path / "bad.json")


@pytest.mark.parametrize(
    ("detections", "message"),
    [
        ({"boxes": [[0, 0, 1]], "scores": [0.9], "embeddings": [[1, 0]]}, "N x 4"),
        ({"boxes": [PERSON], "scores": [0.9, 0.8], "embeddings": [[1, 0]]}, "2 scores"),
        ({"boxes": [PERSON], "scores": [0.9], "embeddings": [[1, 0], [0, 1]]}, "embeddings"),
        ({"boxes": [PERSON], "scores": [float("nan")], "embeddings": [[1, 0]]}, "NaN"),
        ({"boxes": [PERSON], "scores": [0.9], "embeddings": [[1, 0, 0]]}, "dimensions"),
        ({"boxes": [PERSON], "scores": [0.9]}, "embeddings"),
        ({"scores": [0.9]}, "'boxes'"),
    ],
)
def test_malformed_results_are_clear_errors(detections, message):
    with pytest.raises(ResultsError, match=message):
        search_one([entry("a.jpg", True)], {"a.jpg": detections})


def test_wrong_query_count_is_an_error():
    results = {"gallery": {}, "queries": [{"embedding": [1, 0]}] * 2}
    with pytest.raises(ResultsError, match="2 query embeddings but the protocol has 1"):
        evaluate_search([query()], [[entry("a.jpg", True)]], results)


# ----- whole protocol on hand-made records


class TinyDataset:
    """Three test frames from two cameras; person 7 is the query, seen in frames 0 and 2."""

    name = "prw"

    def __init__(self) -> None:
        self.images = [
            record("c1_0.jpg", [PERSON, ELSEWHERE], [7, 8]),
            record("c1_1.jpg", [ELSEWHERE], [UNLABELLED]),
            record("c2_2.jpg", [ELSEWHERE, PERSON], [8, 7]),
        ]
        self.queries = [Query("c1_0.jpg", np.array(PERSON), 7, 1)]

    def gallery(self, query_index, gallery_size=100, cross_camera=False):
        frames = [im for im in self.images if im.name != self.queries[query_index].image]
        if cross_camera:
            frames = [im for im in frames if im.name.startswith("c2")]
        return [
            GalleryEntry(im.name, im.boxes[list(im.pids).index(7)] if 7 in im.pids else None)
            for im in frames
        ]


def perfect_results(dataset) -> dict:
    """Ground-truth boxes with one-hot identity embeddings (unlabelled: a shared extra axis)."""
    axis = {7: 0, 8: 1, UNLABELLED: 2}
    gallery = {
        im.name: {
            "boxes": im.boxes,
            "scores": np.ones(len(im.boxes)),
            "embeddings": np.eye(3)[[axis[int(p)] for p in im.pids]],
        }
        for im in dataset.images
    }
    queries = [{"embedding": np.eye(3)[axis[q.pid]] * 5} for q in dataset.queries]
    return {"gallery": gallery, "queries": queries}


@pytest.mark.parametrize("cross_camera", [False, True])
def test_perfect_results_score_one(cross_camera):
    dataset = TinyDataset()
    metrics = evaluate_dataset(dataset, perfect_results(dataset), cross_camera=cross_camera)
    for key in ("mAP", "top1", "top5", "top10", "det_ap", "det_recall", "det_recall_labelled"):
        assert metrics[key] == 1.0, key
    assert metrics["cross_camera"] is cross_camera
    assert (metrics["dataset"], metrics["gallery_size"], metrics["det_thresh"]) == (
        "prw",
        None,
        0.5,
    )
    assert metrics["missing_gallery_images"] == 0


def test_missing_frame_counts_as_no_detections():
    dataset = TinyDataset()
    results = perfect_results(dataset)
    del results["gallery"]["c2_2.jpg"]
    metrics = evaluate_dataset(dataset, results)
    assert metrics["missing_gallery_images"] == 1
    assert metrics["mAP"] == 0.0
    assert metrics["det_recall"] == pytest.approx(3 / 5)


class _TrackedGallery(list):
    """A gallery list that can be watched with a weak reference."""


class RepeatedQueries(TinyDataset):
    """TinyDataset's query asked many times; counts the galleries still alive at each request."""

    def __init__(self, repeats: int) -> None:
        super().__init__()
        self.queries = self.queries * repeats
        self._handed_out: list[weakref.ref] = []
        self.most_alive_before_a_request = 0

    def gallery(self, query_index, gallery_size=100, cross_camera=False):
        alive = sum(ref() is not None for ref in self._handed_out)
        self.most_alive_before_a_request = max(self.most_alive_before_a_request, alive)
        tracked = _TrackedGallery(super().gallery(query_index, gallery_size, cross_camera))
        self._handed_out.append(weakref.ref(tracked))
        return tracked


def test_evaluate_dataset_builds_galleries_one_query_at_a_time():
    # More queries than one block of the similarity product, so blocks are crossed too.
    dataset = RepeatedQueries(repeats=600)
    results = perfect_results(dataset)
    results["gallery"]["c2_2.jpg"]["embeddings"][1] = [0.0, 1.0, 0.0]  # half the positives lost
    metrics = evaluate_dataset(dataset, results)
    # At the request for the next gallery only the one being finished may still be alive.
    assert dataset.most_alive_before_a_request <= 1
    assert len(dataset._handed_out) == metrics["num_queries"] == 600
    single = TinyDataset()
    single_results = {**results, "queries": results["queries"][:1]}
    assert metrics["mAP"] == evaluate_dataset(single, single_results)["mAP"] < 1.0


# ----- the command line on synthetic data in the real on-disk layouts


def run_cli(name: str, root: Path, results: Path, *extra: str) -> subprocess.CompletedProcess:
    # The small synthetic CUHK-SYSU test split only has room for TestG50.mat.
    size = ["--gallery-size", "50"] if name == "cuhk" and "--gallery-size" not in extra else []
    command = [sys.executable, "-m", "training.evaluate", "--dataset", name]
    command += ["--data-root", str(root), "--results", str(results), *size, *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module", params=["prw", "cuhk"])
def synthetic(request, tmp_path_factory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp(request.param)
    command = [sys.executable, "-m", "training.synth", "--out", str(root)]
    command += ["--format", request.param, "--frames", "60", "--identities", "12"]
    command += ["--cameras", "3", "--seed", "3", "--size", "320x180", "--quiet"]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    return request.param, root


def identity_perfect_results(dataset) -> dict:
    """Ground-truth boxes, each embedded as a one-hot vector of its person id."""
    pids = {int(p) for im in dataset.images for p in im.pids} | {q.pid for q in dataset.queries}
    axis = {pid: index for index, pid in enumerate(sorted(pids))}
    one_hot = np.eye(len(axis))
    gallery = {
        im.name: {
            "boxes": im.boxes,
            "scores": np.ones(len(im.boxes)),
            "embeddings": one_hot[[axis[int(p)] for p in im.pids]].reshape(-1, len(axis)),
        }
        for im in dataset.images
    }
    queries = [{"embedding": one_hot[axis[q.pid]]} for q in dataset.queries]
    return {"gallery": gallery, "queries": queries}


def test_cli_scores_identity_perfect_results_at_one(synthetic, tmp_path):
    name, root = synthetic
    results = identity_perfect_results(load_dataset(name, root, "test"))
    path = save_results(results, tmp_path / "R.json")
    protocol = ["--cross-camera"] if name == "prw" else ["--gallery-size", "-1"]
    for extra in ([], protocol):
        done = run_cli(name, root, path, "--json", *extra)
        assert done.returncode == 0, done.stderr
        metrics = json.loads(done.stdout)
        for key in ("mAP", "top1", "top5", "top10", "det_ap", "det_recall", "det_recall_labelled"):
            assert metrics[key] == 1.0, (extra, key)
        assert metrics["dataset"] == name and metrics["cross_camera"] == ("--cross-camera" in extra)


def test_cli_agrees_with_the_python_api_on_noisy_results(synthetic, tmp_path):
    name, root = synthetic
    dataset = load_dataset(name, root, "test")
    results = identity_perfect_results(dataset)
    rng = np.random.default_rng(5)
    for detections in results["gallery"].values():
        detections["boxes"] = detections["boxes"] + rng.normal(
            scale=3.0, size=(len(detections["boxes"]), 4)
        )
        detections["embeddings"] = detections["embeddings"] + rng.normal(
            scale=0.4, size=detections["embeddings"].shape
        )
        detections["scores"] = rng.random(len(detections["boxes"]))
    dropped = sorted(results["gallery"])[0]
    del results["gallery"][dropped]
    done = run_cli(
        name, root, save_results(results, tmp_path / "R.json"), "--json", "--det-thresh", "0.3"
    )
    assert done.returncode == 0, done.stderr
    assert "no entry for 1 of" in done.stderr
    expected = evaluate_dataset(
        dataset, results, gallery_size=50 if name == "cuhk" else None, det_thresh=0.3
    )
    assert json.loads(done.stdout) == pytest.approx({**expected, "query_mode": "frame"})
    assert 0.0 < expected["mAP"] < 1.0 and 0.0 < expected["det_ap"] < 1.0


def test_cli_table_and_errors(synthetic, tmp_path):
    name, root = synthetic
    results = identity_perfect_results(load_dataset(name, root, "test"))
    table = run_cli(name, root, save_results(results, tmp_path / "good.json"))
    assert table.returncode == 0 and "search mAP" in table.stdout and "100.00%" in table.stdout

    short = save_results({**results, "queries": results["queries"][:-1]}, tmp_path / "short.json")
    done = run_cli(name, root, short, "--json")
    assert done.returncode == 1
    assert "short.json" in done.stderr and "query embeddings" in done.stderr

    elsewhere = {"elsewhere.jpg": next(iter(results["gallery"].values()))}
    other = save_results({**results, "gallery": elsewhere}, tmp_path / "other.json")
    done = run_cli(name, root, other)
    assert done.returncode == 1 and "other.json" in done.stderr and "none of the" in done.stderr

    done = run_cli(name, root, tmp_path / "no.json")
    assert done.returncode == 1 and "no.json" in done.stderr


def test_cli_refuses_the_other_dataset_s_protocol_options(tmp_path):
    prw = run_cli("prw", tmp_path, tmp_path / "R.json", "--gallery-size", "100")
    cuhk = run_cli("cuhk", tmp_path, tmp_path / "R.json", "--cross-camera")
    assert prw.returncode == cuhk.returncode == 2
    assert "--gallery-size" in prw.stderr and "--cross-camera" in cuhk.stderr
