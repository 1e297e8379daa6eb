"""Synthetic-like images keep the image size and the labelled objects; unlabelled ones fade."""
import numpy as np
import pytest

from napari_labelfx.tools.seamless import SeamlessError, mask_from_boxes, synthetic_like


def _discs(channels=1):
    yy, xx = np.mgrid[:64, :80]
    img = np.zeros((channels, 64, 80), np.float32)
    centres = [(10, 10), (30, 50), (55, 70), (0, 40)]
    for cy, cx in centres:
        img[:, (yy - cy) ** 2 + (xx - cx) ** 2 < 36] = 1.0
    img += np.random.default_rng(0).normal(0, 0.05, img.shape).astype(np.float32)
    return img, lambda cy, cx, r=4: (yy - cy) ** 2 + (xx - cx) ** 2 < r * r


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_labelled_objects_stay_unlabelled_fade(channels):
    img, disc = _discs(channels)
    mask = np.zeros((64, 80), np.int32)
    mask[disc(30, 50, 6)] = 1
    mask[disc(0, 40, 6)] = 2  # touches the border: padding keeps OpenCV happy
    out = synthetic_like(img, mask, blur_kernel=21, blur_sigma=5)
    assert out.shape == img.shape and out.dtype == np.float32
    background = out[:, disc(30, 20)].mean()
    labelled = out[:, disc(30, 50)].mean()
    unlabelled = out[:, disc(10, 10)].mean()
    # the labelled cell keeps its contrast against the background, the unlabelled one loses most of it
    assert labelled - background > 0.8
    assert unlabelled - background < 0.6 * (labelled - background)
    assert img[:, disc(10, 10)].mean() - img[:, disc(30, 20)].mean() > 0.9


def test_empty_mask_gives_the_blur_and_boxes_work():
    img, disc = _discs()
    out = synthetic_like(img[0], np.zeros((64, 80), bool), 21, 5)
    assert out.shape == (64, 80)
    assert out[disc(10, 10)].mean() < 0.7
    m = mask_from_boxes(np.array([[24, 44, 36, 56]]), (64, 80))
    assert m.sum() == 144
    out = synthetic_like(img, m, 21, 5)
    assert out[0][disc(30, 50)].mean() - out[0][disc(30, 20)].mean() > 0.8


def test_bad_input_raises():
    with pytest.raises(SeamlessError, match="mask shape"):
        synthetic_like(np.zeros((1, 8, 8)), np.zeros((4, 4)))
    with pytest.raises(SeamlessError, match="2D image"):
        synthetic_like(np.zeros((1, 2, 8, 8)), np.zeros((8, 8)))
