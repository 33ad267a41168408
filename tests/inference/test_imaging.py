"""Decoding uploads (inference.imaging): formats, orientation, the pixel limit, the size the
network is given, and what is refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from inference.imaging import AnimatedImage, NotAnImage, decode_image
from inference.preprocess import resize_and_pad


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def test_decoding_modes_orientation_and_formats() -> None:
    rgba = Image.new("RGBA", (30, 20), (10, 20, 30, 128))
    decoded = decode_image(_encoded(rgba, "PNG"), "x", 10_000)
    assert decoded.pixels.shape == (20, 30, 3) and decoded.suffix == ".png"
    assert decode_image(_encoded(Image.new("L", (5, 4)), "PNG"), "x", 100).pixels.shape == (4, 5, 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    rotated = decode_image(_encoded(Image.new("RGB", (30, 20)), "JPEG", exif=exif), "x", 10_000)
    assert (rotated.width, rotated.height) == (20, 30)
    with pytest.raises(NotAnImage):  # a real image, but not a format we accept
        decode_image(_encoded(Image.new("RGB", (8, 8)), "GIF"), "x", 10_000)
    pages = [Image.new("RGB", (8, 8), colour) for colour in ("red", "blue")]
    for fmt in ("PNG", "WEBP", "TIFF"):  # animated PNG and WebP, multi-page TIFF
        with pytest.raises(AnimatedImage) as caught:
            decode_image(_encoded(pages[0], fmt, save_all=True, append_images=pages[1:]), "x", 99)
        assert caught.value.kind == "animated-image"


def test_large_images_are_decoded_at_the_model_size() -> None:
    """What stays decoded is the size the engine feeds the network, not the upload's; boxes
    map between the two."""
    fit = (960, 540)
    rng = np.random.default_rng(0)
    # PNG: decoded whole, then shrunk exactly as the engine would have shrunk it.
    noise = Image.fromarray(rng.integers(0, 255, (900, 1600, 3), dtype=np.uint8))
    png = decode_image(_encoded(noise, "PNG"), "x", 10**8, fit)
    assert png.pixels.shape == (540, 960, 3) and (png.width, png.height) == (1600, 900)
    engine_view = resize_and_pad(np.asarray(noise), max_size=fit, divisor=1).image
    np.testing.assert_array_equal(png.pixels, engine_view.transpose(1, 2, 0))
    assert png.shrunk
    np.testing.assert_allclose(png.ratios(), [1600 / 960, 900 / 540] * 2, rtol=1e-6)
    # A 6300 x 6300 PNG of a few KB (the memory attack) holds 540 x 540 pixels.
    flat = decode_image(_encoded(Image.new("RGB", (6300, 6300), (9, 9, 9)), "PNG"), "x", 10**8, fit)
    assert flat.pixels.shape == (540, 540, 3) and (flat.width, flat.height) == (6300, 6300)
    # JPEG: decoded at a reduced DCT scale, then to the same size; EXIF turns are applied.
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    turned = decode_image(_encoded(noise, "JPEG", exif=exif), "x", 10**8, fit)
    assert (turned.width, turned.height) == (900, 1600)
    assert turned.pixels.shape == (960, 540, 3)
    # Smaller than the model's size: kept as it is (the engine may enlarge it).
    small = decode_image(_encoded(Image.new("RGB", (300, 200)), "PNG"), "x", 10**8, fit)
    assert small.pixels.shape == (200, 300, 3)
