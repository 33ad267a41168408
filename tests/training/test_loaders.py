"""PRW and CUHK-SYSU loaders on small hand-made files: every quirk of the real formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from training.data import CUHKSYSU, PRW, UNLABELLED, DatasetError, load_dataset
from training.synth.matlab import NO_BOX, NOT_HARD, cell_column, idlocate, scalar, struct_row

# ---------------------------------------------------------------- PRW


def _write_images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (8, 8), (90, 90, 90)).save(folder / name)


def _prw(root: Path, annotations: dict[str, tuple[str, list]], train: list, test: list, queries):
    """A PRW folder: annotations maps frame -> (variable name, [pid, x, y, w, h] rows)."""
    _write_images(root / "frames", [f"{name}.jpg" for name in annotations])
    (root / "annotations").mkdir()
    for name, (key, rows) in annotations.items():
        savemat(root / "annotations" / f"{name}.jpg.mat", {key: np.array(rows, dtype=float)})
    savemat(root / "frame_train.mat", {"img_index_train": cell_column(train)})
    savemat(root / "frame_test.mat", {"img_index_test": cell_column(test)})
    (root / "query_info.txt").write_bytes(queries.encode())
    return root


@pytest.fixture
def prw_root(tmp_path: Path) -> Path:
    annotations = {
        "c1s1_000025": ("box_new", [[12, 10, 20, 30, 60], [-2, 100, 20, 25, 50]]),
        "c2s1_000050": ("anno_file", [[7, -6, -4, 30, 60], [12, 50, 10, 0, 40]]),
        "c3s2_000075": ("anno_previous", [[3, 5, 5, 10, 10], [12, -40, 0, 30, 50]]),
        "c1s3_000100": ("box_new", [[101, 5, 6, 20, 40], [-2, 60, 6, 20, 40]]),
        "c2s3_000125": ("box_new", [[101, 15, 16, 20, 40], [102, 50, 6, 20, 40]]),
        "c1s3_000150": ("box_new", [[102, 10, 10, 20, 40], [101, 40, 10, 20, 40]]),
    }
    queries = "101 5 6 20 40 c1s3_000100\r\n102 50.5 6 20 40 c2s3_000125\r\n"
    train = ["c1s1_000025", "c2s1_000050", "c3s2_000075"]
    test = ["c1s3_000100", "c2s3_000125", "c1s3_000150"]
    return _prw(tmp_path / "prw", annotations, train, test, queries)


def test_prw_key_fallback_clipping_and_dropping(prw_root: Path) -> None:
    train = PRW(prw_root, "train")
    assert [r.name for r in train.images] == [
        "c1s1_000025.jpg",
        "c2s1_000050.jpg",
        "c3s2_000075.jpg",
    ]
    first, second, third = train.images
    np.testing.assert_array_equal(first.boxes, [[10, 20, 40, 80], [100, 20, 125, 70]])
    # anno_file: the negative corner is clipped, the right edge stays x + w; w = 0 is dropped.
    np.testing.assert_array_equal(second.boxes, [[0, 0, 24, 56]])
    # anno_previous: a box lying wholly left of the frame has nothing left after clipping.
    np.testing.assert_array_equal(third.boxes, [[5, 5, 15, 15]])
    assert all(r.boxes.dtype == np.float32 and r.pids.dtype == np.int64 for r in train.images)
    assert [r.camera for r in train.images] == [1, 2, 3]


def test_prw_train_ids_are_contiguous_in_pid_order(prw_root: Path) -> None:
    train = PRW(prw_root, "train")
    assert train.train_id_names == ["3", "7", "12"] and train.num_ids == 3
    assert [r.pids.tolist() for r in train.images] == [[2, UNLABELLED], [1], [0]]
    assert train.queries == [] and train.queue_size == 500 and train.name == "prw"


def test_prw_test_split_queries_and_gallery(prw_root: Path) -> None:
    test = PRW(prw_root, "test")
    assert test.num_ids == 0
    assert test.image("c1s3_000100.jpg").pids.tolist() == [101, UNLABELLED]
    assert [(q.image, q.pid, q.camera) for q in test.queries] == [
        ("c1s3_000100.jpg", 101, 1),
        ("c2s3_000125.jpg", 102, 2),
    ]
    np.testing.assert_allclose(test.queries[1].box, [50.5, 6, 70.5, 46])
    gallery = test.gallery(0)
    assert [g.image for g in gallery] == ["c2s3_000125.jpg", "c1s3_000150.jpg"]
    np.testing.assert_array_equal(gallery[0].gt_box, [15, 16, 35, 56])
    np.testing.assert_array_equal(gallery[1].gt_box, [40, 10, 60, 50])
    cross = test.gallery(0, cross_camera=True)
    assert [(g.image, g.gt_box is not None) for g in cross] == [("c2s3_000125.jpg", True)]
    assert [g.gt_box is None for g in test.gallery(1)] == [True, False]
    with pytest.raises(ValueError, match="test split"):
        PRW(prw_root, "train").gallery(0)


def test_prw_query_info_with_lf_and_blank_lines(prw_root: Path) -> None:
    (prw_root / "query_info.txt").write_text(
        "101 5 6 20 40 c1s3_000100\n\n102 -3 6 20 40 c2s3_000125\n"
    )
    queries = PRW(prw_root, "test").queries
    assert [q.pid for q in queries] == [101, 102]
    np.testing.assert_array_equal(queries[1].box, [0, 6, 17, 46])


@pytest.mark.parametrize(
    "line",
    ["101 5 6 20 c1s3_000100", "p101 5 6 20 40 c1s3_000100", "101 5 six 20 40 c1s3_000100"],
)
def test_prw_malformed_query_line_names_file_and_line(prw_root: Path, line: str) -> None:
    (prw_root / "query_info.txt").write_text(f"101 5 6 20 40 c1s3_000100\r\n{line}\r\n")
    with pytest.raises(DatasetError, match=r"query_info\.txt, line 2"):
        PRW(prw_root, "test")


def test_prw_query_of_unknown_frame(prw_root: Path) -> None:
    (prw_root / "query_info.txt").write_text("101 5 6 20 40 c1s1_000025\n")
    with pytest.raises(DatasetError, match="c1s1_000025.jpg is no test frame"):
        PRW(prw_root, "test")


def test_prw_bad_files_name_the_file(prw_root: Path) -> None:
    savemat(prw_root / "annotations" / "c2s1_000050.jpg.mat", {"boxes": np.zeros((1, 5))})
    with pytest.raises(DatasetError, match=r"c2s1_000050\.jpg\.mat: expected variable box_new"):
        PRW(prw_root, "train")
    savemat(prw_root / "annotations" / "c2s1_000050.jpg.mat", {"box_new": np.zeros((1, 4))})
    with pytest.raises(DatasetError, match=r"c2s1_000050\.jpg\.mat: box_new must be N x 5"):
        PRW(prw_root, "train")
    (prw_root / "annotations" / "c2s1_000050.jpg.mat").unlink()
    with pytest.raises(DatasetError, match=r"c2s1_000050\.jpg\.mat: file not found"):
        PRW(prw_root, "train")
    savemat(prw_root / "frame_test.mat", {"img_index_train": cell_column(["c1s3_000100"])})
    with pytest.raises(DatasetError, match=r"frame_test\.mat: expected variable img_index_test"):
        PRW(prw_root, "test")
    (prw_root / "frame_test.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetError, match=r"frame_test\.mat: not a readable MATLAB file"):
        PRW(prw_root, "test")


def test_prw_missing_image(prw_root: Path) -> None:
    (prw_root / "frames" / "c3s2_000075.jpg").unlink()
    with pytest.raises(DatasetError, match=r"frames: 1 listed images missing.*c3s2_000075"):
        PRW(prw_root, "train")


def test_unknown_split_and_dataset(prw_root: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        PRW(prw_root, "val")
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("market", prw_root, "test")
    assert load_dataset("PRW", prw_root, "test").split == "test"


# ---------------------------------------------------------------- CUHK-SYSU


def _box(x: int, y: int, w: int, h: int) -> dict[str, np.ndarray]:
    return {"idlocate": idlocate((x, y, w, h)), "ishard": NOT_HARD}


def _images_mat(images: dict[str, list[tuple]]) -> np.ndarray:
    records = [
        {
            "imname": name,
            "nAppear": scalar(len(boxes)),
            "box": struct_row([_box(*b) for b in boxes], ("idlocate", "ishard")),
        }
        for name, boxes in images.items()
    ]
    return struct_row(records, ("imname", "nAppear", "box"))


def _train_mat(identities: list[tuple[str, list[tuple]]]) -> np.ndarray:
    cells = []
    for idname, scenes in identities:
        scene = struct_row([{"imname": s[0], **_box(*s[1])} for s in scenes], _SCENE)
        record = {"idname": idname, "nAppear": scalar(len(scenes)), "scene": scene}
        cells.append(struct_row([record], ("idname", "nAppear", "scene")))
    return cell_column(cells)


_SCENE = ("imname", "idlocate", "ishard")


def _protocol(queries: list[tuple[str, str, tuple, list]]) -> np.ndarray:
    """queries: (idname, image, box, [(gallery image, box or None), ...])."""
    records = []
    for idname, image, box, gallery in queries:
        query = struct_row([{"imname": image, **_box(*box), "idname": idname}], (*_SCENE, "idname"))
        entries = [
            {"imname": name, "idlocate": NO_BOX if b is None else idlocate(b), "ishard": NOT_HARD}
            for name, b in gallery
        ]
        records.append({"Query": query, "Gallery": struct_row(entries, _SCENE)})
    return struct_row(records, ("Query", "Gallery"))


IMAGES = {
    "s1.jpg": [(10, 10, 20, 40), (65000, 5, 1000, 40), (50, 50, 0, 30)],
    "s2.jpg": [(1, 2, 30, 60), (40, 2, 30, 60)],
    "s3.jpg": [(5, 5, 10, 20), (30, 5, 10, 20)],
    "s4.jpg": [(7, 7, 14, 28)],
    "s5.jpg": [(8, 8, 16, 32), (40, 8, 16, 32)],
    "s6.jpg": [(9, 9, 18, 36)],
}
POOL = ["s4.jpg", "s5.jpg", "s6.jpg", "s3.jpg"]
TEST_G2 = [
    ("p10581", "s4.jpg", (7, 7, 14, 28), [("s5.jpg", (40, 8, 16, 32)), ("s3.jpg", None)]),
    ("p7", "s5.jpg", (8, 8, 16, 32), [("s6.jpg", (9, 9, 18, 36)), ("s6.jpg", (9, 9, 18, 36))]),
]
TEST_G3 = [
    ("p10581", "s4.jpg", (7, 7, 14, 28), [("s5.jpg", (40, 8, 16, 32)), ("s4.jpg", None)]),
    ("p7", "s5.jpg", (8, 8, 16, 32), [("s6.jpg", (9, 9, 18, 36)), ("s3.jpg", None)]),
]


@pytest.fixture
def cuhk_root(tmp_path: Path) -> Path:
    root = tmp_path / "cuhk"
    _write_images(root / "Image" / "SSM", list(IMAGES))
    protocol = root / "annotation" / "test" / "train_test"
    protocol.mkdir(parents=True)
    savemat(root / "annotation" / "Images.mat", {"Img": _images_mat(IMAGES)})
    savemat(root / "annotation" / "pool.mat", {"pool": cell_column(POOL)})
    train = [
        ("p20", [("s2.jpg", (40, 2, 30, 60)), ("s1.jpg", (65000, 5, 1000, 40))]),
        ("p3", [("s2.jpg", (1, 2, 30, 60))]),
    ]
    savemat(protocol / "Train.mat", {"Train": _train_mat(train)})
    savemat(protocol / "TestG2.mat", {"TestG2": _protocol(TEST_G2)})
    savemat(protocol / "TestG3.mat", {"TestG3": _protocol(TEST_G3)})
    return root


def test_cuhk_train_split(cuhk_root: Path) -> None:
    train = CUHKSYSU(cuhk_root, "train")
    assert [r.name for r in train.images] == ["s1.jpg", "s2.jpg"]  # all images minus the pool
    assert train.train_id_names == ["p20", "p3"] and train.num_ids == 2  # Train.mat order
    first, second = train.images
    # uint16 x + w would wrap to 464; the zero-width box is dropped.
    np.testing.assert_array_equal(first.boxes, [[10, 10, 30, 50], [65000, 5, 66000, 45]])
    assert first.pids.tolist() == [UNLABELLED, 0]
    assert second.pids.tolist() == [1, 0]
    assert {r.camera for r in train.images} == {0}
    assert train.queue_size == 5000 and train.name == "cuhk" and train.queries == []


def test_cuhk_test_split_ids_and_queries(cuhk_root: Path) -> None:
    test = CUHKSYSU(cuhk_root, "test")
    assert [r.name for r in test.images] == POOL and test.num_ids == 0
    assert test.gallery_sizes == [2, 3]
    assert [(q.image, q.pid, q.camera) for q in test.queries] == [
        ("s4.jpg", 10581, 0),
        ("s5.jpg", 7, 0),
    ]
    np.testing.assert_array_equal(test.queries[0].box, [7, 7, 21, 35])
    assert test.image("s5.jpg").pids.tolist() == [7, 10581]
    assert test.image("s3.jpg").pids.tolist() == [UNLABELLED, UNLABELLED]
    with pytest.raises(KeyError, match="s1.jpg"):
        test.image("s1.jpg")


def test_cuhk_fixed_gallery_keeps_the_protocol_list(cuhk_root: Path) -> None:
    test = CUHKSYSU(cuhk_root, "test")
    gallery = test.gallery(1, 2)
    assert [g.image for g in gallery] == ["s6.jpg", "s6.jpg"]  # listed twice, kept twice
    np.testing.assert_array_equal(gallery[0].gt_box, [9, 9, 27, 45])
    own = test.gallery(0, 3)
    assert [(g.image, g.gt_box is None) for g in own] == [("s5.jpg", False), ("s4.jpg", True)]


def test_cuhk_full_pool_gallery(cuhk_root: Path) -> None:
    test = CUHKSYSU(cuhk_root, "test")
    gallery = test.gallery(0, None)
    assert [g.image for g in gallery] == ["s5.jpg", "s6.jpg", "s3.jpg"]  # all but the query's
    np.testing.assert_array_equal(gallery[0].gt_box, [40, 8, 56, 40])
    assert gallery[1].gt_box is None and gallery[2].gt_box is None
    with pytest.raises(ValueError, match="no camera ids"):
        test.gallery(0, None, cross_camera=True)


def test_cuhk_missing_or_inconsistent_protocol(cuhk_root: Path) -> None:
    test = CUHKSYSU(cuhk_root, "test")
    with pytest.raises(
        DatasetError, match=r"TestG100\.mat: file not found \(sizes present: \[2, 3\]"
    ):
        test.gallery(0, 100)
    protocol = cuhk_root / "annotation" / "test" / "train_test"
    swapped = [TEST_G3[1], TEST_G3[0]]
    savemat(protocol / "TestG3.mat", {"TestG3": _protocol(swapped)})
    with pytest.raises(DatasetError, match="TestG3.mat: query 0 is p7 in s5.jpg"):
        CUHKSYSU(cuhk_root, "test").gallery(0, 3)


def test_cuhk_bad_files_name_the_file(cuhk_root: Path) -> None:
    annotation = cuhk_root / "annotation"
    protocol = annotation / "test" / "train_test"
    savemat(protocol / "Train.mat", {"Train": _train_mat([("p20", [("s2.jpg", (4, 2, 30, 60))])])})
    with pytest.raises(DatasetError, match=r"Train\.mat: box \[4, 2, 30, 60\] of p20 is not among"):
        CUHKSYSU(cuhk_root, "train")
    savemat(protocol / "TestG2.mat", {"TestG2": _protocol([("10581", *TEST_G2[0][1:])])})
    with pytest.raises(DatasetError, match=r"TestG2\.mat: identity name '10581'"):
        CUHKSYSU(cuhk_root, "test")
    savemat(annotation / "pool.mat", {"pool": cell_column(["s4.jpg", "s9.jpg"])})
    with pytest.raises(DatasetError, match=r"pool\.mat: 1 pool images not in Images\.mat"):
        CUHKSYSU(cuhk_root, "test")
    savemat(annotation / "pool.mat", {"test_images": cell_column(POOL)})
    with pytest.raises(DatasetError, match=r"pool\.mat: expected variable pool"):
        CUHKSYSU(cuhk_root, "test")
    savemat(annotation / "Images.mat", {"Img": cell_column(["s1.jpg"])})
    with pytest.raises(DatasetError, match=r"Images\.mat: Img is not a struct array"):
        CUHKSYSU(cuhk_root, "train")
    (annotation / "Images.mat").unlink()
    with pytest.raises(DatasetError, match=r"Images\.mat: file not found"):
        CUHKSYSU(cuhk_root, "train")


def test_cuhk_without_protocol_files(cuhk_root: Path) -> None:
    for path in (cuhk_root / "annotation" / "test" / "train_test").glob("TestG*.mat"):
        path.unlink()
    with pytest.raises(DatasetError, match="no TestG<N>.mat protocol file"):
        CUHKSYSU(cuhk_root, "test")
