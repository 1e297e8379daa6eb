"""Stain normalizers on synthetic two-stain images built from known stain vectors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_labelfx.tools.stain import (
    HE_REF,
    MacenkoNormalizer,
    ReinhardNormalizer,
    StainError,
    StainInputError,
    VahadaneNormalizer,
    make_normalizer,
    nonneg_lasso_2,
    rgb_to_lab,
)
from napari_labelfx.tools.stain.lab import lab_to_rgb, lab_to_rgb_torch, rgb_to_lab_torch

torch.set_num_threads(1)

#: Source stains (columns H, E), deliberately unlike the reference.
SRC_HE = np.array([[0.60, 0.30], [0.75, 0.85], [0.28, 0.43]])


def unit(m: np.ndarray) -> np.ndarray:
    return m / np.linalg.norm(m, axis=0)


def two_stain_image(he: np.ndarray, size: int = 96, seed: int = 0, io: float = 240.0):
    """uint8 RGB from Beer-Lambert with known stains: background, pure H, pure E and mixtures.

    Returns the image and the true concentrations (size, size, 2).
    """
    rng = np.random.default_rng(seed)
    he = unit(np.asarray(he, dtype=np.float64))
    n = size * size
    kind = rng.integers(0, 4, n)
    c = np.zeros((n, 2))
    c[kind == 1, 0] = rng.uniform(0.4, 1.6, (kind == 1).sum())
    c[kind == 2, 1] = rng.uniform(0.4, 1.1, (kind == 2).sum())
    mix = kind == 3
    c[mix, 0] = rng.uniform(0.2, 1.2, mix.sum())
    c[mix, 1] = rng.uniform(0.2, 0.9, mix.sum())
    rgb = io * np.exp(-(c @ he.T)) - 1.0  # inverse of OD = -ln((I + 1) / Io)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(size, size, 3), c.reshape(size, size, 2)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (unit(a) * unit(b)).sum(axis=0)


@pytest.fixture(scope="module")
def source():
    return two_stain_image(SRC_HE, seed=0)


@pytest.fixture(scope="module")
def reference():
    return two_stain_image(HE_REF, seed=1)


# -- Macenko -------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_macenko_recovers_known_stain_vectors(source, backend):
    img, _ = source
    est = MacenkoNormalizer(backend=backend, device="cpu").estimate(img)
    assert est.stain_matrix.shape == (3, 2)
    assert np.all(cosines(est.stain_matrix, SRC_HE) > 0.99)
    assert est.n_tissue > 0.5 * img.shape[0] * img.shape[1]


def test_macenko_normalize_maps_onto_reference_stains(source, reference):
    img, conc = source
    ref, _ = reference
    norm = MacenkoNormalizer().fit(ref)
    assert np.all(cosines(norm.stain_matrix_ref, HE_REF) > 0.99)
    out = norm.normalize(img)
    assert out.dtype == np.uint8 and out.shape == img.shape
    # the output is painted with the reference's stains, and keeps the source's structure
    assert np.all(cosines(norm.estimate(out).stain_matrix, HE_REF) > 0.99)
    h, _ = norm.separate(out)
    assert np.corrcoef(h.ravel(), conc[..., 0].ravel())[0, 1] > 0.98


def test_macenko_is_idempotent_on_the_reference(reference):
    ref, _ = reference
    norm = MacenkoNormalizer().fit(ref)
    out = norm.normalize(ref)
    diff = np.abs(out.astype(int) - ref.astype(int))
    # the method renders Io*exp(-OD) for OD = -ln((I+1)/Io): +1 grey level by construction
    assert diff.max() <= 2 and diff.mean() <= 1.2
    again = norm.normalize(out)
    assert np.abs(again.astype(int) - out.astype(int)).max() <= 2


def test_macenko_numpy_and_torch_agree(source, reference):
    img, _ = source
    ref, _ = reference
    a = MacenkoNormalizer().fit(ref)
    b = MacenkoNormalizer(backend="torch", device="cpu").fit(ref)
    np.testing.assert_allclose(a.stain_matrix_ref, b.stain_matrix_ref, atol=1e-4)
    np.testing.assert_allclose(a.max_c_ref, b.max_c_ref, rtol=1e-4)
    out_np = a.normalize(img)
    out_t = b.normalize(torch.from_numpy(img))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.uint8
    assert np.abs(out_np.astype(int) - out_t.numpy().astype(int)).max() <= 1


def test_macenko_separate_gives_concentrations(source):
    img, conc = source
    h, e = MacenkoNormalizer().separate(img)
    assert h.shape == e.shape == img.shape[:2] and h.dtype == np.float32
    assert np.corrcoef(h.ravel(), conc[..., 0].ravel())[0, 1] > 0.98
    assert np.corrcoef(e.ravel(), conc[..., 1].ravel())[0, 1] > 0.98
    h_img, e_img = MacenkoNormalizer().stain_images(img)
    assert h_img.shape == img.shape and h_img.dtype == np.uint8
    # each rendering is coloured by its reference stain alone: its OD points along that vector
    for rendered, k in ((h_img, 0), (e_img, 1)):
        od = -np.log((rendered[conc[..., k] > 0.6].astype(float) + 1) / 240).mean(axis=0)
        assert float(unit(od[:, None])[:, 0] @ unit(HE_REF)[:, k]) > 0.99


def test_tiled_matches_whole_image_and_has_no_seams(source):
    img, _ = source
    norm = MacenkoNormalizer()
    whole = norm.normalize(img)
    # enough samples for the full image: identical statistics, so tiles equal the whole
    tiled = norm.normalize_tiled(img, tile=32, sample_pixels=img.shape[0] * img.shape[1])
    np.testing.assert_array_equal(tiled, whole)
    # subsampled statistics: close to the exact ones
    sub = norm.normalize_tiled(img, tile=40, sample_pixels=2500)
    assert np.abs(sub.astype(int) - whole.astype(int)).mean() < 1.5
    out = np.zeros_like(img)
    assert norm.normalize_tiled(img, tile=50, out=out) is out


def test_tiled_on_lazy_arrays_writes_into_zarr(source):
    zarr = pytest.importorskip("zarr")
    da = pytest.importorskip("dask.array")
    img, _ = source
    norm = MacenkoNormalizer()
    whole = norm.normalize(img)
    src = zarr.create_array(store={}, shape=img.shape, chunks=(40, 40, 3), dtype="uint8")
    src[:] = img
    dst = zarr.create_array(store={}, shape=img.shape, chunks=(48, 48, 3), dtype="uint8")
    assert norm.normalize_tiled(src, tile=48, out=dst) is dst
    np.testing.assert_array_equal(dst[:], whole)
    np.testing.assert_array_equal(norm.normalize_tiled(da.from_array(img, chunks=(30, 30, 3)), tile=48), whole)
    with pytest.raises(StainInputError, match="output array shape"):
        norm.normalize_tiled(img, out=np.zeros((5, 5, 3), np.uint8))


def test_exact_fast_percentiles_match_numpy():
    from napari_labelfx.tools.stain._common import percentiles

    rng = np.random.default_rng(0)
    big = rng.normal(size=(700, 600, 3)).astype(np.float32)  # > 2^18 values: the bracketing path
    for view in (big[..., 1], big.reshape(-1)[:300_001]):
        for qs in ([1, 99], [0, 50, 100], [99.9]):
            np.testing.assert_allclose(percentiles(view, qs), np.percentile(view, qs), rtol=0, atol=1e-7)
    ties = np.repeat(np.arange(7, dtype=np.float32), 60_000)
    np.testing.assert_array_equal(percentiles(ties, [1, 50, 99]), np.percentile(ties, [1, 50, 99]))
    small = np.array([3.0, 1.0, 2.0])
    np.testing.assert_allclose(percentiles(small, [25]), np.percentile(small, [25]))
    with pytest.raises(StainError, match="empty"):
        percentiles(np.array([]), [50])


def test_fit_on_a_region(reference):
    ref, _ = reference
    mask = np.zeros(ref.shape[:2], bool)
    mask[:60, :60] = True
    norm = MacenkoNormalizer().fit(ref, mask=mask)
    assert np.all(cosines(norm.stain_matrix_ref, HE_REF) > 0.99)
    with pytest.raises(StainInputError, match="mask shape"):
        MacenkoNormalizer().fit(ref, mask=mask[:10])


def test_bad_input_raises_clear_errors(source):
    img, _ = source
    norm = MacenkoNormalizer()
    with pytest.raises(StainInputError, match="slide.tif.*greyscale"):
        norm.normalize(img[..., 0], name="slide.tif")
    with pytest.raises(StainInputError, match="channels-first"):
        norm.normalize(np.ascontiguousarray(img.transpose(2, 0, 1)))
    with pytest.raises(StainInputError, match="uint8"):
        norm.normalize(img.astype(np.float32) / 255)
    with pytest.raises(StainError, match="tissue"):
        norm.normalize(np.full((32, 32, 3), 250, np.uint8), name="blank")
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(norm.normalize(rgba), norm.normalize(img))
    with pytest.raises(StainError, match="parallel"):
        MacenkoNormalizer(stain_matrix_ref=[[1, 1], [0, 0], [0, 0]])
    with pytest.raises(StainError, match="unknown stain"):
        make_normalizer("foo")
    assert isinstance(make_normalizer("Macenko"), MacenkoNormalizer)


# -- Reinhard ------------------------------------------------------------------------------------


def test_lab_matches_reference_formulas_and_inverts():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    lab = rgb_to_lab(rgb)
    # white and mid grey: L = 100 and L = 53.585 (CIE), a = b = 0
    np.testing.assert_allclose(rgb_to_lab(np.array([[255, 255, 255]], np.uint8))[0], [100, 0, 0], atol=1e-3)
    np.testing.assert_allclose(rgb_to_lab(np.array([[128, 128, 128]], np.uint8))[0], [53.585, 0, 0], atol=2e-3)
    # pure sRGB red: the textbook CIELAB (D65) value
    np.testing.assert_allclose(rgb_to_lab(np.array([[255, 0, 0]], np.uint8))[0], [53.24, 80.09, 67.20], atol=0.05)
    np.testing.assert_allclose(np.rint(lab_to_rgb(lab) * 255), rgb, atol=0)
    lab_t = rgb_to_lab_torch(torch.from_numpy(rgb).float() / 255).numpy()
    np.testing.assert_allclose(lab_t, lab, atol=2e-3)
    np.testing.assert_allclose(lab_to_rgb_torch(torch.from_numpy(lab)).numpy(), lab_to_rgb(lab), atol=1e-4)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_reinhard_transfers_lab_statistics(source, reference, backend):
    img, _ = source
    ref, _ = reference
    norm = ReinhardNormalizer(backend=backend, device="cpu").fit(ref)
    out = norm.normalize(img)
    if isinstance(out, torch.Tensor):
        out = out.numpy()
    got = norm.lab_stats(out)
    np.testing.assert_allclose(got.means, norm.target.means, atol=0.5)
    np.testing.assert_allclose(got.stds, norm.target.stds, rtol=0.03)
    # the source's colour statistics were far from the reference's
    src = norm.lab_stats(img)
    assert np.abs(src.means - norm.target.means).max() > 3
    # and the stains seen in the output are now the reference's
    before = cosines(MacenkoNormalizer().estimate(img).stain_matrix, HE_REF)
    after = cosines(MacenkoNormalizer().estimate(out).stain_matrix, HE_REF)
    assert np.all(after > 0.99) and np.all(after > before)


def test_reinhard_idempotent_and_backends_agree(source, reference):
    img, _ = source
    ref, _ = reference
    a = ReinhardNormalizer().fit(ref)
    assert np.abs(a.normalize(ref).astype(int) - ref.astype(int)).max() <= 1
    b = ReinhardNormalizer(backend="torch", device="cpu").fit(ref)
    assert np.abs(a.normalize(img).astype(int) - b.normalize(img).astype(int)).max() <= 1
    c = ReinhardNormalizer(target_means=a.target.means, target_stds=a.target.stds)
    np.testing.assert_array_equal(c.normalize(img), a.normalize(img))
    with pytest.raises(StainError, match="fit"):
        ReinhardNormalizer().normalize(img)


# -- Vahadane ------------------------------------------------------------------------------------


def test_nonneg_lasso_matches_sklearn():
    from sklearn.decomposition import sparse_encode

    rng = np.random.default_rng(0)
    atoms = unit(SRC_HE)
    x = rng.normal(0.3, 0.5, (80, 3))
    ours = nonneg_lasso_2(x, atoms, 0.1)
    ref = sparse_encode(x, atoms.T, algorithm="lasso_cd", alpha=0.1, positive=True)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    assert (ours >= 0).all()


def test_vahadane_recovers_vectors_and_normalizes(source, reference):
    img, _ = source
    ref, _ = reference
    norm = VahadaneNormalizer()
    est = norm.estimate(img)
    assert np.all(cosines(est.stain_matrix, SRC_HE) > 0.98)
    norm.fit(ref)
    assert np.all(cosines(norm.stain_matrix_ref, HE_REF) > 0.98)
    out = norm.normalize(img)
    assert np.all(cosines(norm.estimate(out).stain_matrix, HE_REF) > 0.98)
    again = norm.normalize(ref)
    # lasso codes are slightly shrunk (lambda 0.01): close, not exact
    assert np.abs(again.astype(int) - ref.astype(int)).mean() < 3


def test_vahadane_sklearn_solver_agrees_with_builtin(source):
    img, _ = source
    fast = VahadaneNormalizer().estimate(img).stain_matrix
    slow = VahadaneNormalizer(solver="sklearn", sklearn_max_pixels=300, max_iter=30).estimate(img).stain_matrix
    assert np.all(cosines(fast, slow) > 0.99)
