"""Losses with ignored pixels, checked against values computed by hand."""
from __future__ import annotations

import math

import pytest
import torch

from napari_labelfx.methods import losses

IGN = -1


def _logits_2class(values):
    """(1, 2, 1, N) logits whose class-1 minus class-0 logit is ``values``; class 0 logit = 0."""
    v = torch.tensor(values, dtype=torch.float32)
    return torch.stack([torch.zeros_like(v), v])[None, :, None, :].clone().requires_grad_(True)


def test_cross_entropy_ignores_unknown_pixels():
    logits = _logits_2class([0.0, math.log(3.0), 5.0, -7.0])
    target = torch.tensor([[[0, 1, IGN, IGN]]])
    # pixel 0: p(0) = 1/2 -> ln 2; pixel 1: p(1) = 3/4 -> -ln(3/4); pixels 2-3 ignored
    expected = (math.log(2) - math.log(0.75)) / 2
    loss = losses.cross_entropy(logits, target)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.all(logits.grad[..., 2:] == 0)  # ignored pixels get no gradient


def test_losses_are_zero_without_known_pixels_and_keep_the_graph():
    logits = _logits_2class([1.0, 2.0])
    target = torch.full((1, 1, 2), IGN)
    for fn in (losses.cross_entropy, losses.soft_dice_loss, losses.partial_cross_entropy):
        loss = fn(logits, target)
        assert loss.item() == 0.0
        loss.backward()  # does not raise: still attached to the graph


def test_partial_cross_entropy_class_balanced_by_hand():
    logits = _logits_2class([0.0, 0.0, 0.0, math.log(3.0)])
    target = torch.tensor([[[0, 0, 0, 1]]])
    plain = losses.partial_cross_entropy(logits, target)
    # three background pixels at ln 2 and one foreground pixel at -ln(3/4)
    assert plain.item() == pytest.approx((3 * math.log(2) - math.log(0.75)) / 4, rel=1e-6)
    balanced = losses.partial_cross_entropy(logits, target, class_balanced=True)
    assert balanced.item() == pytest.approx((math.log(2) - math.log(0.75)) / 2, rel=1e-6)


def test_soft_dice_ignores_unknown_pixels_by_hand():
    # p(fg) = 0.75, 0.25, 0.75 (third pixel unknown); target fg, bg, unknown
    logits = _logits_2class([math.log(3.0), -math.log(3.0), math.log(3.0)])
    target = torch.tensor([[[1, 0, IGN]]])
    # foreground Dice over the known pixels: 2*0.75 / (0.75 + 0.25 + 1)
    fg = 2 * 0.75 / (0.75 + 0.25 + 1.0)
    loss = losses.soft_dice_loss(logits, target, smooth=0.0)
    assert loss.item() == pytest.approx(1 - fg, rel=1e-6)
    # with background: bg Dice = 2*0.75 / (0.25 + 0.75 + 1)
    bg = 2 * 0.75 / (0.25 + 0.75 + 1.0)
    both = losses.soft_dice_loss(logits, target, smooth=0.0, include_background=True)
    assert both.item() == pytest.approx(1 - (fg + bg) / 2, rel=1e-6)


def test_soft_dice_averages_only_classes_present():
    # three classes, the target has only class 0 and 2 -> the mean is over class 2 (background excluded)
    logits = torch.zeros(1, 3, 1, 2)
    target = torch.tensor([[[0, 2]]])
    # every class has p = 1/3; class 2: 2*(1/3) / (2/3 + 1)
    d2 = 2 * (1 / 3) / (2 / 3 + 1)
    assert losses.soft_dice_loss(logits, target, smooth=0.0).item() == pytest.approx(1 - d2, rel=1e-6)


def test_bce_with_ignore_by_hand():
    logits = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[[1, 255]], [[255, 0]]]], dtype=torch.uint8)
    # known entries: class 0 pixel 0 (y=1, p=.5) and class 1 pixel 1 (y=0, p=.5): both ln 2
    assert losses.bce_with_ignore(logits, target).item() == pytest.approx(math.log(2), rel=1e-6)


def test_multilabel_dice_by_hand():
    logits = torch.tensor([[[[math.log(3.0), 0.0]]]])  # (1, 1, 1, 2): p = 0.75, 0.5
    target = torch.tensor([[[[1, 255]]]], dtype=torch.uint8)
    dice = 2 * 0.75 / (0.75 + 1)
    assert losses.soft_dice_loss_multilabel(logits, target, smooth=0.0).item() == pytest.approx(1 - dice, rel=1e-6)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="does not match logits"):
        losses.cross_entropy(torch.zeros(1, 2, 4, 4), torch.zeros(1, 5, 4, dtype=torch.long))
