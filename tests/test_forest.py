"""The pixel forest: filter bank against scikit-image, storage without pickle, training and prediction."""
import json
import pickle
import threading
import time

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import feature, filters

from napari_labelfx.annotations.kinds import IGNORE_INDEX, LabelKind, TrainingItem
from napari_labelfx.engine import TrainConfig
from napari_labelfx.engine.factory import make_trainer, method_defaults, training_methods
from napari_labelfx.engine.forest_trainer import ForestTrainer
from napari_labelfx.engine.updates import UpdateKind
from napari_labelfx.forest.classifier import ForestError, ForestSettings, PixelForest
from napari_labelfx.forest.features import FeatureError, FilterBank
from napari_labelfx.forest.folder import load_forest, save_forest
from napari_labelfx.inference import Predictor
from napari_labelfx.inference.forest_predictor import ForestPredictor


def blobs(shape=(96, 96), n=8, seed=0, radius=6):
    """A float image with bright discs on a noisy background, and its mask."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, bool)
    grid = np.indices(shape)
    for _ in range(n):
        c = [rng.integers(radius + 2, s - radius - 2) for s in shape]
        mask |= sum((g - ci) ** 2 for g, ci in zip(grid, c)) <= radius**2
    image = mask * 1.0 + rng.normal(0, 0.25, shape)
    return image.astype(np.float32), mask


def scribbles(mask, seed=0, frac=0.03):
    """A sparse target: a few painted pixels of each class, the rest unknown."""
    rng = np.random.default_rng(seed)
    target = np.full(mask.shape, IGNORE_INDEX, np.int64)
    for value, where in ((1, mask), (0, ~ndi.binary_dilation(mask, iterations=2))):
        idx = np.flatnonzero(where)
        pick = rng.choice(idx, max(5, int(frac * idx.size)), replace=False)
        target.flat[pick] = value
    return target


# -- filter bank -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.7, 1.6, 3.5])
def test_filter_bank_matches_scikit_image_2d(sigma):
    rng = np.random.default_rng(0)
    x = ndi.gaussian_filter(rng.random((40, 48)), 1.0).astype(np.float32)
    bank = FilterBank(sigmas=(sigma,))
    f = dict(zip(bank.names, bank.compute(x[None])))
    gauss = filters.gaussian(x, sigma, mode="mirror", truncate=4.0, preserve_range=True)
    np.testing.assert_allclose(f[f"gauss@{sigma:g}"], gauss, atol=1e-5)
    H = feature.hessian_matrix(x.astype(np.float64), sigma, mode="mirror", order="rc", use_gaussian_derivatives=True)
    ev = feature.hessian_matrix_eigvals(H)
    # scikit-image cuts its kernels later (truncate 8-100 against our 4): equal up to the far tails
    tol = 2e-3 * np.abs(ev).max()
    np.testing.assert_allclose(f[f"hessian0@{sigma:g}"], ev[0], atol=tol)
    np.testing.assert_allclose(f[f"hessian1@{sigma:g}"], ev[1], atol=tol)
    # LoG is the trace of the Hessian; gradient magnitude from Gaussian derivatives
    np.testing.assert_allclose(f[f"log@{sigma:g}"], H[0] + H[2], atol=tol)
    grad = np.hypot(*(ndi.gaussian_filter(x, sigma, order=o, mode="mirror") for o in ((1, 0), (0, 1))))
    np.testing.assert_allclose(f[f"gradient@{sigma:g}"], grad, atol=1e-5)
    # structure tensor: derivatives at sigma/2, products smoothed at sigma; eigenvalues as scikit-image's
    d = [ndi.gaussian_filter(x, sigma / 2, order=o, mode="mirror") for o in ((1, 0), (0, 1))]
    A = [ndi.gaussian_filter(a * b, sigma, mode="mirror") for a, b in ((d[0], d[0]), (d[0], d[1]), (d[1], d[1]))]
    st = feature.structure_tensor_eigenvalues(A)
    np.testing.assert_allclose(f[f"structure0@{sigma:g}"], st[0], atol=1e-5)
    np.testing.assert_allclose(f[f"structure1@{sigma:g}"], st[1], atol=1e-5)


def test_filter_bank_matches_scikit_image_3d():
    rng = np.random.default_rng(1)
    x = ndi.gaussian_filter(rng.random((16, 20, 18)), 1.0).astype(np.float32)
    bank = FilterBank(sigmas=(1.0,), spatial_dims=3)
    f = dict(zip(bank.names, bank.compute(x[None])))
    assert len(bank.names) == 3 + 3 + 3  # gauss, log, gradient, 3 Hessian and 3 structure eigenvalues
    H = feature.hessian_matrix(x.astype(np.float64), 1.0, mode="mirror", order="rc", use_gaussian_derivatives=True)
    ev = feature.hessian_matrix_eigvals(H)
    for i in range(3):
        np.testing.assert_allclose(f[f"hessian{i}@1"], ev[i], atol=2e-3 * np.abs(ev).max())
    np.testing.assert_allclose(f["gauss@1"], filters.gaussian(x, 1.0, mode="mirror", preserve_range=True), atol=1e-5)


@pytest.mark.parametrize("shape", [(70, 90), (12, 40, 36)])
def test_features_of_a_region_equal_the_whole_image(shape):
    rng = np.random.default_rng(2)
    x = rng.random((2, *shape)).astype(np.float32)
    bank = FilterBank(sigmas=(0.3, 1.0, 2.0), spatial_dims=len(shape))
    whole = bank.compute(x)
    region = tuple(slice(s // 4, s // 4 + s // 3) for s in shape)
    np.testing.assert_allclose(bank.compute_region(x, region), whole[(slice(None), *region)], atol=1e-5)
    assert whole.shape[0] == bank.n_features(2)


def test_filter_bank_rejects_bad_settings():
    with pytest.raises(FeatureError, match="sigmas"):
        FilterBank(sigmas=(0.0, 1.0))
    with pytest.raises(FeatureError, match="unknown filter kind"):
        FilterBank(kinds=("gauss", "gabor"))
    assert FilterBank.from_dict(FilterBank(sigmas=(1.0, 2.0)).to_dict()) == FilterBank(sigmas=(1.0, 2.0))


# -- the forest and its storage ---------------------------------------------------------------------------
def _labels(x, multilabel):
    if multilabel:
        y = np.stack([(x[:, 0] > 0.5), (x[:, 1] > 0.3)], 1).astype(np.uint8)
        y[:50, 1] = 255  # unknown for class 1 there
        return y
    return (x[:, 0] > 0.5).astype(np.int64) + (x[:, 1] > 0.8)


@pytest.mark.parametrize("multilabel", [False, True])
@pytest.mark.parametrize("kind", ["extra", "random"])
def test_forest_saved_as_arrays_predicts_the_same(multilabel, kind):
    x = np.random.default_rng(0).random((400, 5)).astype(np.float32)
    k = 2 if multilabel else 3
    forest = PixelForest(k, multilabel, ForestSettings(kind=kind, n_trees=8)).fit(x, _labels(x, multilabel))
    arrays = forest.to_arrays()
    assert all(a.dtype != object for a in arrays.values())
    again = PixelForest.from_arrays(arrays, k, multilabel)
    np.testing.assert_array_equal(again.predict_proba(x), forest.predict_proba(x))
    broken = dict(arrays, f0_left=arrays["f0_left"][:-1])
    with pytest.raises(ForestError, match="shape"):
        PixelForest.from_arrays(broken, k, multilabel)


class _Evil:
    def __reduce__(self):
        return (open, ("/tmp/labelfx-forest-pwned", "w"))


def test_model_folder_round_trip_and_pickle_refused(tmp_path):
    from napari_labelfx.core.normalize import percentile_normalise

    image, mask = blobs()
    # items hold normalised images (as the annotation model makes them); the predictor normalises raw ones
    items = [TrainingItem(percentile_normalise(image[None]), scribbles(mask), LabelKind.SCRIBBLE, name="a")]
    cfg = TrainConfig(method="forest", method_params={"n_trees": 8, "sigmas": "0.3,1,2"}, output_dir=str(tmp_path / "run"),
                      preview_every_s=0)
    result = make_trainer(cfg, items, ["background", "nucleus"]).run()
    folder = result.best_dir
    assert (folder / "forest.npz").is_file() and json.loads((folder / "config.json").read_text())["method"] == "forest"
    pred = Predictor.from_folder(folder)
    assert isinstance(pred, ForestPredictor) and pred.class_names == ["background", "nucleus"]
    test_image, test_mask = blobs(seed=5)
    labels = pred(test_image[None]).labels
    dice = 2 * (labels.astype(bool) & test_mask).sum() / (labels.astype(bool).sum() + test_mask.sum())
    assert dice > 0.85
    forest, bank, config = load_forest(folder)
    assert bank.sigmas == (0.3, 1.0, 2.0)
    # a pickle disguised as the tree file is refused without running
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "config.json").write_text((folder / "config.json").read_text())
    with open(evil / "forest.npz", "wb") as fh:
        np.savez(fh, n_features=np.array([_Evil()], dtype=object))
    with pytest.raises(ForestError, match="plain numeric arrays"):
        load_forest(evil)
    (evil / "forest.npz").write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(ForestError):
        Predictor.from_folder(evil)
    import os

    assert not os.path.exists("/tmp/labelfx-forest-pwned")


def test_network_loader_names_a_forest_folder(tmp_path):
    from napari_labelfx.models.checkpoint import CheckpointError, load_model

    image, mask = blobs()
    forest = PixelForest(2, False, ForestSettings(n_trees=4))
    bank = FilterBank(sigmas=(1.0,))
    feats = bank.compute(image[None]).reshape(bank.n_features(1), -1).T
    forest.fit(feats[::7], mask.ravel()[::7].astype(int))
    save_forest(tmp_path / "f", forest, bank, 1, {"class_names": ["background", "x"]})
    with pytest.raises(CheckpointError, match="pixel forest"):
        load_model(tmp_path / "f")


# -- training ------------------------------------------------------------------------------------------------
def test_forest_trains_on_every_painted_kind_and_ignores_unknown():
    image, mask = blobs(shape=(64, 64))
    strong = TrainingItem(image[None], mask.astype(np.int64), LabelKind.STRONG, name="s")
    sparse = TrainingItem(image[None], scribbles(mask, seed=3), LabelKind.SCRIBBLE, name="w")
    unlabelled = TrainingItem(image[None], None, LabelKind.NONE, name="u")
    cfg = TrainConfig(method="forest", method_params={"n_trees": 8, "sigmas": "0.3,1,2", "max_samples": 500,
                                                      "live": False},
                      preview_every_s=0, val_fraction=0.0)
    trainer = make_trainer(cfg, [strong, sparse, unlabelled], ["background", "nucleus"])
    assert isinstance(trainer, ForestTrainer)
    kinds = [u.kind for u in trainer.updates()]
    assert kinds[0] == UpdateKind.STARTED and kinds[-1] == UpdateKind.FINISHED
    fit = trainer.history[0]
    # the per-class floor keeps both classes; unknown pixels never enter
    assert 500 <= fit["n_samples"] <= 700


def test_forest_multilabel_gets_one_forest_per_class():
    image, mask = blobs(shape=(64, 64))
    target = np.stack([~mask, mask]).astype(np.uint8)
    target[1, :10] = 255
    item = TrainingItem(image[None], target, LabelKind.STRONG, name="m")
    cfg = TrainConfig(method="forest", method_params={"n_trees": 4, "sigmas": "1,2"}, preview_every_s=0, val_fraction=0)
    trainer = make_trainer(cfg, [item], ["background", "nucleus"], multilabel=True)
    trainer.run()
    assert len(trainer.forest.forests) == 2
    labels, conf = trainer.predict_region(0)
    assert labels.shape == (2, 64, 64)


def test_forest_3d_volume_and_bad_parameters():
    rng = np.random.default_rng(0)
    vol = rng.normal(0, 0.2, (12, 32, 32)).astype(np.float32)
    mask = np.zeros(vol.shape, bool)
    mask[3:9, 8:20, 8:20] = True
    vol[mask] += 1
    item = TrainingItem(vol[None], mask.astype(np.int64), LabelKind.STRONG, name="v")
    cfg = TrainConfig(method="forest", spatial="3d", method_params={"n_trees": 4, "sigmas": "1,2"}, preview_every_s=0,
                      val_fraction=0)
    trainer = make_trainer(cfg, [item], ["background", "cell"])
    trainer.run()
    assert trainer.bank.spatial_dims == 3
    labels, _ = trainer.predict_region(0, (slice(0, 12), slice(0, 32), slice(0, 32)))
    assert (labels.astype(bool) == mask).mean() > 0.95
    from napari_labelfx.engine.config import ConfigError

    with pytest.raises(ConfigError, match="n_trees"):
        make_trainer(TrainConfig(method="forest", method_params={"n_trees": 0}), [item], ["background", "cell"])
    with pytest.raises(ConfigError, match="no parameter"):
        make_trainer(TrainConfig(method="forest", method_params={"trees": 3}), [item], ["background", "cell"])


def test_live_mode_refits_after_new_strokes_and_stops():
    image, mask = blobs()
    first = scribbles(mask, seed=1, frac=0.005)
    item = TrainingItem(image[None], first, LabelKind.SCRIBBLE, name="a")
    cfg = TrainConfig(method="forest", method_params={"n_trees": 8, "sigmas": "0.3,1,2", "live": True},
                      preview_every_s=3.0, val_fraction=0.0)
    trainer = make_trainer(cfg, [item], ["background", "nucleus"])
    seen = []

    def consume():
        for upd in trainer.updates():
            seen.append(upd)

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    deadline = time.time() + 60
    while sum(u.kind == UpdateKind.PREVIEW for u in seen) < 1 and time.time() < deadline:
        time.sleep(0.05)
    more = TrainingItem(image[None], scribbles(mask, seed=2, frac=0.05), LabelKind.SCRIBBLE, name="a")
    trainer.set_items([more])  # the person painted more strokes
    # the quick first forest, its refinement, then the new strokes (quick, then refined)
    while sum(u.kind == UpdateKind.PROGRESS for u in seen) < 4 and time.time() < deadline:
        time.sleep(0.05)
    trainer.request_preview(0, (slice(10, 50), slice(20, 60)))
    while seen[-1].kind != UpdateKind.PREVIEW or seen[-1].region != ((10, 50), (20, 60)):
        assert time.time() < deadline
        time.sleep(0.05)
    trainer.control.stop()
    worker.join(30)
    assert not worker.is_alive()
    kinds = [u.kind for u in seen]
    assert kinds.count(UpdateKind.PROGRESS) >= 2 and kinds[-1] == UpdateKind.FINISHED
    assert seen[-1].reason == "stopped"
    fits = [h for h in trainer.history if h["kind"] == "train"]
    assert fits[0]["quick"] and not fits[1]["quick"]  # a quick answer first, refined while idle
    assert fits[-1]["n_samples"] > fits[0]["n_samples"]  # the new strokes were used
    assert not trainer.quick  # what is kept is the full forest
    assert trainer.cache.hits > 0  # the refit reused the cached feature tiles


def test_live_first_answer_is_quick_and_stop_keeps_the_full_forest(tmp_path):
    image, mask = blobs()
    item = TrainingItem(image[None], scribbles(mask, seed=1, frac=0.05), LabelKind.SCRIBBLE, name="a")
    cfg = TrainConfig(method="forest", method_params={"n_trees": 40, "sigmas": "0.3,1,2", "live": True},
                      val_fraction=0.0, output_dir=str(tmp_path / "run"))
    trainer = make_trainer(cfg, [item], ["background", "nucleus"])
    seen = []
    for upd in trainer.updates():
        seen.append(upd)
        if upd.kind == UpdateKind.PREVIEW:
            trainer.control.stop()  # Stop at once, before the refinement could run
    fits = [h for h in trainer.history if h["kind"] == "train"]
    assert fits[0]["quick"] and not fits[-1]["quick"]
    assert [len(f.estimators_) for f in trainer.forest.forests] == [40]
    from napari_labelfx.inference import Predictor

    saved = Predictor.from_folder(tmp_path / "run" / "best")  # the saved model is the full forest
    assert saved.forest.settings.n_trees == 40


def test_prefetched_features_serve_the_first_fit():
    from napari_labelfx.engine.forest_trainer import live_filter_bank
    from napari_labelfx.forest.tiles import (
        drop_shared_cache,
        image_digest,
        image_tiles,
        prefetch_features,
        shared_cache,
    )

    drop_shared_cache()
    image, mask = blobs()
    params = {"sigmas": "0.3,1,2", "n_trees": 8}
    bank = live_filter_bank("forest", params, 2)
    assert live_filter_bank("supervised", params, 2) is None
    prefetch_features(image[None], bank).join(60)
    cache = shared_cache(bank)
    digest = image_digest(image[None])
    assert all(cache.has(digest, t) for t in image_tiles(image.shape))
    misses = cache.misses
    item = TrainingItem(image[None], scribbles(mask, seed=1, frac=0.05), LabelKind.SCRIBBLE, name="a")
    cfg = TrainConfig(method="forest", method_params={**params, "live": True}, val_fraction=0.0)
    trainer = make_trainer(cfg, [item], ["background", "nucleus"])
    for upd in trainer.updates():
        if upd.kind == UpdateKind.PREVIEW:
            trainer.control.stop()
    assert trainer.cache is cache and cache.misses == misses  # nothing computed again
    drop_shared_cache()


def test_training_methods_list_the_default_path_first():
    names = training_methods()
    assert names[:2] == ["auto", "forest"] and "supervised" in names
    defaults, important, _ = method_defaults("forest")
    assert set(important) <= set(defaults)


def test_cli_trains_a_forest_and_predicts_with_it(tmp_path, capsys):
    import tifffile

    from napari_labelfx._sample_data import make_nuclei_2d
    from napari_labelfx.cli import main

    d = make_nuclei_2d(seed=3, size=96)
    img, lab = tmp_path / "img.tif", tmp_path / "scrib.tif"
    tifffile.imwrite(img, (d["image"] * 1000).astype(np.uint16))
    tifffile.imwrite(lab, d["scribbles"].astype(np.uint16))
    out = tmp_path / "model"
    assert main(["train", "--images", str(img), "--labels", str(lab), "--kind", "scribble", "--out", str(out),
                 "--method", "forest", "--param", "n_trees=8", "--param", "sigmas=0.3,1,2"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out / "best" / "forest.npz").is_file() and res["best"] == str(out / "best")
    for name in ("pred.tif", "pred.zarr"):  # in memory, and streamed window by window
        assert main(["predict", "--model", str(out / "best"), str(img), str(tmp_path / name)]) == 0
    # the run's folder, as a network's run folder, predicts with its best forest
    assert main(["predict", "--model", str(out), str(img), str(tmp_path / "run.tif")]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "run.tif"), tifffile.imread(tmp_path / "pred.tif"))
    from napari_labelfx.io.reader import read_image

    mem, streamed = tifffile.imread(tmp_path / "pred.tif"), np.asarray(read_image(tmp_path / "pred.zarr").data)
    truth = d["strong"] > 0
    for pred in (mem, streamed):
        assert 2 * (pred.astype(bool) & truth).sum() / (pred.astype(bool).sum() + truth.sum()) > 0.8
    assert (mem == streamed).mean() > 0.97  # streaming windows see less context at their borders


def test_scribbles_on_many_images_read_a_bounded_number_of_tiles():
    from napari_labelfx.forest.tiles import FeatureCache, sample_training_pixels

    items = []
    for i in range(6):
        image, mask = blobs(shape=(64, 64), seed=i)
        items.append(TrainingItem(image[None], scribbles(mask, seed=i), LabelKind.SCRIBBLE, name=str(i)))
    cache = FeatureCache(FilterBank(sigmas=(1.0,)))
    x, y = sample_training_pixels(items, cache, 2, False, 1000, np.random.default_rng(0), max_tiles=3)
    assert cache.misses == 3 and set(np.unique(y)) == {0, 1}  # both classes despite the cap
    assert x.shape == (y.size, FilterBank(sigmas=(1.0,)).n_features(1))


def test_a_2d_forest_predicts_a_volume_slice_by_slice(tmp_path):
    from napari_labelfx.core.normalize import percentile_normalise

    image, mask = blobs(shape=(64, 64))
    item = TrainingItem(percentile_normalise(image[None]), mask.astype(np.int64), LabelKind.STRONG, name="a")
    cfg = TrainConfig(method="forest", method_params={"n_trees": 8, "sigmas": "0.3,1,2"}, output_dir=str(tmp_path / "r"),
                      preview_every_s=0, val_fraction=0)
    folder = make_trainer(cfg, [item], ["background", "nucleus"]).run().best_dir
    pred = Predictor.from_folder(folder)
    volume = np.stack([image, image[::-1], image[:, ::-1]])  # (Z, Y, X)
    labels = pred(volume).labels
    assert labels.shape == (3, 64, 64)
    np.testing.assert_array_equal(labels[1], pred(image[::-1][None]).labels)


@pytest.mark.parametrize("step", [2, 3])
def test_strided_prediction_is_the_full_prediction_on_the_grid(step, monkeypatch):
    """Pseudo-labels for a network at scale 1/step classify every step-th pixel only; each path (whole
    image, tiles of a region, cached tiles) gives the full prediction on that grid."""
    from napari_labelfx.forest import tiles
    from napari_labelfx.forest.tiles import FeatureCache, predict_region_probabilities

    monkeypatch.setattr(tiles, "TILE", {2: (40, 48), 3: (8, 16, 16)})  # several tiles on a small image
    rng = np.random.default_rng(1)
    image = ndi.gaussian_filter(rng.random((1, 101, 95)), 2).astype(np.float32)
    bank = FilterBank(sigmas=(1.0, 2.0))
    x = bank.compute(image).reshape(bank.n_features(1), -1).T
    forest = PixelForest(2, False, ForestSettings(n_trees=4)).fit(x[::7], (image.reshape(-1)[::7] > 0.5).astype(int))
    region = (slice(7, 90), slice(13, 95))
    full = predict_region_probabilities(forest, image, region, bank=bank)
    want = full[:, ::step, ::step]
    for kwargs in ({"bank": bank}, {"cache": FeatureCache(bank), "digest": "img"}):
        got = predict_region_probabilities(forest, image, region, step=step, **kwargs)
        np.testing.assert_allclose(got, want, atol=1e-6)
    whole = predict_region_probabilities(forest, image, step=step, cache=FeatureCache(bank, max_bytes=0))
    np.testing.assert_allclose(whole, predict_region_probabilities(forest, image, bank=bank)[:, ::step, ::step],
                               atol=1e-6)
    with pytest.raises(ValueError, match="step"):
        predict_region_probabilities(forest, image, region, bank=bank, step=0)


def test_tiles_whose_halo_covers_the_image_come_from_one_whole_image_pass(monkeypatch):
    """A volume not much larger than a tile and its halo: one pass computes every tile's features (equal
    to the tile-by-tile ones); large images keep the tile-by-tile path."""
    from napari_labelfx.forest import tiles
    from napari_labelfx.forest.tiles import FeatureCache, image_tiles

    monkeypatch.setattr(tiles, "TILE", {2: (32, 32), 3: (8, 16, 16)})
    bank = FilterBank(sigmas=(1.0, 2.0), spatial_dims=3)  # halo 13
    vol = np.random.default_rng(0).random((1, 12, 30, 28)).astype(np.float32)
    calls = []
    real = FilterBank.compute_region

    def counted(self, image, region):
        calls.append(region)
        return real(self, image, region)

    cache = FeatureCache(bank)
    monkeypatch.setattr(FilterBank, "compute_region", counted)
    grid = image_tiles((12, 30, 28))
    assert len(grid) == 8
    for t in grid:
        np.testing.assert_allclose(cache.features(vol, t, "vol"), real(bank, vol, t), atol=1e-5)
    assert len(calls) == 1 and cache.misses == 1 and cache.hits == 7  # one pass, then cached tiles
    big = np.random.default_rng(1).random((1, 200, 200)).astype(np.float32)
    bank2 = FilterBank(sigmas=(1.0,))  # halo 7: a 32x32 tile reads 46x46 of 200x200
    cache2 = FeatureCache(bank2)
    t0 = image_tiles((200, 200))[0]
    assert cache2._whole_image_tiles(big, t0) is None
    small_budget = FeatureCache(bank, max_bytes=1000)
    assert small_budget._whole_image_tiles(vol, grid[0]) is None  # the features would not fit the cache
