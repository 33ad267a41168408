"""Turning uploaded bytes into RGB pixels, refusing anything that is not a sane image."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from server.problems import Problem

# Formats a camera frame or a crop comes in. Restricting the list keeps PIL's rarer
# decoders (and EPS, which shells out to Ghostscript) away from untrusted uploads.
FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}
MEDIA_TYPES = {
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
}


@dataclass(frozen=True)
class DecodedImage:
    """An upload as the network needs it (HxWx3 uint8 RGB) plus its original bytes."""

    pixels: np.ndarray
    data: bytes
    suffix: str  # file extension of the original format, e.g. ".jpg"

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def decode_image(data: bytes, name: str, max_pixels: int) -> DecodedImage:
    """Decode `data`; bad input raises a Problem naming the upload (`name`).

    The pixel count is checked from the header before any pixel is decoded, so a
    decompression bomb costs nothing; it answers 413 like any other too-large upload.
    EXIF orientation is applied so boxes match the image as viewers show it.
    """
    if not data:
        raise Problem(422, "empty-file", f"{name}: the file is empty")
    try:
        with Image.open(io.BytesIO(data), formats=list(FORMATS)) as image:
            _check_pixels(image.size, name, max_pixels)
            image.load()
            suffix = FORMATS[str(image.format)]
            pixels = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except UnidentifiedImageError as exc:
        raise Problem(
            415, "not-an-image", f"{name}: not an image in a supported format {sorted(FORMATS)}"
        ) from exc
    except Image.DecompressionBombError as exc:
        # Pillow's own guard (far above PS_MAX_PIXELS) fires while opening; cite ours.
        raise Problem(
            413,
            "image-too-large",
            f"{name}: the image is over the limit of {max_pixels} pixels (PS_MAX_PIXELS)",
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # PIL reports truncated or corrupt data as OSError/SyntaxError/ValueError.
        raise Problem(422, "unreadable-image", f"{name}: cannot decode the image ({exc})") from exc
    return DecodedImage(pixels=np.ascontiguousarray(pixels), data=data, suffix=suffix)


def _check_pixels(size: tuple[int, int], name: str, max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise Problem(422, "unreadable-image", f"{name}: image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise Problem(
            413,
            "image-too-large",
            f"{name}: {width}x{height} = {width * height} pixels is over the limit of "
            f"{max_pixels} (PS_MAX_PIXELS)",
        )
