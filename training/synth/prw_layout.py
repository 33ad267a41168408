"""Writing a planned dataset in PRW's on-disk layout.

See docs/ARCHITECTURE.md, "Datasets on disk".

    frames/c<cam>s<seq>_<number>.jpg
    annotations/<frame>.jpg.mat       box_new: N x 5 double [pid, x, y, w, h], pid -2 = unknown
    frame_train.mat, frame_test.mat   img_index_train / img_index_test: Nx1 cells of frame names
    query_info.txt                    "pid x y w h frame" per line, CRLF line ends
    query_box/<pid>_<frame>.jpg       the query crops

Like the real annotations, a person cut by the left frame edge keeps a negative x.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from training.synth.matlab import cell_column, save_mat
from training.synth.scenes import DatasetPlan, FramePlan, visible_box
from training.synth.sizes import FrameSize

UNKNOWN_PID = -2


class PRWWriter:
    def __init__(self, root: Path, plan: DatasetPlan) -> None:
        self.root, self.plan = root, plan
        for folder in ("frames", "annotations", "query_box"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        self.names = _frame_names(plan)
        self.queries = _choose_queries(plan)  # (pid, frame index) in query_info.txt order

    @staticmethod
    def id_name(pid: int) -> str:
        return str(pid)

    def add(self, frame: FramePlan, image: Image.Image) -> None:
        name = self.names[frame.index]
        image.save(self.root / "frames" / f"{name}.jpg", quality=frame.camera.jpeg_quality)
        save_mat(self.root / "annotations" / f"{name}.jpg.mat", {"box_new": self._rows(frame)})
        for pid, index in self.queries:
            if index == frame.index:
                crop = image.crop(visible_box(_box_of(frame, pid), frame.camera.size))
                crop.save(self.root / "query_box" / f"{pid}_{name}.jpg", quality=95)

    def finish(self) -> None:
        for split in ("train", "test"):
            names = [self.names[f.index] for f in self.plan.frames if f.split == split]
            save_mat(self.root / f"frame_{split}.mat", {f"img_index_{split}": cell_column(names)})
        lines = []
        for pid, index in self.queries:
            frame = self.plan.frames[index]
            x, y, w, h = _xywh(_box_of(frame, pid), frame.camera.size)
            lines.append(f"{pid} {x:.4f} {y:.4f} {w:.4f} {h:.4f} {self.names[index]}\r\n")
        (self.root / "query_info.txt").write_bytes("".join(lines).encode("ascii"))

    def _rows(self, frame: FramePlan) -> np.ndarray:
        rows = [
            [UNKNOWN_PID if p.pid is None else p.pid, *_xywh(p.box, frame.camera.size)]
            for p in frame.people
        ]
        return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def _xywh(box: tuple[int, int, int, int], size: FrameSize) -> tuple[int, int, int, int]:
    """x, y, w, h with the box's left edge as drawn (possibly negative), the rest in frame."""
    width, height = size
    x1, y1 = box[0], max(box[1], 0)
    return x1, y1, min(box[2], width) - x1, min(box[3], height) - y1


def _frame_names(plan: DatasetPlan) -> dict[int, str]:
    """c<camera>s<sequence>_<frame number>, numbered per camera as PRW's sampled frames are."""
    seen: dict[int, int] = {}
    names = {}
    for frame in plan.frames:
        k = seen.get(frame.camera.index, 0)
        seen[frame.camera.index] = k + 1
        names[frame.index] = f"c{frame.camera.index}s{1 + k // 100}_{25 * (k + 1):06d}"
    return names


def _choose_queries(plan: DatasetPlan) -> list[tuple[int, int]]:
    """One query per test identity and camera that sees it (PRW: 2,057 queries, 450 ids)."""
    rng = np.random.default_rng([plan.seed, 1])
    sightings: dict[tuple[int, int], list[int]] = {}
    for frame in plan.frames:
        for person in frame.people:
            if frame.split == "test" and person.pid is not None:
                sightings.setdefault((person.pid, frame.camera.index), []).append(frame.index)
    return [(pid, int(rng.choice(sightings[pid, cam]))) for pid, cam in sorted(sightings)]


def _box_of(frame: FramePlan, pid: int) -> tuple[int, int, int, int]:
    return next(person.box for person in frame.people if person.pid == pid)
