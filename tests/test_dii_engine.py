"""dii-dcr in the training engine: a few iterations, trust weights, result layers, resume state."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_labelfx.annotations.kinds import IGNORE_INDEX, LabelKind, TrainingItem
from napari_labelfx.engine import TrainConfig, Trainer
from napari_labelfx.engine.updates import UpdateKind
from napari_labelfx.methods import MethodError, create_method
from napari_labelfx.methods.dii_dcr import build_weak_index


def _square_image(seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.int64)
    y, x = rng.integers(4, size - 14, 2)
    mask[y:y + 10, x:x + 10] = 1
    image = (mask + 0.3 * rng.standard_normal((size, size))).astype(np.float32)[None]
    return image, mask


def _items() -> list[TrainingItem]:
    """Image 0 weak (two boxes: one right, one on empty background), then strong images."""
    img, mask = _square_image(0)
    target = np.full(mask.shape, IGNORE_INDEX, np.int64)
    inst = np.zeros(mask.shape, np.int32)
    ys, xs = np.nonzero(mask)
    target[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = 1
    inst[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = 1
    free = (slice(0, 5), slice(0, 5)) if mask[:5, :5].sum() == 0 else (slice(27, 32), slice(27, 32))
    target[free], inst[free] = 1, 2  # a wrong weak label: background called foreground
    items = [TrainingItem(img, target, LabelKind.WEAK, instances=inst, name="weak0")]
    for s in (1, 2):
        im, m = _square_image(s)
        items.append(TrainingItem(im, m, LabelKind.STRONG, name=f"strong{s}"))
    return items


def _config(**params) -> TrainConfig:
    return TrainConfig(method="dii-dcr", iterations=6, patch_size=(32, 32), batch_size=2, device="cpu",
                       model={"depth": 2, "width": 4}, val_fraction=0.0, log_every=3, preview_every_s=0,
                       amp=False, method_params={"tau": 3, "hyper_crop": 32, "strong_crops": 2, **params})


def test_dii_dcr_trains_in_the_engine_and_shows_the_weights():
    torch.set_num_threads(1)
    trainer = Trainer(_config(), _items(), ["bg", "fg"])
    ups = list(trainer.updates())
    assert ups[-1].kind == UpdateKind.FINISHED, ups[-1]
    assert set(trainer.models) == {"net", "net2"}
    w1 = trainer.models["net"].head.weight
    w2 = trainer.models["net2"].head.weight
    assert not torch.allclose(w1, w2)  # two different networks
    progress = [u for u in ups if u.kind == UpdateKind.PROGRESS]
    assert {"ce", "ce2", "cps", "dice"} <= set(progress[-1].losses)
    method = trainer.method
    table = method.weights_table()
    assert [(r["item"], r["instance"]) for r in table] == [("weak0", 1), ("weak0", 2)]
    assert all(r["gamma"] != 0.5 for r in table)  # two weight updates happened (iterations 3 and 6)
    results = [u for u in ups if u.kind == UpdateKind.RESULT]
    assert results
    final = results[-1]
    layers = final.by_name()
    weights = layers["weak weights"].data
    assert weights.shape == (32, 32) and layers["weak weights"].colormap == "turbo"
    inst = _items()[0].instances
    assert np.isnan(weights[inst == 0]).all()
    assert np.allclose(weights[inst == 1], table[0]["gamma"]) and np.allclose(weights[inst == 2], table[1]["gamma"])
    feats = layers["weak trust"].table
    assert feats["index"] == [0, 1, 2] and feats["gamma"][1:] == pytest.approx([r["gamma"] for r in table])
    assert "least trusted" in final.message
    assert list(final.curves["mean weak gamma"].x) == [3, 6]


def test_dii_alone_uses_one_network_and_resumes_its_weights():
    torch.set_num_threads(1)
    trainer = Trainer(_config(dcr=False), _items(), ["bg", "fg"])
    ups = list(trainer.updates())
    assert ups[-1].kind == UpdateKind.FINISHED, ups[-1]
    assert set(trainer.models) == {"net"}
    state = trainer.method.state_dict()
    fresh = create_method("dii-dcr", {"dcr": False})
    fresh.load_state_dict(state)

    class _Ctx:  # the part of MethodContext _sync_items reads
        items = _items()
        multilabel = False
    fresh._sync_items(_Ctx())
    assert np.allclose(fresh.gammas, trainer.method.gammas)


def test_weak_as_strong_baseline_keeps_unit_weights():
    torch.set_num_threads(1)
    trainer = Trainer(_config(dii=False, dcr=False, gamma_init=1.0), _items(), ["bg", "fg"])
    ups = list(trainer.updates())
    assert ups[-1].kind == UpdateKind.FINISHED, ups[-1]
    assert np.all(trainer.method.gammas == 1.0)


def test_pixel_weights_follow_the_nearest_instance():
    method = create_method("dii-dcr", {"dcr": False})
    items = _items()

    class _Ctx:
        pass
    ctx = _Ctx()
    ctx.items = items
    method._sync_items(ctx)
    method._opt.value[:] = [0.9, 0.1]
    inst = items[0].instances[None]
    groups = method._pixel_groups(inst, np.array([0]), inst.shape)
    w = method._pixel_weights(groups, np.array([0]), torch.device("cpu")).numpy()
    assert np.allclose(w[inst == 1], 0.9) and np.allclose(w[inst == 2], 0.1)
    # a strong sample weighs 1 everywhere; a weak patch without a shape weighs the item's mean gamma
    g2 = method._pixel_groups(np.zeros((2, 4, 4), np.int32), np.array([1, 0]), (2, 4, 4))
    w2 = method._pixel_weights(g2, np.array([1, 0]), torch.device("cpu")).numpy()
    assert np.allclose(w2[0], 1.0) and np.allclose(w2[1], 0.5)


def test_the_weight_of_a_wrong_weak_label_drops_below_a_right_one():
    """After some training on strong images, a weak label that contradicts them loses trust."""
    torch.set_num_threads(1)
    img, mask = _square_image(5)
    right = TrainingItem(img, mask.copy(), LabelKind.WEAK, instances=np.ones_like(mask, np.int32), name="right")
    wrong = TrainingItem(img, 1 - mask, LabelKind.WEAK, instances=np.ones_like(mask, np.int32), name="wrong")
    strong = [TrainingItem(*_square_image(s), LabelKind.STRONG, name=f"s{s}") for s in (6, 7)]
    cfg = TrainConfig(method="dii-dcr", iterations=40, patch_size=(32, 32), batch_size=2, device="cpu",
                      model={"depth": 2, "width": 4}, val_fraction=0.0, log_every=20, preview_every_s=0,
                      amp=False, lr=5e-3, method_params={"tau": 10, "hyper_crop": 32, "strong_crops": 2,
                                                         "dcr": False, "gamma_init": 0.5})
    trainer = Trainer(cfg, [*strong, right, wrong], ["bg", "fg"])
    trainer.run()
    g = {r["item"]: r["gamma"] for r in trainer.method.weights_table()}
    assert g["right"] > 0.5 > g["wrong"], g


def test_bad_parameters_and_index_of_items_without_instances():
    with pytest.raises(MethodError, match="weak_outside"):
        create_method("dii-dcr", {"weak_outside": "foreground"})
    with pytest.raises(MethodError, match="gamma_floor"):
        create_method("dii-dcr", {"gamma_floor": 2})
    img, mask = _square_image(1)
    coarse = TrainingItem(img, mask, LabelKind.NOISY, name="coarse")  # no instance map: one instance
    index = build_weak_index([coarse, TrainingItem(img, mask, LabelKind.STRONG, name="s")])
    assert index.keys == [("coarse", 1)] and index.whole_item == [True, False]
    assert index.weak_item.tolist() == [True, False]
