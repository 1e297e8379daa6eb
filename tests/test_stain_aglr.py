"""stain-aglr method and HED augmentation inside the engine: tiny synthetic H&E-like images."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_labelfx.annotations import LabelKind, TrainingItem
from napari_labelfx.data.augment import AugmentConfig, Augmenter, available_transforms
from napari_labelfx.engine import TrainConfig, Trainer
from napari_labelfx.methods import MethodError, create_method, get_method
from napari_labelfx.methods.stain_aglr import RegenerationHead, consistency_kl

torch.set_num_threads(1)
TINY = {"depth": 2, "width": 8}


def _he_item(seed: int, n: int = 40) -> TrainingItem:
    """Pink background with purple disks (RGB in [0, 1]) and the disk mask as target."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n]
    mask = np.zeros((n, n), np.int64)
    for _ in range(3):
        cy, cx = rng.integers(6, n - 6, 2)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 < 25] = 1
    pink, purple = np.array([0.92, 0.6, 0.75]), np.array([0.35, 0.2, 0.55])
    rgb = np.where(mask[..., None] > 0, purple, pink) + rng.normal(0, 0.03, (n, n, 3))
    image = np.clip(rgb, 0, 1).astype(np.float32).transpose(2, 0, 1)
    return TrainingItem(image, mask, LabelKind.STRONG, name=f"he{seed}")


def _cfg(**kw) -> TrainConfig:
    base = dict(iterations=4, patch_size=(32, 32), batch_size=2, device="cpu", model=dict(TINY), log_every=2,
                val_every=4, preview_every_s=0, val_fraction=0.0, lr=3e-3)
    base.update(kw)
    return TrainConfig(**base)


def test_stain_aglr_trains_with_finite_terms_and_a_separate_regeneration_head(tmp_path):
    items = [_he_item(s) for s in range(2)]
    trainer = Trainer(_cfg(method="stain-aglr", output_dir=str(tmp_path / "run")), items, ["bg", "nucleus"])
    assert set(trainer.models) == {"net", "regen"}
    assert isinstance(trainer.models["regen"], RegenerationHead)
    assert trainer.model is trainer.models["net"]  # only the segmentation network predicts
    result = trainer.run()
    assert result.stopped_reason == "done" and result.iterations == 4
    train = [r for r in result.history if r["kind"] == "train"]
    assert train
    for rec in train:
        for key in ("loss", "loss_task", "loss_reg", "loss_cons"):
            assert math.isfinite(rec[key]), (key, rec)
        assert rec["loss_reg"] > 0  # the reconstruction is never perfect after a few steps
    # the saved inference model is the plain UNet (no regeneration weights in it)
    from napari_labelfx.models.checkpoint import load_state_dict

    keys = load_state_dict(result.last_dir / "model.safetensors")
    assert not any(k.startswith("body.") for k in keys)


def test_stain_aglr_loss_weights_follow_the_spec():
    m = create_method("stain-aglr")
    assert m.params["reg_weight"] == 0.1 and m.params["cons_weight"] == 10.0
    assert m.params["hed_sigma"] == 0.05 and m.params["hed_bias"] == 0.05
    with pytest.raises(MethodError, match="cons_weight"):
        create_method("stain-aglr", {"cons_weight": -1})


def test_stain_aglr_refuses_non_rgb_images():
    item = TrainingItem(np.zeros((1, 32, 32), np.float32), np.zeros((32, 32), np.int64), LabelKind.STRONG, name="grey")
    with pytest.raises(MethodError, match="RGB"):
        Trainer(_cfg(method="stain-aglr"), [item], ["bg", "fg"])


def test_consistency_kl_is_zero_for_equal_predictions_and_only_moves_the_jittered_branch():
    raw = torch.randn(2, 3, 8, 8, requires_grad=True)
    assert consistency_kl(raw, raw.detach().clone()).item() == pytest.approx(0.0, abs=1e-6)
    jit = torch.randn(2, 3, 8, 8, requires_grad=True)
    loss = consistency_kl(raw, jit)
    assert loss.item() > 0
    loss.backward()
    assert raw.grad is None  # P(y|x) is detached
    assert jit.grad is not None and jit.grad.abs().sum() > 0
    ml = consistency_kl(raw, jit.detach() + 1.0, multilabel=True)
    assert ml.item() > 0


def test_hed_augmentation_runs_inside_the_engine():
    assert get_method("supervised")  # the plain method with the built-in ``hed`` switch
    cfg = AugmentConfig.from_dict({"hed": True, "intensity": False})
    assert cfg.hed and "hed" in available_transforms()
    batch = {"image": torch.from_numpy(np.stack([_he_item(0).image, _he_item(1).image])),
             "target": torch.zeros(2, 40, 40, dtype=torch.int64)}
    out = Augmenter(cfg, 2, rng=0)(batch)
    # geometry may move pixels; compare colour statistics, which only the stain jitter changes
    before = batch["image"].mean(dim=(2, 3))
    after = out["image"].mean(dim=(2, 3))
    assert not torch.allclose(before, after) and torch.all((out["image"] >= 0) & (out["image"] <= 1))
    items = [_he_item(s) for s in range(2)]
    aug = {"flip": True, "rot90": True, "intensity": False, "hed": True}
    result = Trainer(_cfg(method="supervised", augment=aug), items, ["bg", "nucleus"]).run()
    assert result.stopped_reason == "done" and result.iterations == 4
