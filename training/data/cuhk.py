"""CUHK-SYSU (Xiao et al., CVPR 2017) as laid out on disk.

See docs/ARCHITECTURE.md, "Datasets on disk".

    Image/SSM/*.jpg; annotation/Images.mat (Img), annotation/pool.mat (pool: the test images),
    annotation/test/train_test/Train.mat (Train) and TestG<N>.mat (TestG<N>).

Train images are all images minus the pool; training ids follow the order of Train.mat; a
person's boxes are matched to Images.mat by their exact x, y, w, h. People no identity claims
are unlabelled. Boxes with zero width or height are dropped. CUHK-SYSU has no camera ids: every
image and query has camera 0.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data.base import UNLABELLED, DatasetError, GalleryEntry, ImageRecord, Query
from training.data.files import (
    boxes_by_pid,
    read_variable,
    require_files,
    text,
    to_xyxy,
    xywh,
)

SPLITS = ("train", "test")
PROTOCOL_DIR = Path("annotation", "test", "train_test")


@dataclass(frozen=True)
class _ProtocolEntry:
    """One query of a TestG<N>.mat file; gallery boxes are x, y, w, h or None (negative)."""

    image: str
    box: np.ndarray
    idname: str
    gallery: list[tuple[str, np.ndarray | None]]


class CUHKSYSU:
    """One split of CUHK-SYSU. Test pids are the numbers of the ids (p10581 -> 10581)."""

    name = "cuhk"
    queue_size = 5000  # OIM queue of unlabelled features, as in the reference

    def __init__(self, root: Path | str, split: str = "train") -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root, self.split = Path(root), split
        boxes = _read_images(self.root / "annotation" / "Images.mat")
        pool = _read_pool(self.root / "annotation" / "pool.mat", boxes)
        in_pool = set(pool)
        names = pool if split == "test" else [name for name in boxes if name not in in_pool]
        require_files(self.root / "Image" / "SSM", names)
        pids = {name: np.full(len(boxes[name]), UNLABELLED, dtype=np.int64) for name in names}
        self._protocols: dict[int, list[_ProtocolEntry]] = {}
        self.train_id_names: list[str] = []
        self.queries: list[Query] = []
        self._query_idnames: list[str] = []
        if split == "train":
            self._label_train(boxes, pids)
        else:
            self._label_test(boxes, pids)
        self.num_ids = len(self.train_id_names)
        self.images = [self._record(name, boxes[name], pids[name]) for name in names]
        self._by_name = {record.name: record for record in self.images}
        self._boxes_of_pid = boxes_by_pid(self.images) if split == "test" else {}

    @property
    def gallery_sizes(self) -> list[int]:
        """The N of every TestG<N>.mat present."""
        folder = self.root / PROTOCOL_DIR
        found = (re.fullmatch(r"TestG(\d+)\.mat", f) for f in os.listdir(folder))
        return sorted(int(match.group(1)) for match in found if match)

    def image(self, name: str) -> ImageRecord:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"{name} is not in CUHK-SYSU's {self.split} split") from None

    def gallery(
        self, query_index: int, gallery_size: int | None = 100, cross_camera: bool = False
    ) -> list[GalleryEntry]:
        """The gallery of a query: TestG<gallery_size>.mat's list, or the full pool for None.

        A fixed-size gallery is the protocol's list as it stands, counted as the OIM, NAE and
        SeqNet evaluation code counts it: an image listed twice appears (and counts) twice, and
        a list holding the query's own image keeps it. The full pool (gallery_size=None) is every
        test image but the query's own, each once, with the query person's boxes as labelled
        from the protocol's positives.
        """
        if self.split != "test":
            raise ValueError("the search protocol is defined on the test split")
        if cross_camera:
            raise ValueError("CUHK-SYSU has no camera ids; cross-camera search is PRW's protocol")
        query = self.queries[query_index]
        if gallery_size is None:
            boxes = self._boxes_of_pid.get(query.pid, {})
            return [
                GalleryEntry(record.name, boxes.get(record.name))
                for record in self.images
                if record.name != query.image
            ]
        entry = self._protocol(gallery_size)[query_index]
        if entry.image != query.image or entry.idname != self._query_idnames[query_index]:
            raise DatasetError(
                f"TestG{gallery_size}.mat: query {query_index} is {entry.idname} in {entry.image}, "
                f"but the smallest protocol file has {self._query_idnames[query_index]} in "
                f"{query.image}"
            )
        return [
            GalleryEntry(name, None if box is None else to_xyxy(box)[0])
            for name, box in entry.gallery
        ]

    def _protocol(self, size: int) -> list[_ProtocolEntry]:
        if size not in self._protocols:
            path = self.root / PROTOCOL_DIR / f"TestG{size}.mat"
            if not path.is_file():
                raise DatasetError(f"{path}: file not found (sizes present: {self.gallery_sizes})")
            self._protocols[size] = _read_protocol(path, f"TestG{size}")
        return self._protocols[size]

    def _label_train(self, boxes: dict[str, np.ndarray], pids: dict[str, np.ndarray]) -> None:
        path = self.root / PROTOCOL_DIR / "Train.mat"
        for label, (idname, scenes) in enumerate(_read_train(path)):
            self.train_id_names.append(idname)
            for image, box in scenes:
                _assign(path, boxes, pids, image, box, label, idname)

    def _label_test(self, boxes: dict[str, np.ndarray], pids: dict[str, np.ndarray]) -> None:
        """Ids from the smallest protocol file: its queries and positives name every test id."""
        sizes = self.gallery_sizes
        if not sizes:
            raise DatasetError(f"{self.root / PROTOCOL_DIR}: no TestG<N>.mat protocol file")
        path = self.root / PROTOCOL_DIR / f"TestG{sizes[0]}.mat"
        for entry in self._protocol(sizes[0]):
            pid = _pid(entry.idname, path)
            _assign(path, boxes, pids, entry.image, entry.box, pid, entry.idname)
            for image, box in entry.gallery:
                if box is not None:
                    _assign(path, boxes, pids, image, box, pid, entry.idname)
            query_box = to_xyxy(entry.box)[0]
            self.queries.append(Query(entry.image, query_box, pid, camera=0))
            self._query_idnames.append(entry.idname)

    def _record(self, name: str, boxes_xywh: np.ndarray, pids: np.ndarray) -> ImageRecord:
        keep = (boxes_xywh[:, 2] > 0) & (boxes_xywh[:, 3] > 0)
        path = self.root / "Image" / "SSM" / name
        return ImageRecord(name, path, to_xyxy(boxes_xywh[keep]), pids[keep], camera=0)


def _read_images(path: Path) -> dict[str, np.ndarray]:
    """Image name -> [M, 4] int64 x, y, w, h in Images.mat order."""
    _, images = read_variable(path, "Img")
    table = {}
    try:
        for item in np.asarray(images).ravel():
            name = text(item["imname"])
            found = [xywh(box["idlocate"]) for box in np.asarray(item["box"]).ravel()]
            table[name] = np.array(found, dtype=np.int64).reshape(-1, 4)
    except (ValueError, IndexError, KeyError) as error:
        raise DatasetError(f"{path}: Img is not a struct array of imname/box ({error})") from error
    return table


def _read_pool(path: Path, images: dict[str, np.ndarray]) -> list[str]:
    _, cells = read_variable(path, "pool")
    try:
        pool = [text(cell) for cell in np.asarray(cells).ravel()]
    except ValueError as error:
        raise DatasetError(f"{path}: pool must be a cell array of image names ({error})") from error
    unknown = [name for name in pool if name not in images]
    if unknown:
        raise DatasetError(f"{path}: {len(unknown)} pool images not in Images.mat: {unknown[:3]}")
    return pool


def _read_train(path: Path) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    """(idname, [(image, x y w h), ...]) per identity, in file order."""
    _, cells = read_variable(path, "Train")
    identities = []
    try:
        for cell in np.asarray(cells).ravel():
            person = np.asarray(cell).ravel()[0]
            scenes = [
                (text(scene["imname"]), xywh(scene["idlocate"]))
                for scene in np.asarray(person["scene"]).ravel()
            ]
            identities.append((text(person["idname"]), scenes))
    except (ValueError, IndexError, KeyError) as error:
        raise DatasetError(
            f"{path}: Train is not a cell array of idname/scene ({error})"
        ) from error
    return identities


def _read_protocol(path: Path, variable: str) -> list[_ProtocolEntry]:
    _, items = read_variable(path, variable)
    entries = []
    try:
        for item in np.asarray(items).ravel():
            query = np.asarray(item["Query"]).ravel()[0]
            gallery = [
                (text(g["imname"]), xywh(g["idlocate"]) if np.asarray(g["idlocate"]).size else None)
                for g in np.asarray(item["Gallery"]).ravel()
            ]
            entries.append(
                _ProtocolEntry(
                    text(query["imname"]), xywh(query["idlocate"]), text(query["idname"]), gallery
                )
            )
    except (ValueError, IndexError, KeyError) as error:
        raise DatasetError(
            f"{path}: {variable} is not a struct of Query/Gallery ({error})"
        ) from error
    return entries


def _assign(path, boxes, pids, image: str, box: np.ndarray, pid: int, idname: str) -> None:
    """Give the box of `image` equal to `box` the id `pid`; other split's images are skipped."""
    if image not in pids:
        if image in boxes:
            return
        raise DatasetError(f"{path}: {idname} is in {image}, which Images.mat does not list")
    match = np.flatnonzero((boxes[image] == box).all(axis=1))
    if match.size == 0:
        raise DatasetError(f"{path}: box {box.tolist()} of {idname} is not among {image}'s boxes")
    pids[image][match[0]] = pid


def _pid(idname: str, path: Path) -> int:
    match = re.fullmatch(r"p(\d+)", idname)
    if match is None:
        raise DatasetError(f"{path}: identity name {idname!r} is not p<number>")
    return int(match.group(1))
