"""Training images as torch batches: multi-scale resize, horizontal flip, padding to 32.

Every random choice is a function of (seed, epoch, image index): the batch order of an epoch
comes from (seed, epoch) and each image's scale and flip from (seed, epoch, index). So a run
resumed in the middle of an epoch sees exactly the batches an uninterrupted run would, however
many loader workers there are, and the loader needs no RNG state of its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from inference.preprocess import PAD_COLOUR, SIZE_DIVISOR, fit_scale, load_rgb
from training.data.attributes import box_attributes
from training.data.base import ImageRecord

# One sample's key: (epoch, index into the records). The epoch picks the augmentation.
SampleKey = tuple[int, int]


@dataclass(frozen=True)
class ScaleRange:
    """Multi-scale training: the long side is drawn uniformly from [min_long, max_long].

    The short-side limit follows at the same short/long ratio as the test size (the reference
    trains at 667x400 .. 2000x1200 for a 1500x900 test size).
    """

    min_long: int
    max_long: int
    short_ratio: float = 0.6

    def __post_init__(self) -> None:
        if not 0 < self.min_long <= self.max_long:
            raise ValueError(f"bad training size range {self.min_long}..{self.max_long}")

    def sample(self, rng: np.random.Generator) -> tuple[int, int]:
        long_side = int(rng.integers(self.min_long, self.max_long + 1))
        return long_side, max(1, round(long_side * self.short_ratio))


class TrainImages(Dataset):
    """Person-search training images; item = (uint8 [3, h, w] RGB, target dict).

    target: "boxes" float32 [N, 4] x1y1x2y2 in the resized image's pixels, "pids" int64 [N].
    Images without boxes are left out (they carry no training signal for these losses).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        scales: ScaleRange,
        seed: int,
        flip_prob: float = 0.5,
        attributes: np.ndarray | None = None,
    ) -> None:
        """attributes: per training id [num_ids, A] labels for the attribute task (t11)."""
        self.records = [record for record in records if len(record.boxes)]
        if not self.records:
            raise ValueError("no training image has a person box")
        self.scales = scales
        self.seed = seed
        self.flip_prob = flip_prob
        self.attributes = attributes

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: SampleKey) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        epoch, index = key
        record = self.records[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        image = load_rgb(record.path)
        height, width = image.shape[:2]
        scale = fit_scale(width, height, self.scales.sample(rng))
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR))
        boxes = record.boxes.astype(np.float32) * np.float32(scale)
        boxes = clip_boxes(boxes, new_w, new_h)
        if rng.random() < self.flip_prob:
            image = image[:, ::-1]
            boxes = np.stack(
                [new_w - boxes[:, 2], boxes[:, 1], new_w - boxes[:, 0], boxes[:, 3]], 1
            )
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        target = {
            "boxes": torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
            "pids": torch.from_numpy(record.pids.astype(np.int64)),
        }
        if self.attributes is not None:
            target["attrs"] = torch.from_numpy(box_attributes(self.attributes, record.pids))
        return tensor, target


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip x1y1x2y2 boxes to the image (annotations may stick out of the frame)."""
    clipped = boxes.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    return clipped


class EpochBatches:
    """Batches of sample keys for one epoch, in an order fixed by (seed, epoch).

    ``start`` skips the first batches (those a resumed run has already trained on). The last
    batch of an epoch may be smaller than ``batch_size``.

    With several processes (``world_size``), ``batch_size`` is the global batch and each
    process takes its consecutive share of every batch (process ``rank``: the ``rank``-th
    part), so a global batch holds the same images whatever the number of processes. A last
    batch with fewer images than processes lends the processes it cannot feed images from the
    start of the epoch's order (as torch's DistributedSampler pads).
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        epoch: int,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not among {world_size} processes")
        self.size, self.batch_size, self.seed, self.epoch = size, batch_size, seed, epoch
        self.start, self.rank, self.world_size = start, rank, world_size

    @staticmethod
    def count(size: int, batch_size: int) -> int:
        return -(-size // batch_size)

    def __len__(self) -> int:
        return max(0, self.count(self.size, self.batch_size) - self.start)

    def __iter__(self) -> Iterator[list[SampleKey]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        for begin in range(self.start * self.batch_size, self.size, self.batch_size):
            batch = order[begin : begin + self.batch_size]
            yield [(self.epoch, int(i)) for i in self._share(batch, order)]

    def _share(self, batch: np.ndarray, order: np.ndarray) -> np.ndarray:
        """This process's consecutive part of a global batch (parts differ by one at most)."""
        if self.world_size == 1:
            return batch
        if len(batch) < self.world_size:
            batch = np.concatenate([batch, np.resize(order, self.world_size - len(batch))])
        return np.array_split(batch, self.world_size)[self.rank]


def collate(
    samples: Sequence[tuple[torch.Tensor, dict[str, torch.Tensor]]],
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Pad images (bottom/right, with the mean colour, as inference.preprocess does) to one uint8
    [B, 3, H, W] batch, H and W multiples of 32."""
    height = max(image.shape[1] for image, _ in samples)
    width = max(image.shape[2] for image, _ in samples)
    height = -(-height // SIZE_DIVISOR) * SIZE_DIVISOR
    width = -(-width // SIZE_DIVISOR) * SIZE_DIVISOR
    batch = torch.tensor(PAD_COLOUR, dtype=torch.uint8).view(1, 3, 1, 1)
    batch = batch.repeat(len(samples), 1, height, width)
    for slot, (image, _) in enumerate(samples):
        batch[slot, :, : image.shape[1], : image.shape[2]] = image
    return batch, [target for _, target in samples]


def epoch_loader(
    images: TrainImages,
    batch_size: int,
    epoch: int,
    start: int = 0,
    workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader over one epoch's batches, starting at batch ``start``; with several
    processes, over this process's share of each (global) batch."""
    batches = EpochBatches(len(images), batch_size, images.seed, epoch, start, rank, world_size)
    # Its own generator: creating a loader iterator draws a seed, which must not advance the
    # global RNG that the model's sampling uses (a resumed run creates it at another point).
    generator = torch.Generator().manual_seed(images.seed * 100_003 + epoch)
    return DataLoader(
        images,
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        generator=generator,
    )
