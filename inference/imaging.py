"""Turning uploaded bytes into RGB pixels, refusing anything that is not a sane image.

Used by the service for uploads and by the bulk ingest on Ray, so both accept and refuse the
same files. Refusals are ``ImageRejected`` errors whose ``kind`` names why; the service maps
them to HTTP statuses (server/problems.py).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from inference.preprocess import fit_scale

# Formats a camera frame or a crop comes in. Restricting the list keeps PIL's rarer
# decoders (and EPS, which shells out to Ghostscript) away from untrusted uploads.
FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}
# How files of those formats begin (WebP: RIFF, then "WEBP" at byte 8).
SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*")
MEDIA_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}


class ImageRejected(ValueError):
    """Bytes that are not a usable image; ``kind`` names why, ``detail`` says it to a person
    (naming the upload)."""

    kind = "unreadable-image"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class EmptyImage(ImageRejected):
    kind = "empty-file"


class NotAnImage(ImageRejected):
    """Not a file of a supported format."""

    kind = "not-an-image"


class UnreadableImage(ImageRejected):
    """A supported format's file that cannot be decoded (truncated, damaged, no pixels)."""

    kind = "unreadable-image"


class ImageTooLarge(ImageRejected):
    """More pixels than the limit allows."""

    kind = "image-too-large"


class AnimatedImage(ImageRejected):
    """Several frames or pages where one still frame is expected."""

    kind = "animated-image"


@dataclass(frozen=True)
class DecodedImage:
    """An upload as the network needs it (HxWx3 uint8 RGB, shrunk to the model's input size
    when larger), its size as uploaded (after EXIF orientation) and its original bytes."""

    pixels: np.ndarray
    data: bytes
    suffix: str  # file extension of the original format, e.g. ".jpg"
    width: int
    height: int

    @property
    def shrunk(self) -> bool:
        return self.pixels.shape[:2] != (self.height, self.width)

    def ratios(self) -> np.ndarray:
        """(x, y, x, y) factors from `pixels` coordinates to the upload's own."""
        held_h, held_w = self.pixels.shape[:2]
        return np.array([self.width / held_w, self.height / held_h] * 2, dtype=np.float32)


def image_size(data: bytes, name: str, max_pixels: int) -> tuple[int, int]:
    """Width and height from the header alone; ImageRejected for anything decode_image
    refuses before decoding (not an image, no pixels, over max_pixels)."""
    _refuse_empty(data, name)
    with _opened(data, name, max_pixels) as image:
        return image.size


def decode_image(
    data: bytes, name: str, max_pixels: int, fit: tuple[int, int] | None = None
) -> DecodedImage:
    """Decode `data`; bad input raises ImageRejected naming the upload (`name`).

    The pixel count is checked from the header before any pixel is decoded, so a
    decompression bomb costs nothing; it is ImageTooLarge like any other.
    EXIF orientation is applied so boxes match the image as viewers show it.

    With `fit` (a model card's max_size: long side, short side), an image larger than that is
    shrunk to the size the engine would resize it to (so the engine does not resize again),
    and JPEGs are decoded at a reduced scale to begin with: what stays in memory is the
    model's input size, whatever the upload's. Each intermediate copy is dropped as soon as
    the next exists.
    """
    _refuse_empty(data, name)
    with _opened(data, name, max_pixels) as opened:
        try:
            suffix = FORMATS[str(opened.format)]
            width, height = opened.size
            target = _fitted_size(width, height, fit)
            if target is not None:
                opened.draft("RGB", target)  # JPEG only: DCT scaling, >= target
            opened.load()
            if opened.getexif().get(ExifTags.Base.Orientation, 1) in QUARTER_TURNS:
                width, height = height, width
                target = None if target is None else (target[1], target[0])
            ImageOps.exif_transpose(opened, in_place=True)  # a copy only when it turns
            pixels = np.asarray(_shrunk_rgb(opened, target))
        except Image.DecompressionBombError as exc:
            raise _over_pillow_limit(name, max_pixels) from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            # PIL reports truncated or corrupt data as OSError/SyntaxError/ValueError.
            raise UnreadableImage(f"{name}: cannot decode the image ({exc})") from exc
    # Leaving the block closed `opened`, which frees its full-size pixels at once.
    return DecodedImage(pixels, data, suffix, width, height)


def _refuse_empty(data: bytes, name: str) -> None:
    if not data:
        raise EmptyImage(f"{name}: the file is empty")


@contextmanager
def _opened(data: bytes, name: str, max_pixels: int) -> Iterator[Image.Image]:
    """The image opened from its header (nothing decoded), its size checked."""
    try:
        image = Image.open(io.BytesIO(data), formats=list(FORMATS))
    except UnidentifiedImageError as exc:
        if data.startswith(SIGNATURES) or (data[:4], data[8:12]) == (b"RIFF", b"WEBP"):
            # A supported format's file that Pillow cannot open: damaged (e.g. no pixels).
            raise UnreadableImage(f"{name}: cannot read the image header") from exc
        raise NotAnImage(f"{name}: not an image in a supported format {sorted(FORMATS)}") from exc
    except Image.DecompressionBombError as exc:
        raise _over_pillow_limit(name, max_pixels) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UnreadableImage(f"{name}: cannot read the image ({exc})") from exc
    with image:
        _check_pixels(image.size, name, max_pixels)
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            raise AnimatedImage(
                f"{name}: an animated or multi-page image ({frames} frames); send one still frame"
            )
        yield image


def _over_pillow_limit(name: str, max_pixels: int) -> ImageTooLarge:
    # Pillow's own guard (far above the limit) fires while opening; cite ours.
    return ImageTooLarge(f"{name}: the image is over the limit of {max_pixels} pixels")


def _fitted_size(width: int, height: int, fit: tuple[int, int] | None) -> tuple[int, int] | None:
    """The size the engine resizes a width x height image to, if that is smaller."""
    if fit is None:
        return None
    scale = fit_scale(width, height, fit)
    if scale >= 1.0:
        return None
    return max(1, round(width * scale)), max(1, round(height * scale))


# EXIF orientations that swap width and height.
QUARTER_TURNS = (5, 6, 7, 8)
# Modes Pillow resizes with proper filtering; others (palette, 1-bit, 16-bit, CMYK) are
# turned into RGB first.
RESIZABLE_MODES = ("RGB", "RGBA", "L", "LA")


def _shrunk_rgb(image: Image.Image, target: tuple[int, int] | None) -> Image.Image:
    """`image` (loaded, orientation applied) as RGB, at the target size when one is given."""
    if image.mode not in RESIZABLE_MODES:
        image = image.convert("RGB")
    if target is not None and image.size != target:
        image = image.resize(target, Image.Resampling.BILINEAR)
    return image if image.mode == "RGB" else image.convert("RGB")


def _check_pixels(size: tuple[int, int], name: str, max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise UnreadableImage(f"{name}: image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{name}: {width}x{height} = {width * height} pixels is over the limit of {max_pixels}"
        )
