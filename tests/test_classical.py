"""The classical noisy-label generator on synthetic blob images."""
import numpy as np
import pytest

from napari_labelfx.tools.classical import (
    MODALITY_DEFAULTS,
    ClassicalInputError,
    ClassicalParams,
    _hough_circles,
    classical_instances,
)
from napari_labelfx.tools.metrics import instance_metrics


def blob_image(seed=0, shape=(160, 160), n=12, radius=8, dark=False):
    """Bright (or dark) blurred disks on a noisy, unevenly lit background, and their true mask."""
    from scipy import ndimage as ndi
    from skimage.draw import disk

    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.uint16)
    centres = []
    while len(centres) < n:
        c = rng.integers(radius + 2, np.array(shape) - radius - 2)
        if all(np.hypot(*(c - d)) > 2.6 * radius for d in centres):
            centres.append(c)
    for i, c in enumerate(centres, start=1):
        rr, cc = disk(tuple(c), radius, shape=shape)
        truth[rr, cc] = i
    brightness = rng.uniform(0.5, 1.0, n + 1)
    brightness[0] = 0
    img = ndi.gaussian_filter(brightness[truth], 1.0)
    img = img + np.linspace(0, 0.15, shape[1])[None, :]  # uneven illumination
    img = img + rng.normal(0, 0.03, shape)
    if dark:
        img = 1.2 - img
    return (np.clip(img, 0, 1.5) * 150).astype(np.uint8), truth


def test_finds_most_blobs_and_is_deterministic():
    img, truth = blob_image()
    params = ClassicalParams.for_diameter(16, modality="fluorescence")
    lab = classical_instances(img, params)
    assert lab.dtype == np.uint16 and lab.shape == img.shape
    r = instance_metrics([truth], [lab])
    assert r["AP50"] >= 0.9, r
    np.testing.assert_array_equal(lab, classical_instances(img, params))


def test_default_parameters_and_threshold_modes_work():
    img, truth = blob_image(seed=1)
    for mode in ("otsu", "adaptive", "otsu+adaptive", "otsu|adaptive"):
        lab = classical_instances(img, ClassicalParams.for_diameter(16, threshold=mode))
        assert instance_metrics([truth], [lab])["AP50"] >= 0.6, mode
    assert classical_instances(img).max() >= 8  # plain defaults still find the blobs


def test_dark_objects_are_detected_automatically():
    img, truth = blob_image(seed=2, dark=True)
    lab = classical_instances(img, ClassicalParams.for_diameter(16))
    assert instance_metrics([truth], [lab])["AP50"] >= 0.7


def test_touching_blobs_are_split_by_the_watershed():
    from skimage.draw import disk

    truth = np.zeros((60, 90), np.uint16)
    for i, c in enumerate(((30, 30), (30, 52)), start=1):  # radius 12, centres 22 apart: they touch
        rr, cc = disk(c, 12, shape=truth.shape)
        truth[rr, cc] = i
    img = (truth > 0).astype(np.uint8) * 180 + 20
    lab = classical_instances(img, ClassicalParams.for_diameter(24, threshold="otsu"))
    assert lab.max() == 2
    assert instance_metrics([truth], [lab])["AP50"] == 1.0


def test_rgb_histology_uses_the_haematoxylin_channel():
    img, truth = blob_image(seed=3)
    # purple nuclei on pink tissue: nuclei absorb red and green strongly, tissue mostly green
    f = img.astype(np.float64) / img.max()
    rgb = np.stack([235 - 150 * f, 200 - 160 * f, 225 - 60 * f], axis=-1).clip(0, 255).astype(np.uint8)
    assert "histology" in MODALITY_DEFAULTS
    lab = classical_instances(rgb, ClassicalParams.for_diameter(16, modality="histology"))
    assert instance_metrics([truth], [lab])["AP50"] >= 0.7


def test_area_filter_and_hough_circles():
    img, truth = blob_image(seed=4)
    none_left = classical_instances(img, ClassicalParams.for_diameter(16, min_area=10_000, max_area=20_000))
    assert none_left.max() == 0
    # Hough on an image whose threshold found nothing: circles are added where the blobs are
    from scipy import ndimage as ndi

    filtered = ndi.gaussian_filter(img.astype(float) / img.max(), 1)
    params = ClassicalParams(hough=True, hough_min_radius=6, hough_max_radius=10, hough_param2=10, hough_min_dist=14)
    circles = _hough_circles(filtered, np.zeros(img.shape, np.int32), params)
    assert circles.max() >= 6
    r = instance_metrics([truth], [circles])
    assert r["AP50"] >= 0.5
    full = classical_instances(img, ClassicalParams.for_diameter(16, hough=True))
    assert full.max() >= truth.max() - 2


def test_bad_input_raises_clear_errors():
    with pytest.raises(ClassicalInputError, match="2D grey"):
        classical_instances(np.zeros((4, 20, 20)))
    with pytest.raises(ClassicalInputError, match="haematoxylin"):
        classical_instances(np.zeros((20, 20)), ClassicalParams(channel="hematoxylin"))
    with pytest.raises(ClassicalInputError, match="unknown"):
        ClassicalParams.from_dict({"gama": 1})
    with pytest.raises(ClassicalInputError):
        ClassicalParams.for_diameter(1)
    with pytest.raises(ClassicalInputError):
        classical_instances(np.zeros((20, 20)), ClassicalParams(threshold="median"))
    assert classical_instances(np.zeros((20, 20), np.uint8)).max() == 0  # blank image: no objects, no crash
    assert ClassicalParams.from_dict(ClassicalParams().to_dict()) == ClassicalParams()
