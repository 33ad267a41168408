"""Crop queries for training: labelled people cut out of a training batch and laid out the way
the service lays out an operator's crop (at its own size, padded bottom/right to the size
divisor with the pad colour), so that the network learns to embed a person seen without the
scene around it (docs/ARCHITECTURE.md, "Crop queries").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from inference.preprocess import PAD_COLOUR, SIZE_DIVISOR

MIN_SIDE = 8  # people narrower or shorter than this (input pixels) are not cut


@dataclass(frozen=True)
class CropGroup:
    """Cuts that pad to the same size, as one batch."""

    images: Tensor  # [n, 3, H, W], 0..255, each cut at the top left of a pad-colour canvas
    boxes: Tensor  # [n, 4] float32, the person's box in its cut's pixels
    pids: Tensor  # [n] the people's ids (>= 0)


def cut_crop_queries(
    images: Tensor,
    targets: list[dict],
    count: int,
    jitter: float,
    divisor: int = SIZE_DIVISOR,
) -> list[CropGroup]:
    """Up to ``count`` labelled people of the batch, chosen at random, each cut out along its
    box with every side moved by up to ``jitter`` x the box's size (an operator's crop is
    rarely exact). Grouped by padded size; empty if the batch has no labelled person."""
    candidates = [
        (image, row)
        for image, target in enumerate(targets)
        for row in range(len(target["pids"]))
        if int(target["pids"][row]) >= 0 and _big_enough(target["boxes"][row])
    ]
    if not candidates or count < 1:
        return []
    order = torch.randperm(len(candidates))[:count].tolist()
    height, width = images.shape[-2:]
    by_shape: dict[tuple[int, int], list[tuple[Tensor, Tensor, Tensor]]] = {}
    for position in order:
        image, row = candidates[position]
        box = targets[image]["boxes"][row].detach().float().cpu()
        size = torch.stack([box[2] - box[0], box[3] - box[1]]).repeat(2)
        moved = box + (torch.rand(4) * 2.0 - 1.0) * jitter * size
        x1, y1 = max(0, math.floor(moved[0])), max(0, math.floor(moved[1]))
        x2 = min(int(width), max(x1 + MIN_SIDE, math.ceil(moved[2])))
        y2 = min(int(height), max(y1 + MIN_SIDE, math.ceil(moved[3])))
        pixels = images[image, :, y1:y2, x1:x2]
        canvas = _canvas(pixels, divisor)
        person = box - torch.tensor([x1, y1, x1, y1], dtype=torch.float32)
        extent = torch.tensor([x2 - x1, y2 - y1] * 2, dtype=torch.float32)
        person = torch.minimum(person.clamp(min=0), extent)
        pid = targets[image]["pids"][row].reshape(())
        height_width = (canvas.shape[-2], canvas.shape[-1])
        by_shape.setdefault(height_width, []).append((canvas, person, pid))
    return [
        CropGroup(
            images=torch.stack([canvas for canvas, _, _ in cuts]),
            boxes=torch.stack([person for _, person, _ in cuts]).to(images.device),
            pids=torch.stack([pid for _, _, pid in cuts]).to(images.device),
        )
        for cuts in by_shape.values()
    ]


def _big_enough(box: Tensor) -> bool:
    return bool(box[2] - box[0] >= MIN_SIDE) and bool(box[3] - box[1] >= MIN_SIDE)


def _canvas(pixels: Tensor, divisor: int) -> Tensor:
    """The cut at the top left of a pad-colour canvas whose sides are multiples of divisor."""
    height, width = pixels.shape[-2:]
    padded_h, padded_w = -(-height // divisor) * divisor, -(-width // divisor) * divisor
    colour = torch.tensor(PAD_COLOUR, dtype=pixels.dtype, device=pixels.device)
    canvas = colour.view(3, 1, 1).expand(3, padded_h, padded_w).clone()
    canvas[:, :height, :width] = pixels
    return canvas
