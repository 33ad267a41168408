import numpy as np
import pytest

from inference.preprocess import PAD_COLOUR, PIXEL_MEAN, PIXEL_STD, fit_scale, resize_and_pad


def test_fit_scale_respects_both_limits():
    # a 1920x1080 frame is limited by its short side (900/1080) before its long side (1500/1920)
    assert fit_scale(1920, 1080) == pytest.approx(1500 / 1920)
    assert fit_scale(720, 576) == pytest.approx(900 / 576)
    assert fit_scale(576, 720) == pytest.approx(900 / 576)  # portrait: same rule on sorted sides


@pytest.mark.parametrize("size", [(1080, 1920), (576, 720), (37, 101)])
def test_resize_and_pad_shapes(size):
    height, width = size
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    prepared = resize_and_pad(image)
    _, pad_h, pad_w = prepared.image.shape
    new_h, new_w = prepared.resized_hw
    assert pad_h % 32 == 0 and pad_w % 32 == 0
    assert new_h <= pad_h < new_h + 32 and new_w <= pad_w < new_w + 32
    assert max(new_h, new_w) <= 1500 and min(new_h, new_w) <= 900
    assert new_w == round(width * prepared.scale)
    # the padding has the mean colour, the content is not all that colour
    colour = np.array(PAD_COLOUR, np.uint8).reshape(3, 1, 1)
    assert np.all(prepared.image[:, new_h:, :] == colour)
    assert np.all(prepared.image[:, :, new_w:] == colour)
    assert prepared.image[:, :new_h, :new_w].any()


def test_identity_scale_keeps_pixels():
    image = np.arange(64 * 96 * 3, dtype=np.uint8).reshape(64, 96, 3)
    prepared = resize_and_pad(image, scale=1.0)
    assert prepared.image.shape == (3, 64, 96)
    np.testing.assert_array_equal(prepared.image.transpose(1, 2, 0), image)


def test_rejects_non_rgb_input():
    with pytest.raises(ValueError, match="uint8 RGB"):
        resize_and_pad(np.zeros((10, 10), dtype=np.uint8))


def test_padding_is_nearly_zero_after_normalisation():
    prepared = resize_and_pad(np.zeros((40, 50, 3), np.uint8), scale=1.0)
    pad = prepared.image[:, 40:, :].astype(np.float32)
    normalised = (pad - np.reshape(PIXEL_MEAN, (3, 1, 1))) / np.reshape(PIXEL_STD, (3, 1, 1))
    assert np.abs(normalised).max() < 0.01
    black = resize_and_pad(np.zeros((40, 50, 3), np.uint8), scale=1.0, pad_colour=(0, 0, 0))
    assert not black.image.any()
