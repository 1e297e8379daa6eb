"""``adele`` / ``sissi``: the per-epoch agreement feeds the ADELE rule, correction relabels confident
pixels of started classes only, protected pixels stay, and both run inside the real training loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_labelfx.annotations import LabelKind, TrainingItem
from napari_labelfx.annotations.kinds import IGNORE_INDEX
from napari_labelfx.core.results import MethodResult
from napari_labelfx.engine import TrainConfig, Trainer, UpdateKind
from napari_labelfx.methods import MethodContext, MethodError, create_method


def _scene(n=48):
    yy, xx = np.mgrid[:n, :n]
    truth = np.zeros((n, n), np.int64)
    for cy, cx in [(10, 10), (12, 34), (34, 14), (36, 36)]:
        truth[(yy - cy) ** 2 + (xx - cx) ** 2 < 25] = 1
    image = (truth[None] + np.random.default_rng(0).normal(0, 0.1, (1, n, n))).astype(np.float32)
    noisy = truth.copy()
    noisy[(yy - 36) ** 2 + (xx - 36) ** 2 < 36] = 0  # a missing cell
    return image, truth, noisy


def _onehot(labels, k=2, p=0.95):
    out = np.full((k, *labels.shape), (1 - p) / (k - 1), np.float32)
    for c in range(k):
        out[c][labels == c] = p
    return out


def _ctx(items, predict, sink):
    return MethodContext(iteration=0, total_iterations=100, num_classes=2, multilabel=False,
                         class_names=["background", "nucleus"], device=torch.device("cpu"), models={},
                         items=items, predict=predict, set_training_items=sink.extend,
                         emit_result=sink.append)


def test_saturating_agreement_switches_correction_on_and_adds_the_missing_cell():
    image, truth, noisy = _scene()
    noisy[0, :5] = IGNORE_INDEX  # held-out validation pixels stay unknown
    item = TrainingItem(image, noisy.copy(), LabelKind.NOISY, name="a")
    method = create_method("adele", {"tta_scales": [1.0], "tta_flips": False, "epoch_iters": 1})
    fg = np.flatnonzero(noisy.ravel() == 1)
    state = {"epoch": 0}

    def predict(img):
        # the network learns the noisy foreground along a saturating curve, then also the missing cell
        e = state["epoch"]
        f = 0.9 * (1 - np.exp(-e / 2.0))
        pred = np.zeros(noisy.size, np.int64)
        pred[fg[: int(f * fg.size)]] = 1
        pred = pred.reshape(noisy.shape)
        if e >= 6:
            pred = truth
        return _onehot(pred)

    sink: list = []
    ctx = _ctx([item], predict, sink)
    method.on_start(ctx)
    for e in range(1, 9):
        state["epoch"] = e
        ctx.iteration = e
        method.on_iteration(ctx)
    assert len(method.scores) == 8
    assert method.start_epoch.get(1) == 6  # 0.9 drop of the slope exp(-(e-1)/2) is passed at epoch 6
    corrected = method.corrected_targets()[0]
    missing = (truth == 1) & (noisy == 0)
    assert (corrected[missing] == 1).all()
    assert (corrected[0, :5] == IGNORE_INDEX).all()
    assert method.initial[0][missing].max() == 0  # the reference stays the initial labels
    items = [s for s in sink if isinstance(s, TrainingItem)]
    assert items and np.array_equal(items[-1].target, corrected)
    payload = [s for s in sink if isinstance(s, MethodResult)][-1]
    assert "agreement class 1" in payload.curves and "ADELE fit class 1" in payload.curves
    assert (6, "correction on (class 1, epoch 6)") in payload.markers  # iteration 6 = epoch 6 here
    assert {"corrected labels", "corrected boxes"} <= set(payload.by_name())


def test_correction_respects_confidence_present_classes_and_protected_pixels():
    image, truth, noisy = _scene()
    protected = np.zeros_like(truth, bool)
    protected[30:, 30:] = True  # the person rejected the missing cell: keep it out
    item = TrainingItem(image, noisy.copy(), LabelKind.NOISY, name="a", extra={"protected": protected})
    method = create_method("adele", {"tta_scales": [1.0, 1.2], "tta_flips": True})
    sink: list = []
    ctx = _ctx([item], lambda img: _onehot(np.ones(img.shape[1:], np.int64), p=0.7), sink)
    method.on_start(ctx)
    method.start_epoch = {1: 3}
    method._correct(ctx)
    assert np.array_equal(method.current[0], noisy)  # 0.7 < confidence 0.8: nothing changes
    ctx.predict = lambda img: _onehot((img[0] > 0.5).astype(np.int64))
    method._correct(ctx)
    cur = method.current[0]
    assert (cur[protected] == noisy[protected]).all()
    assert (cur[~protected] == (image[0] > 0.5)[~protected]).sum() > 0.95 * (~protected).sum()
    # a class absent from the image's initial labels is never introduced
    empty = TrainingItem(image, np.zeros_like(noisy), LabelKind.NOISY, name="b")
    ctx.items = [empty]
    method.on_start(ctx)
    method.start_epoch = {0: 3, 1: 3}
    method._correct(ctx)
    assert method.current[0].max() == 0


def test_bad_parameters_are_clear():
    with pytest.raises(MethodError, match="confidence"):
        create_method("adele", {"confidence": 1.5})
    with pytest.raises(MethodError, match="tta_scales"):
        create_method("sissi", {"tta_scales": [-1]})
    with pytest.raises(MethodError, match="blur"):
        create_method("sissi", {"blur_sigma": 0})


@pytest.mark.parametrize("method", ["adele", "sissi"])
def test_runs_in_the_training_loop(method):
    torch.set_num_threads(1)
    image, truth, noisy = _scene()
    item = TrainingItem(image, noisy, LabelKind.NOISY, name="a")
    params = {"tta_scales": [1.0], "tta_flips": False, "epoch_iters": 2, "min_start_epoch": 3,
              "threshold": 0.01}  # a tiny threshold: any flattening starts correction (exercises the path)
    if method == "sissi":
        params.update(blur_kernel=11, blur_sigma=3.0, synthetic_from_start=True)
    cfg = TrainConfig(method=method, iterations=12, patch_size=(32, 32), batch_size=2, device="cpu",
                      val_fraction=0.0, preview_every_s=0, method_params=params, log_every=4)
    trainer = Trainer(cfg, [item], ["background", "nucleus"])
    updates = list(trainer.updates())
    assert updates[-1].kind == UpdateKind.FINISHED, updates[-1]
    results = [u for u in updates if u.kind == UpdateKind.RESULT]
    assert results and "agreement class 1" in results[-1].curves
    assert len(trainer.method.scores) == 6
    if method == "sissi":
        # training images are the synthetic ones, the correction's reference keeps the real image
        assert trainer.method.real_images[0] is not None
        assert not np.array_equal(trainer._ctx.items[0].image, image)


def test_mixed_batches_with_a_clean_source_set(tmp_path):
    from tests.test_evaluation_helpers import make_dataset

    torch.set_num_threads(1)
    clean = make_dataset(tmp_path / "clean", n=3, size=48)
    image, truth, noisy = _scene()
    item = TrainingItem(image, noisy, LabelKind.NOISY, name="a")
    params = {"tta_scales": [1.0], "tta_flips": False, "epoch_iters": 2, "clean_source": str(clean),
              "blur_kernel": 11, "blur_sigma": 3.0}
    cfg = TrainConfig(method="sissi", iterations=4, patch_size=(32, 32), batch_size=2, device="cpu",
                      val_fraction=0.0, preview_every_s=0, method_params=params, log_every=1)
    trainer = Trainer(cfg, [item], ["background", "nucleus"])
    updates = list(trainer.updates())
    assert updates[-1].kind == UpdateKind.FINISHED, updates[-1]
    method = trainer.method
    assert len(method.clean_items) == 3 and method.clean_items[0].image.shape == (1, 48, 48)
    # equal numbers: each step's forward ran on 2 target + 2 clean patches
    batch = {"image": torch.zeros(2, 1, 32, 32), "target": torch.zeros(2, 32, 32, dtype=torch.long)}
    out = method.forward(trainer.models, batch, trainer._ctx)
    assert out["n_target"] == 2 and out[method.inference_model].logits.shape[0] == 4
    assert set(np.unique(out["clean_target"].numpy())) <= {IGNORE_INDEX, 0, 1}
    total, terms = method.loss(batch, out, trainer._ctx)
    assert torch.isfinite(total) and terms["clean_patches"] == 2.0


def test_clean_source_that_does_not_fit_is_refused(tmp_path):
    from tests.test_evaluation_helpers import make_dataset

    image, _, noisy = _scene()
    ctx = _ctx([TrainingItem(image, noisy, LabelKind.NOISY, name="a")], None, [])
    for folder, match in [(tmp_path / "missing", "clean_source"),
                          (make_dataset(tmp_path / "rgb", n=2, rgb=True), "channels"),
                          (make_dataset(tmp_path / "sem", task="semantic", n=2), "classes")]:
        method = create_method("sissi", {"clean_source": str(folder)})
        with pytest.raises(MethodError, match=match):
            method.on_start(ctx)
