"""``rpg`` through the training engine: unlabelled items, partly painted images, result layers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_labelfx.annotations.kinds import IGNORE_INDEX, TrainingItem
from napari_labelfx.engine.trainer import Trainer
from napari_labelfx.engine.updates import UpdateKind
from napari_labelfx.methods import MethodError, available_methods, create_method
from napari_labelfx.methods.rpg import PatchDrawer, weighted_pseudo_loss

torch.set_num_threads(1)


def _items(n: int, labelled: int, multilabel: bool = False, size: int = 40) -> list[TrainingItem]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        t = np.zeros((size, size), np.int64)
        t[4:16, 4:16] = 1
        t[22:34, 20:36] = 2
        img = rng.normal(0, 0.1, (1, size, size)).astype(np.float32)
        img[0][t == 1] += 1
        img[0][t == 2] -= 1
        if multilabel:
            t = np.stack([t == 1, t == 2]).astype(np.uint8)
        out.append(TrainingItem(image=img, target=t if i < labelled else None,
                                kind="strong" if i < labelled else "none", name=f"im{i}"))
    return out


def _train(method, items, names, multilabel=False, iters=3, **params):
    cfg = dict(method=method, iterations=iters, batch_size=2, patch_size=(32, 32), device="cpu", val_fraction=0,
               preview_every_s=0, log_every=1, method_params={"k": 50, "grid": 16, **params})
    trainer = Trainer(cfg, items, names, multilabel=multilabel)
    updates = list(trainer.updates())
    kinds = [u.kind for u in updates]
    assert UpdateKind.FAILED not in kinds, [u for u in updates if u.kind == UpdateKind.FAILED]
    return updates


def test_registered_and_params_checked():
    assert {"rpg", "rpg+", "fixmatch"} <= set(available_methods())
    with pytest.raises(MethodError, match="pool"):
        create_method("rpg", {"pool": 0})
    with pytest.raises(MethodError, match="no parameter"):
        create_method("rpg", {"nope": 1})


@pytest.mark.parametrize("multilabel", [False, True])
def test_rpg_trains_on_unlabelled_items_and_publishes_layers(multilabel):
    names = ["a", "b"] if multilabel else ["bg", "a", "b"]
    updates = _train("rpg", _items(3, 2, multilabel), names, multilabel)
    progress = [u for u in updates if u.kind == UpdateKind.PROGRESS]
    assert progress and all(np.isfinite(u.loss) for u in progress)
    assert "rpg" in progress[-1].losses and "rpg_w" in progress[-1].losses
    results = [u for u in updates if u.kind == UpdateKind.RESULT]
    assert results
    layers = results[-1].by_name()
    lab, w = layers["pseudo-label"], layers["pseudo-label weight"]
    assert lab.kind == "labels" and w.kind == "image"
    assert lab.image_index == 2  # the only unlabelled item
    shape = tuple(b - a for a, b in lab.region)
    assert lab.data.shape == shape == w.data.shape
    assert 0.0 <= float(w.data.min()) and float(w.data.max()) <= 1.0


def test_gui_case_queries_are_the_unpainted_pixels():
    # one image, painted on its top half only: the pool and the queries come from the same item
    item = _items(1, 1)[0]
    target = item.target.copy()
    target[20:] = IGNORE_INDEX
    item = TrainingItem(image=item.image, target=target, kind="scribble", name="gui")
    updates = _train("rpg", [item], ["bg", "a", "b"], iters=2, result_every=1)
    res = [u for u in updates if u.kind == UpdateKind.RESULT][-1].by_name()["pseudo-label weight"]
    (y0, y1), (x0, x1) = res.region
    known = target[y0:y1, x0:x1] != IGNORE_INDEX
    assert (res.data[known] == 0).all()  # painted pixels are not pseudo-labelled
    assert (~known).any()


def test_drawer_pool_and_unlabelled_patches():
    items = _items(4, 3)
    drawer = PatchDrawer(items, (24, 24), 3, False, np.random.default_rng(0))
    pool = drawer.pool(3)
    assert len(pool) == 3 and all(p["item"] < 3 for p in pool)
    assert all(p["image"].shape == (1, 24, 24) for p in pool)
    unl = drawer.unlabelled(4)
    assert all(u["item"] == 3 and (u["target"] == IGNORE_INDEX).all() for u in unl)


def test_drawer_takes_slices_of_volumes():
    rng = np.random.default_rng(1)
    vol = rng.random((1, 4, 20, 20)).astype(np.float32)
    t = np.full((4, 20, 20), IGNORE_INDEX, np.int64)
    t[1] = 0
    t[1, 5:10, 5:10] = 1
    drawer = PatchDrawer([TrainingItem(image=vol, target=t, kind="strong", name="v")], (16, 16), 2, False, rng)
    crops = drawer.unlabelled(5)
    assert all(c["image"].shape == (1, 16, 16) and c["region"][0][1] - c["region"][0][0] == 1 for c in crops)
    assert all(c["region"][0][0] != 1 for c in crops)  # the painted slice has no unknown pixel
    assert drawer.pool(1)[0]["region"][0] == [1, 2]


def test_weighted_loss_counts_low_weight_pixels_in_the_mean():
    logits = torch.zeros(1, 2, 2, 2)
    pseudo = torch.zeros(1, 2, 2, dtype=torch.int64)
    weight = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    mask = torch.ones(1, 2, 2, dtype=torch.bool)
    loss = weighted_pseudo_loss(logits, pseudo, weight, mask, False)
    assert float(loss) == pytest.approx(np.log(2) / 4, rel=1e-5)


def test_weak_flip_off_leaves_the_unlabelled_view_unflipped(monkeypatch):
    from napari_labelfx.methods import _unlabelled as rpg_module  # the weak view rpg, fixmatch and rpg+ share

    calls = []
    real = rpg_module.weak_flip
    monkeypatch.setattr(rpg_module, "weak_flip", lambda *a, **k: calls.append(1) or real(*a, **k))
    _train("rpg", _items(3, 2), ["bg", "a", "b"], weak_flip=False)
    assert not calls
    _train("rpg", _items(3, 2), ["bg", "a", "b"])
    assert calls  # on by default
