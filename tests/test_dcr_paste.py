"""DCR: foreground paste, mixed targets, partner permutation, weighted loss and nearest-instance domains."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_labelfx.annotations.kinds import IGNORE_INDEX
from napari_labelfx.methods import _paste, losses
from napari_labelfx.methods.dii_dcr import nearest_instance, weighted_ce_dice


def test_pair_permutation_has_no_fixed_points():
    for b in (2, 3, 7):
        for seed in range(5):
            perm = _paste.pair_permutation(b, torch.Generator().manual_seed(seed))
            assert sorted(perm.tolist()) == list(range(b))
            assert all(perm[i] != i for i in range(b))
    assert _paste.pair_permutation(1).tolist() == [0]


def test_foreground_masks_pick_a_present_class():
    t = torch.full((3, 4, 4), IGNORE_INDEX, dtype=torch.long)
    t[0, :2, :2] = 2  # only class 2 present
    t[0, 2:, 2:] = 0
    t[1] = 0  # background only -> no paste
    t[2, 0, 0], t[2, 3, 3] = 1, 2  # classes 1 and 2
    seen = set()
    for seed in range(12):
        mask, cls = _paste.foreground_masks(t, torch.Generator().manual_seed(seed))
        assert cls[0] == 2 and mask[0].sum() == 4 and bool(mask[0, :2, :2].all())
        assert cls[1] == -1 and not mask[1].any()
        assert int(cls[2]) in (1, 2) and torch.equal(mask[2], t[2] == cls[2])
        seen.add(int(cls[2]))
    assert seen == {1, 2}


def test_paste_and_mixed_target_hand_case():
    x_i = torch.ones(1, 2, 2, 2)
    x_j = torch.zeros(1, 2, 2, 2)
    mask = torch.tensor([[[True, False], [False, True]]])
    mixed = _paste.paste(x_i, x_j, mask)
    assert mixed[0, :, 0, 0].tolist() == [1, 1] and mixed[0, :, 0, 1].tolist() == [0, 0]
    assert mixed[0, :, 1, 1].tolist() == [1, 1]
    pred_i = torch.tensor([[[1, 1], [1, 1]]])
    pred_j = torch.tensor([[[0, 2], [0, 2]]])
    assert _paste.mixed_target(pred_i, pred_j, mask).tolist() == [[[1, 2], [0, 1]]]
    with pytest.raises(ValueError):
        _paste.paste(x_i, x_j, mask[:, :1])


def test_paste_works_in_3d():
    x = torch.arange(16, dtype=torch.float32).reshape(2, 1, 2, 2, 2)
    mask = torch.zeros(2, 2, 2, 2, dtype=torch.bool)
    mask[0, 0] = True
    out = _paste.paste(x, x.flip(0), mask)
    assert torch.equal(out[0, 0, 0], x[0, 0, 0]) and torch.equal(out[0, 0, 1], x[1, 0, 1])


def test_nearest_instance_assigns_background_to_the_closest_shape():
    ins = np.zeros((1, 9), np.int32)
    ins[0, 1], ins[0, 7] = 3, 5
    assert nearest_instance(ins).tolist() == [[3, 3, 3, 3, 3, 5, 5, 5, 5]] or \
        nearest_instance(ins).tolist() == [[3, 3, 3, 3, 5, 5, 5, 5, 5]]
    assert not nearest_instance(np.zeros((3, 3), np.int32)).any()


def test_weighted_loss_with_unit_weights_is_the_supervised_loss():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 6, 6, generator=gen)
    t = torch.randint(0, 3, (2, 6, 6), generator=gen)
    t[0, 0] = IGNORE_INDEX
    known = (t != IGNORE_INDEX).float()
    ce, dice = weighted_ce_dice(logits, t, torch.ones(2, 6, 6), known.sum())
    assert ce.item() == pytest.approx(losses.cross_entropy(logits, t).item(), rel=1e-5)
    assert dice.item() == pytest.approx(losses.soft_dice_loss(logits, t).item(), rel=1e-5)
    # a zero weight removes a sample from the cross-entropy sum
    w = torch.ones(2, 6, 6)
    w[1] = 0
    ce0, _ = weighted_ce_dice(logits, t, w, known[0].sum())
    assert ce0.item() == pytest.approx(losses.cross_entropy(logits[:1], t[:1]).item(), rel=1e-5)
