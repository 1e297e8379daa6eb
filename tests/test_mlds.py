"""MLDS: pooled multi-hot targets, heads, image-level loss, and the methods in the engine."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_labelfx.annotations import LabelKind, TrainingItem
from napari_labelfx.engine import TrainConfig, Trainer, UpdateKind
from napari_labelfx.methods import MethodError, create_method
from napari_labelfx.methods._deep_supervision import (
    DeepSupervisionHeads,
    TaggedImageSampler,
    deep_supervision_loss,
    image_level_loss,
    patch_tags,
    pool_mask_targets,
)
from napari_labelfx.methods.mlds import ema_update, sigmoid_rampup

torch.set_num_threads(1)


def test_pooled_targets_multiclass_hand_computed():
    # 4x4 mask, classes 0..2; class 2 only in the top-right cell of the 2x2 grid
    t = torch.tensor([[[0, 0, 1, 2],
                       [0, 1, 0, 0],
                       [0, 0, 0, 0],
                       [0, 0, 0, 1]]])
    (t4, w4), (t2, w2), (t1, w1) = pool_mask_targets(t, 3, [(4, 4), (2, 2), (1, 1)])
    assert torch.equal(t4[0].argmax(0), t[0]) and bool((w4 == 1).all())
    expect2 = torch.tensor([[[1, 1], [1, 1]],   # background everywhere
                            [[1, 1], [0, 1]],   # class 1: top-left, top-right, bottom-right
                            [[0, 1], [0, 0]]],  # class 2: top-right only
                           dtype=torch.float32)
    assert torch.equal(t2[0], expect2)
    assert bool((w2 == 1).all())
    assert torch.equal(t1[0, :, 0, 0], torch.tensor([1.0, 1.0, 1.0]))


def test_pooled_targets_unknown_pixels():
    t = torch.tensor([[[-1, 0, 1, 1],
                       [0, 0, 1, 1],
                       [-1, -1, -1, -1],
                       [-1, -1, -1, -1]]])
    (tp, wp), = pool_mask_targets(t, 2, [(2, 2)])
    # top-left cell: one unknown pixel -> background positive (known), class 1 unknown
    assert tp[0, :, 0, 0].tolist() == [1.0, 0.0] and wp[0, :, 0, 0].tolist() == [1.0, 0.0]
    # top-right fully known, only class 1
    assert tp[0, :, 0, 1].tolist() == [0.0, 1.0] and wp[0, :, 0, 1].tolist() == [1.0, 1.0]
    # bottom row: nothing known
    assert float(wp[0, :, 1].sum()) == 0.0


def test_pooled_targets_multilabel_overlapping_and_3d():
    t = np.zeros((1, 2, 4, 4), np.uint8)
    t[0, 0, :2, :2] = 1
    t[0, 1, 1:3, 1:3] = 1  # overlaps class 0
    t[0, 1, 3, 3] = 255
    (tp, wp), = pool_mask_targets(torch.from_numpy(t), 2, [(2, 2)], multilabel=True)
    assert tp[0, 0].tolist() == [[1, 0], [0, 0]]
    assert tp[0, 1].tolist() == [[1, 1], [1, 1]]
    assert wp[0, 0].tolist() == [[1, 1], [1, 1]] and wp[0, 1, 1, 1] == 1  # positive beats unknown
    vol = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    vol[0, 3, 3, 3] = 1
    (tv, _), = pool_mask_targets(vol, 2, [(2, 2, 2)])
    assert tv[0, 1].sum() == 1 and tv[0, 1, 1, 1, 1] == 1


def test_heads_shapes_and_losses_train():
    heads = DeepSupervisionHeads([32, 16, 8], num_classes=3, spatial_dims=2, hidden=8)
    dec = [torch.randn(2, 32, 2, 2), torch.randn(2, 16, 4, 4), torch.randn(2, 8, 8, 8)]
    out = heads(dec)
    assert [tuple(o.shape) for o in out] == [(2, 3, 2, 2), (2, 3, 4, 4), (2, 3, 8, 8)]
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, :3, :3] = 2
    loss = deep_supervision_loss(out, pool_mask_targets(target, 3, [o.shape[2:] for o in out]))
    loss.backward()
    assert torch.isfinite(loss) and heads.heads[0][0].weight.grad is not None
    # image-level: average-pooled logits; perfect large logits give ~0 loss, wrong ones a large loss
    tags = torch.tensor([[1.0, 0.0, 1.0]])
    good = [torch.tensor([20.0, -20.0, 20.0]).reshape(1, 3, 1, 1).expand(1, 3, 4, 4)]
    assert image_level_loss(good, tags, torch.ones_like(tags)) < 1e-6
    assert image_level_loss([-g for g in good], tags, torch.ones_like(tags)) > 10
    assert image_level_loss([-g for g in good], tags, torch.zeros_like(tags)) == 0


def test_patch_tags_and_tagged_sampler():
    t = torch.tensor([[[0, 1], [0, 0]], [[0, 0], [0, -1]]])
    tags, w = patch_tags(t, 2, multilabel=False)
    assert tags.tolist() == [[1, 1], [1, 0]] and w.tolist() == [[1, 1], [1, 0]]
    items = [TrainingItem(np.ones((1, 16, 12), np.float32), None, LabelKind.IMAGE_LEVEL,
                          tags=np.array([1, 1], np.float32), name="a"),
             TrainingItem(np.ones((1, 3, 16, 12), np.float32), None, LabelKind.IMAGE_LEVEL,
                          tags=np.array([1, 0], np.float32), name="vol")]
    s = TaggedImageSampler(0)
    x, tg, wt = s.sample(items, 6, (8, 8), torch.device("cpu"))
    assert x.shape == (6, 1, 8, 8) and torch.allclose(x, torch.ones_like(x))
    for row_t, row_w in zip(tg, wt):
        if row_t[1] == 0:  # volume slice: only the absent class counts
            assert row_w.tolist() == [0.0, 1.0]
        else:
            assert row_w.tolist() == [1.0, 1.0]
    assert s.sample(items[:0], 2, (8, 8), torch.device("cpu")) is None


def test_rampup_and_ema():
    assert sigmoid_rampup(0.0, 0.3) == pytest.approx(np.exp(-5))
    assert sigmoid_rampup(0.3, 0.3) == 1.0 and sigmoid_rampup(0.9, 0.3) == 1.0
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = a.weight.detach().clone()
    ema_update(a, b, 0.75)
    assert torch.allclose(a.weight, 0.75 * before + 0.25 * b.weight)


def test_bad_parameters_are_clear_errors():
    with pytest.raises(MethodError, match="unlabeled must be one of"):
        create_method("mlds", {"unlabeled": "teacher"})
    with pytest.raises(MethodError, match="ema must be"):
        create_method("mlds-mt", {"ema": 1.5})


def _items(multilabel: bool = False) -> list[TrainingItem]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(4):
        img = rng.normal(0, 0.1, (1, 32, 32)).astype(np.float32)
        cls = np.zeros((32, 32), np.int64)
        cls[8:20, 6 + i:18 + i] = 1
        img[0][cls == 1] += 1.0
        tags = np.array([1.0, 1.0], np.float32)
        if multilabel:
            target = np.stack([cls == 1, cls == 0]).astype(np.uint8)
        else:
            target = cls
        if i == 0:
            out.append(TrainingItem(img, target, LabelKind.STRONG, name=f"s{i}"))
        elif i == 1:
            out.append(TrainingItem(img, None, LabelKind.NONE, name=f"u{i}"))
        else:
            out.append(TrainingItem(img, None, LabelKind.IMAGE_LEVEL, tags=tags, name=f"t{i}"))
    return out


@pytest.mark.parametrize("method,multilabel", [("mlds", False), ("mlds-mt", False), ("mlds-mt", True)])
def test_methods_train_in_engine(method, multilabel):
    cfg = TrainConfig(method=method, iterations=4, batch_size=2, patch_size=(32, 32), device="cpu",
                      val_fraction=0.0, preview_every_s=0, log_every=2,
                      method_params={"tag_batch": 2, "head_width": 8})
    names = ["fg", "bg"] if multilabel else ["background", "fg"]
    trainer = Trainer(cfg, _items(multilabel), names, multilabel=multilabel)
    teacher_before = None
    if method == "mlds-mt":
        teacher_before = [p.detach().clone() for p in trainer.models["teacher"].parameters()]
    kinds = [u.kind for u in trainer.updates()]
    assert kinds[-1] == UpdateKind.FINISHED
    progress = [r for r in trainer.history if r["kind"] == "train"]
    assert progress and all(np.isfinite(r["loss"]) for r in progress)
    assert "loss_ds" in progress[-1] and "loss_image" in progress[-1]
    assert set(trainer.models) >= {"net", "ds_heads"}
    if teacher_before is not None:
        assert "loss_consistency" in progress[-1]
        after = list(trainer.models["teacher"].parameters())
        assert any(not torch.equal(a, b) for a, b in zip(after, teacher_before))  # EMA moved the teacher
        assert all(not p.requires_grad for p in after)


def test_self_taught_uses_unlabeled_images():
    cfg = TrainConfig(method="mlds", iterations=3, batch_size=4, patch_size=(32, 32), device="cpu",
                      val_fraction=0.0, preview_every_s=0, log_every=3, annotated_fraction=0.0,
                      method_params={"unlabeled": "self", "tag_batch": 0, "head_width": 8, "rampup": 0.0})
    trainer = Trainer(cfg, _items(), ["background", "fg"])
    trainer.run()
    assert "teacher" not in trainer.models
    assert "loss_ds_unlabeled" in trainer.history[-1]
