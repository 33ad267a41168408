"""Writing a planned dataset in CUHK-SYSU's on-disk layout.

See docs/ARCHITECTURE.md, "Datasets on disk".

    Image/SSM/s<n>.jpg
    annotation/Images.mat                        Img: 1xN struct (imname, nAppear, box)
    annotation/pool.mat                          pool: Nx1 cell of test image names
    annotation/test/train_test/Train.mat         Train: Nx1 cell of 1x1 structs
    annotation/test/train_test/TestG<N>.mat      TestG<N>: 1xQ struct (Query, Gallery)

Each test identity gives one query; its gallery lists every other image of it (positives
first), then negatives from a fixed random order of the pool, so a smaller gallery is a prefix
of a larger one. A TestG<N> file is written for each standard N the pool allows; when the pool
has fewer than 51 images, TestG50.mat holds all of them but the query's own (so its galleries
are shorter than 50).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from training.synth.matlab import (
    NO_BOX,
    NOT_HARD,
    cell_column,
    idlocate,
    save_mat,
    scalar,
    struct_row,
)
from training.synth.scenes import DatasetPlan, FramePlan, visible_box
from training.synth.sizes import FrameSize

GALLERY_SIZES = (50, 100, 500, 1000, 2000, 4000)


class CUHKWriter:
    def __init__(self, root: Path, plan: DatasetPlan) -> None:
        self.root, self.plan = root, plan
        self.images = root / "Image" / "SSM"
        self.protocol = root / "annotation" / "test" / "train_test"
        self.images.mkdir(parents=True, exist_ok=True)
        self.protocol.mkdir(parents=True, exist_ok=True)
        numbers = np.random.default_rng([plan.seed, 2]).permutation(len(plan.frames)) + 1
        self.names = {
            frame.index: f"s{n}.jpg" for frame, n in zip(plan.frames, numbers, strict=True)
        }

    @staticmethod
    def id_name(pid: int) -> str:
        return f"p{pid}"

    def add(self, frame: FramePlan, image: Image.Image) -> None:
        image.save(self.images / self.names[frame.index], quality=frame.camera.jpeg_quality)

    def finish(self) -> None:
        annotation = self.root / "annotation"
        images = [self._image_struct(frame) for frame in self.plan.frames]
        save_mat(
            annotation / "Images.mat", {"Img": struct_row(images, ("imname", "nAppear", "box"))}
        )
        pool = [self.names[f.index] for f in self.plan.frames if f.split == "test"]
        save_mat(annotation / "pool.mat", {"pool": cell_column(pool)})
        train = [self._identity_struct(pid) for pid in self.plan.train_pids]
        save_mat(self.protocol / "Train.mat", {"Train": cell_column(train)})
        self._write_protocols()

    def _image_struct(self, frame: FramePlan) -> dict[str, object]:
        boxes = [
            {"idlocate": _xywh(p.box, frame.camera.size), "ishard": NOT_HARD} for p in frame.people
        ]
        return {
            "imname": self.names[frame.index],
            "nAppear": scalar(len(boxes)),
            "box": struct_row(boxes, ("idlocate", "ishard")),
        }

    def _sightings(self, pid: int, split: str) -> list[dict[str, object]]:
        return [
            {
                "imname": self.names[f.index],
                "idlocate": _xywh(p.box, f.camera.size),
                "ishard": NOT_HARD,
            }
            for f in self.plan.frames
            if f.split == split
            for p in f.people
            if p.pid == pid
        ]

    def _identity_struct(self, pid: int) -> np.ndarray:
        scenes = self._sightings(pid, "train")
        record = {
            "idname": self.id_name(pid),
            "nAppear": scalar(len(scenes)),
            "scene": struct_row(scenes, ("imname", "idlocate", "ishard")),
        }
        return struct_row([record], ("idname", "nAppear", "scene"))

    def _write_protocols(self) -> None:
        rng = np.random.default_rng([self.plan.seed, 3])
        pool = [self.names[f.index] for f in self.plan.frames if f.split == "test"]
        sizes = [n for n in GALLERY_SIZES if n <= len(pool) - 1] or [GALLERY_SIZES[0]]
        queries = []
        for pid in self.plan.test_pids:
            sightings = self._sightings(pid, "test")
            query = sightings[int(rng.integers(len(sightings)))]
            positives = [s for s in sightings if s is not query]
            seen = {s["imname"] for s in sightings}
            negatives = [
                {"imname": name, "idlocate": NO_BOX, "ishard": NOT_HARD}
                for name in rng.permutation(pool)
                if name not in seen
            ]
            queries.append((pid, query, positives + negatives))
        for size in sizes:
            records = [
                {
                    "Query": struct_row(
                        [{**query, "idname": self.id_name(pid)}],
                        ("imname", "idlocate", "ishard", "idname"),
                    ),
                    "Gallery": struct_row(gallery[:size], ("imname", "idlocate", "ishard")),
                }
                for pid, query, gallery in queries
            ]
            name = f"TestG{size}"
            save_mat(
                self.protocol / f"{name}.mat", {name: struct_row(records, ("Query", "Gallery"))}
            )


def _xywh(box: tuple[int, int, int, int], size: FrameSize) -> np.ndarray:
    x1, y1, x2, y2 = visible_box(box, size)
    return idlocate((x1, y1, x2 - x1, y2 - y1))
