"""HED-light stain jitter: identity at zero, skip rule, direction, seeding, numpy/torch agreement."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_labelfx.data.errors import AugmentationError
from napari_labelfx.data.stain_augment import (
    RGB_FROM_HED,
    HEDJitter,
    hed_jitter,
    hed_jitter_torch,
    hed_transform,
    perturb_hed,
    perturb_hed_torch,
)

torch.set_num_threads(1)


def he_like(seed: int = 0, size: int = 24, mean_od: float = 0.25) -> np.ndarray:
    """(3, size, size) float32 in [0, 1] made of H and E optical densities."""
    rng = np.random.default_rng(seed)
    conc = rng.uniform(0, 2 * mean_od, (size * size, 3)) * np.array([1.0, 1.0, 0.05])
    od = conc @ RGB_FROM_HED
    return np.exp(-od).T.reshape(3, size, size).astype(np.float32)


def stains(rgb: np.ndarray) -> np.ndarray:
    """Mean H, E, DAB stain values (natural-log OD units) of a (3, ...) image."""
    od = -np.log(np.clip(rgb.reshape(3, -1), 1e-6, 1))
    return (od.T @ np.linalg.inv(RGB_FROM_HED)).mean(axis=0)


def test_zero_jitter_is_identity_numpy_and_torch():
    img = he_like()
    assert 0.15 < img.mean() < 0.85
    out = hed_jitter(img, rng=0, sigma=0.0, bias=0.0)
    np.testing.assert_allclose(out, img, atol=2e-5)
    batch = torch.from_numpy(np.stack([img, he_like(1)]))
    np.testing.assert_allclose(hed_jitter_torch(batch, rng=0, sigma=0.0, bias=0.0).numpy(), batch.numpy(), atol=2e-5)


def test_skip_rule_on_image_mean():
    cfg = HEDJitter(sigma=0.05, bias=0.05)
    bright = np.full((3, 24, 24), 0.9, np.float32)  # mean 0.9 > 0.85: mostly background
    dark = np.full((3, 24, 24), 0.1, np.float32)  # mean 0.1 < 0.15
    ok = he_like()
    assert perturb_hed(bright, [0.05] * 3, [0.05] * 3, cfg) is bright
    assert perturb_hed(dark, [0.05] * 3, [0.05] * 3, cfg) is dark
    assert not np.allclose(perturb_hed(ok, [0.05] * 3, [0.05] * 3, cfg), ok)
    # in a batch the rule is per image
    batch = torch.from_numpy(np.stack([bright, ok]))
    out = perturb_hed_torch(batch, np.full((2, 3), 0.05), np.full((2, 3), 0.05), cfg)
    assert torch.equal(out[0], batch[0])
    assert not torch.allclose(out[1], batch[1])
    # bounds are inclusive
    edge = np.full((3, 4, 4), 0.85, np.float32)
    assert perturb_hed(edge, [0.05] * 3, [0.0] * 3, cfg) is not edge


def test_perturbation_moves_the_right_stain():
    img = he_like()
    before = stains(img)
    more_h = perturb_hed(img, [0.0, 0.0, 0.0], [0.02, 0.0, 0.0])
    after = stains(more_h)
    assert after[0] == pytest.approx(before[0] + 0.02, abs=2e-3)
    assert after[1] == pytest.approx(before[1], abs=2e-3)
    scaled = stains(perturb_hed(img, [0.0, -0.05, 0.0], [0.0, 0.0, 0.0]))
    assert scaled[1] == pytest.approx(before[1] * 0.95, rel=0.02)
    assert scaled[0] == pytest.approx(before[0], abs=2e-3)
    # the scikit-image unit (OD / ln 1e6) makes the same beta a ln(1e6) times larger OD shift
    strong = stains(perturb_hed(img, [0.0] * 3, [0.0, 0.002, 0.0], HEDJitter(od_unit=float(np.log(1e6)))))
    assert strong[1] == pytest.approx(before[1] + 0.002 * np.log(1e6), abs=2e-3)


def test_numpy_and_torch_agree_and_rng_is_seeded():
    imgs = [he_like(s) for s in range(3)]
    sig = np.random.default_rng(5).uniform(-0.05, 0.05, (3, 3))
    bet = np.random.default_rng(6).uniform(-0.05, 0.05, (3, 3))
    ref = np.stack([perturb_hed(im, s, b) for im, s, b in zip(imgs, sig, bet)])
    got = perturb_hed_torch(torch.from_numpy(np.stack(imgs)), sig, bet).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)
    a = hed_jitter(imgs[0], rng=np.random.default_rng(42))
    b = hed_jitter(imgs[0], rng=np.random.default_rng(42))
    c = hed_jitter(imgs[0], rng=np.random.default_rng(43))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.min() >= 0 and a.max() <= 1 and a.dtype == np.float32


def test_draw_ranges_and_augmenter_signature():
    sig, bet = HEDJitter().draw(np.random.default_rng(0), 2000)
    assert sig.shape == bet.shape == (2000, 3)
    assert -0.05 <= sig.min() < -0.045 and 0.045 < sig.max() <= 0.05
    assert -0.05 <= bet.min() < -0.045 and 0.045 < bet.max() <= 0.05
    batch = torch.from_numpy(np.stack([he_like(0), he_like(1)]))
    out = hed_transform(batch, np.random.default_rng(0))  # the Augmenter's (batch, rng) form
    assert out.shape == batch.shape and out.dtype == batch.dtype


def test_bad_input_and_settings():
    with pytest.raises(AugmentationError, match="3 channels"):
        hed_jitter(np.zeros((1, 8, 8), np.float32))
    with pytest.raises(AugmentationError, match="float"):
        hed_jitter(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(AugmentationError, match=r"\(B, 3"):
        hed_jitter_torch(torch.zeros(2, 1, 8, 8))
    with pytest.raises(AugmentationError, match="sigma"):
        HEDJitter(sigma=-1)
    with pytest.raises(AugmentationError, match="mean_range"):
        HEDJitter(mean_range=(0.9, 0.1))
    with pytest.raises(AugmentationError, match="od_unit"):
        HEDJitter(od_unit=0)
