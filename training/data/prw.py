"""PRW (Zheng et al., CVPR 2017) as laid out on disk.

See docs/ARCHITECTURE.md, "Datasets on disk".

    frames/c<cam>s<seq>_<n>.jpg, annotations/<frame>.jpg.mat (box_new | anno_file |
    anno_previous: N x 5 [pid, x, y, w, h], pid -2 = unknown), frame_train.mat
    (img_index_train), frame_test.mat (img_index_test), query_info.txt (pid x y w h frame).

Boxes become x1, y1, x2, y2 with x2 = x + w, then coordinates below 0 are clipped to 0 (some
real boxes start left of or above the frame; unlike SeqNet, which clips x before adding w, the
right edge stays where the annotation puts it). Boxes left with no area are dropped.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from training.data.base import UNLABELLED, DatasetError, GalleryEntry, ImageRecord, Query
from training.data.files import boxes_by_pid, read_variable, require_files, text, to_xyxy

BOX_KEYS = ("box_new", "anno_file", "anno_previous")
SPLITS = ("train", "test")


class PRW:
    """One split of PRW. Test pids are PRW's own; train pids are relabelled 0..num_ids-1."""

    name = "prw"
    queue_size = 500  # OIM queue of unlabelled features, as in the reference

    def __init__(self, root: Path | str, split: str = "train") -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root, self.split = Path(root), split
        names = _frame_index(self.root / f"frame_{split}.mat", f"img_index_{split}")
        require_files(self.root / "frames", names)
        self.images = [self._read_frame(name) for name in names]
        self.train_id_names: list[str] = []
        if split == "train":
            self.images, self.train_id_names = _relabel(self.images)
        self.num_ids = len(self.train_id_names)
        self._by_name = {record.name: record for record in self.images}
        self.queries = _read_queries(self.root / "query_info.txt") if split == "test" else []
        for query in self.queries:
            if query.image not in self._by_name:
                raise DatasetError(
                    f"{self.root / 'query_info.txt'}: {query.image} is no test frame"
                )
        self._boxes_of_pid = boxes_by_pid(self.images)

    def image(self, name: str) -> ImageRecord:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"{name} is not in PRW's {self.split} split") from None

    def gallery(
        self, query_index: int, gallery_size: int | None = None, cross_camera: bool = False
    ) -> list[GalleryEntry]:
        """Every test frame but the query's own (with cross_camera, of other cameras only).

        gt_box is the query person's box in that frame, or None. gallery_size is ignored: PRW's
        protocol has no fixed gallery sizes (the argument exists for CUHK-SYSU's sake).
        """
        if self.split != "test":
            raise ValueError("the search protocol is defined on the test split")
        query = self.queries[query_index]
        boxes = self._boxes_of_pid.get(query.pid, {})
        return [
            GalleryEntry(record.name, boxes.get(record.name))
            for record in self.images
            if record.name != query.image and not (cross_camera and record.camera == query.camera)
        ]

    def _read_frame(self, name: str) -> ImageRecord:
        path = self.root / "annotations" / f"{name}.mat"
        key, rows = read_variable(path, *BOX_KEYS)
        rows = np.asarray(rows, dtype=np.float64)
        if rows.size == 0:
            rows = rows.reshape(0, 5)
        if rows.ndim != 2 or rows.shape[1] != 5:
            raise DatasetError(f"{path}: {key} must be N x 5 [pid, x, y, w, h], got {rows.shape}")
        boxes = np.maximum(to_xyxy(rows[:, 1:]), 0)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        pids = rows[keep, 0].astype(np.int64)
        pids[pids < 0] = UNLABELLED  # PRW marks unknown people -2
        return ImageRecord(name, self.root / "frames" / name, boxes[keep], pids, camera_of(name))


def camera_of(name: str) -> int:
    """The camera of a PRW frame: the digit after the leading c (c3s1_012345.jpg -> 3)."""
    match = re.match(r"c(\d)", name)
    if match is None:
        raise DatasetError(f"{name}: a PRW frame name starts with c<camera digit>")
    return int(match.group(1))


def _frame_index(path: Path, variable: str) -> list[str]:
    _, cells = read_variable(path, variable)
    try:
        names = [text(cell) for cell in np.asarray(cells).ravel()]
    except ValueError as error:
        message = f"{path}: {variable} must be a cell array of frame names ({error})"
        raise DatasetError(message) from error
    return [name if name.endswith(".jpg") else f"{name}.jpg" for name in names]


def _relabel(images: list[ImageRecord]) -> tuple[list[ImageRecord], list[str]]:
    """Labelled train pids -> 0..K-1 in increasing PRW pid order; their PRW ids as names."""
    labelled = sorted({int(p) for record in images for p in record.pids if p != UNLABELLED})
    index = {pid: label for label, pid in enumerate(labelled)}
    relabelled = [
        ImageRecord(
            r.name,
            r.path,
            r.boxes,
            np.array([index.get(int(p), UNLABELLED) for p in r.pids], dtype=np.int64),
            r.camera,
        )
        for r in images
    ]
    return relabelled, [str(pid) for pid in labelled]


def _read_queries(path: Path) -> list[Query]:
    """query_info.txt in file order; CRLF (the original) and LF line ends both work."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    queries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            if len(fields) != 6:
                raise ValueError(f"expected 6 fields, got {len(fields)}")
            pid = int(fields[0])
            x, y, w, h = (float(value) for value in fields[1:5])
        except ValueError as error:
            raise DatasetError(
                f"{path}, line {number}: not 'pid x y w h frame': {line!r} ({error})"
            ) from error
        box = np.maximum(to_xyxy(np.array([x, y, w, h]))[0], 0)
        if box[2] <= box[0] or box[3] <= box[1]:
            raise DatasetError(f"{path}, line {number}: the query box has no area: {line!r}")
        name = fields[5] if fields[5].endswith(".jpg") else f"{fields[5]}.jpg"
        queries.append(Query(name, box, pid, camera_of(name)))
    return queries
