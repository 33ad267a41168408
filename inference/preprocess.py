"""Resize-and-pad shared by training, export and serving (numpy only: the server has no torch).

The network sees an image resized to fit inside max_size (keeping the aspect ratio) and padded
at the bottom/right to a multiple of `divisor` with the mean colour, which the graph's
normalisation turns into (nearly) zero, as if the padding had been added after normalising.
Boxes go back to original pixels by dividing by the returned scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# ImageNet statistics in 0..255 RGB; the model normalises inside its graph with these.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
DEFAULT_MAX_SIZE = (1500, 900)  # (long side, short side), as in the reference
SIZE_DIVISOR = 32
# The uint8 colour closest to PIXEL_MEAN: padding with it is ~0 after normalisation.
PAD_COLOUR: tuple[int, ...] = tuple(round(v) for v in PIXEL_MEAN)


@dataclass(frozen=True)
class Prepared:
    """A network-ready image: uint8 [3, H, W] RGB, H and W multiples of the divisor."""

    image: np.ndarray
    scale: float  # resized / original
    resized_hw: tuple[int, int]  # size before padding


def fit_scale(width: int, height: int, max_size: tuple[int, int] = DEFAULT_MAX_SIZE) -> float:
    """Largest scale at which the long side <= max_size[0] and the short side <= max_size[1]."""
    long_side, short_side = max(width, height), min(width, height)
    return min(max_size[0] / long_side, max_size[1] / short_side)


def resize_and_pad(
    image: np.ndarray,
    max_size: tuple[int, int] = DEFAULT_MAX_SIZE,
    divisor: int = SIZE_DIVISOR,
    scale: float | None = None,
    pad_colour: Sequence[int] = PAD_COLOUR,
) -> Prepared:
    """Resize an HxWx3 uint8 RGB array to fit max_size (or by `scale`) and pad to `divisor`.

    The padding (bottom and right) has ``pad_colour``; a model card names the one its model was
    trained with.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    if scale is None:
        scale = fit_scale(width, height, max_size)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR))
    pad_h = -(-new_h // divisor) * divisor
    pad_w = -(-new_w // divisor) * divisor
    padded = np.empty((3, pad_h, pad_w), dtype=np.uint8)
    padded[:] = np.asarray(pad_colour, dtype=np.uint8).reshape(3, 1, 1)
    padded[:, :new_h, :new_w] = image.transpose(2, 0, 1)
    return Prepared(image=padded, scale=scale, resized_hw=(new_h, new_w))


def load_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 RGB array."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))
