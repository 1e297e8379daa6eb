"""The default path (forest first, network behind it), the working scale and the time budget."""
import json

import numpy as np
import pytest
import torch

from napari_labelfx.annotations.kinds import LabelKind, TrainingItem
from napari_labelfx.core.normalize import percentile_normalise
from napari_labelfx.engine import TrainConfig, Trainer
from napari_labelfx.engine import auto_trainer as auto_mod
from napari_labelfx.engine.auto_trainer import AutoTrainer, object_diameter, working_scale
from napari_labelfx.engine.config import ConfigError
from napari_labelfx.engine.factory import make_trainer
from napari_labelfx.engine.updates import UpdateKind
from napari_labelfx.inference import Predictor
from tests.test_forest import blobs, scribbles


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _items(sparse=True, n=2, shape=(96, 96)):
    out = []
    for i in range(n):
        image, mask = blobs(shape=shape, seed=i, radius=8)
        target = scribbles(mask, seed=i) if sparse else mask.astype(np.int64)
        out.append(TrainingItem(percentile_normalise(image[None]), target,
                                LabelKind.SCRIBBLE if sparse else LabelKind.STRONG, name=f"im{i}"))
    return out


def _config(tmp_path, **kw):
    base = dict(method="auto", iterations=6, batch_size=2, patch_size=(32, 32), val_every=3, log_every=3,
                preview_every_s=0.0, device="cpu", output_dir=str(tmp_path / "run"), val_fraction=0.3, val_block=8,
                method_params={"n_trees": 8, "sigmas": "0.3,1,2"})
    base.update(kw)
    return TrainConfig(**base)


def test_object_size_gives_the_working_scale():
    mask = np.zeros((200, 200), bool)
    yy, xx = np.indices(mask.shape)
    for cy, cx in ((50, 50), (50, 150), (150, 100)):
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= 20**2
    d = object_diameter([mask])
    assert d == pytest.approx(40, rel=0.05)
    assert working_scale(d, target=24, min_scale=0.25) == 0.625
    fragments = mask.copy()
    fragments[::7, ::7] = True  # many one-pixel specks (below min_area) and a few small blobs
    for y in range(5, 195, 12):
        fragments[y:y + 4, 190:194] = True
    assert object_diameter([fragments]) == pytest.approx(40, rel=0.1)  # the big objects still set the size
    assert working_scale(400, target=24, min_scale=0.25) == 0.25  # lesion-sized objects: the floor
    assert working_scale(10, target=24, min_scale=0.25) == 1.0  # never upsampled
    assert working_scale(None, 24, 0.25) == 1.0


def test_default_path_shows_the_forest_first_then_keeps_both(tmp_path):
    trainer = make_trainer(_config(tmp_path), _items(), ["background", "nucleus"])
    assert isinstance(trainer, AutoTrainer)
    ups = list(trainer.updates())
    kinds = [u.kind for u in ups]
    assert kinds[0] == UpdateKind.STARTED and kinds[-1] == UpdateKind.FINISHED, ups[-1]
    first_preview = next(u for u in ups if u.kind == UpdateKind.PREVIEW)
    assert first_preview.source == "forest"
    # a quick forest answers first, the full one (whose pseudo-labels the network learns) follows
    forest_fits = [u.quick for u in ups if u.kind == UpdateKind.PROGRESS and u.source == "forest"]
    assert forest_fits[:2] == [True, False]
    assert [len(f.estimators_) for f in trainer.forest.forest.forests] == [8]
    # the forest is scored before the network has taken a step
    assert kinds.index(UpdateKind.PREVIEW) < next(i for i, u in enumerate(ups)
                                                  if u.kind == UpdateKind.PROGRESS and u.source == "network")
    net_vals = [u for u in ups if u.kind == UpdateKind.VALIDATION and u.source == "network"]
    assert net_vals and all(u.winner is not None and u.forest["dice_mean"] is not None for u in net_vals)
    run = tmp_path / "run"
    choice = json.loads((run / "choice.json").read_text())
    assert (run / "forest" / "forest.npz").is_file() and (run / "network" / "best" / "model.safetensors").is_file()
    assert choice["winner"] in ("forest", "network") and ups[-1].best_path == choice["best"]
    pred = Predictor.from_folder(choice["best"])  # "Predict" uses the better one, whichever it is
    assert pred(_items()[0].image, normalise=False).labels.shape == (96, 96)


def test_switch_to_the_network_when_it_scores_higher(tmp_path, monkeypatch):
    def perfect(model, split, class_names, multilabel, device, batch_size=4, amp=False):
        return {"val_loss": 0.01, "dice": {}, "dice_mean": 1.0, "accuracy": 1.0, "n_pixels": 10}

    monkeypatch.setattr(auto_mod, "evaluate_split", perfect)
    cfg = _config(tmp_path, preview_every_s=0.001)
    trainer = make_trainer(cfg, _items(), ["background", "nucleus"])
    ups = list(trainer.updates())
    assert ups[-1].kind == UpdateKind.FINISHED and ups[-1].winner == "network"
    assert ups[-1].best_path.endswith("best") and "network" in ups[-1].best_path
    sources = [u.source for u in ups if u.kind == UpdateKind.PREVIEW]
    assert sources[0] == "forest" and "network" in sources  # previews follow the winner
    logs = [u.message for u in ups if u.kind == UpdateKind.LOG]
    assert any("now showing the network" in m for m in logs)


def test_pseudo_labels_fill_unpainted_pixels_but_not_held_out_ones(tmp_path):
    items = _items()
    trainer = AutoTrainer(_config(tmp_path), items, ["background", "nucleus"])
    list(trainer.forest._fit(trainer.forest.items))
    cfg, net_items, info = trainer._prepare_network(trainer.forest.items)
    assert info["pseudo_labelled_items"] == 2
    split = trainer.net_split
    for net, train, source in zip(net_items, split.train_items, split.source_items):
        painted = source.target >= 0
        held_out = painted & (train.target < 0)
        assert (net.target[held_out] < 0).all()  # validation pixels stay unknown
        assert (net.target >= 0).sum() > 3 * painted.sum()  # the forest filled many unpainted pixels
        np.testing.assert_array_equal(net.target[painted & ~held_out], source.target[painted & ~held_out])


def test_strong_masks_set_the_working_scale_and_bad_params_are_refused(tmp_path):
    items = _items(sparse=False, n=1, shape=(128, 128))
    trainer = AutoTrainer(_config(tmp_path, method_params={"n_trees": 4, "sigmas": "1,2", "target_diameter": 8.0}),
                          items, ["background", "nucleus"])
    list(trainer.forest._fit(trainer.forest.items))
    cfg, _, info = trainer._prepare_network(trainer.forest.items)
    assert info["scale"] == 0.5 and cfg.model["input_scale"] == 0.5 and cfg.patch_size == (64, 64)
    with pytest.raises(ConfigError, match="scale"):
        AutoTrainer(_config(tmp_path, method_params={"scale": "big"}), items, ["background", "nucleus"])
    with pytest.raises(ConfigError, match="no parameter"):
        AutoTrainer(_config(tmp_path, method_params={"trees": 3}), items, ["background", "nucleus"])


def test_working_scale_network_gives_full_size_outputs(tmp_path):
    items = _items(sparse=False, n=1)
    cfg = TrainConfig(method="supervised", iterations=4, batch_size=2, patch_size=(64, 64), model={"input_scale": 0.5},
                      preview_every_s=0, val_fraction=0, device="cpu", output_dir=str(tmp_path / "s"))
    result = Trainer(cfg, items, ["background", "nucleus"]).run()
    pred = Predictor.from_folder(result.last_dir)
    assert pred(items[0].image, normalise=False).probabilities.shape == (2, 96, 96)
    with pytest.raises(ConfigError, match="working scale"):
        Trainer(TrainConfig(method="rpg", model={"input_scale": 0.5}), items, ["background", "nucleus"])


def test_time_budget_stops_training_and_reports_it():
    items = _items(sparse=False, n=1)
    cfg = TrainConfig(method="supervised", iterations=1_000_000, batch_size=2, patch_size=(32, 32), preview_every_s=0,
                      val_fraction=0, device="cpu", time_budget_s=1.5)
    result = Trainer(cfg, items, ["background", "nucleus"]).run()
    assert result.stopped_reason == "time-budget" and 0 < result.iterations < 1_000_000
    with pytest.raises(ConfigError, match="time_budget_s"):
        TrainConfig(time_budget_s=-1)


def test_eval_time_budget_and_default_method(tmp_path):
    from napari_labelfx.evaluation import run_eval
    from tests.test_evaluation_helpers import make_dataset

    root = make_dataset(tmp_path / "nuclei", n=6)
    r = run_eval(root, "supervised", strong=2, patch=32, batch=2, device="cpu", time_budget=2.0, seed=0)
    assert r["stopped_reason"] == "time-budget" and r["time_budget_s"] == 2.0
    assert 0 < r["iterations"] < r["iterations_requested"]
    r = run_eval(root, "forest", strong=2, device="cpu", seed=0, n_trees=8, sigmas="0.3,1,2")
    assert r["method"] == "forest" and r["metrics"]["mean_dice"] > 0.5
    import argparse

    from napari_labelfx.cli import eval as eval_command

    args = eval_command.add_arguments(argparse.ArgumentParser()).parse_args(["--dataset", str(root), "--time-budget", "30"])
    assert args.method == "auto" and args.time_budget == 30.0


def test_a_near_tie_on_held_out_pixels_shows_the_network():
    from napari_labelfx.engine.auto_trainer import _shows_network

    forest = {"dice_mean": 0.97, "val_loss": 0.1}
    assert _shows_network({"dice_mean": 0.962, "val_loss": 0.3}, forest, 0.01)  # within the margin
    assert not _shows_network({"dice_mean": 0.955, "val_loss": 0.01}, forest, 0.01)  # clearly below
    assert not _shows_network({"dice_mean": 0.962, "val_loss": 0.3}, forest, 0.0)  # margin 0: strictly better
    assert _shows_network({"dice_mean": 0.97, "val_loss": 0.05}, forest, 0.0)  # a tie: the lower loss
    assert _shows_network({"dice_mean": None, "val_loss": 0.05}, forest, 0.01)  # no Dice: by loss


def test_the_forest_is_never_scored_on_pixels_it_trained_on(tmp_path):
    """At a working scale below 1 the network's split has larger windows and keeps other held-out
    blocks than the forest's own split; the forest is refitted without them before it is scored."""
    from napari_labelfx.engine.auto_trainer import _trained_on_held_out

    items = _items(sparse=False, n=2, shape=(320, 320))
    cfg = _config(tmp_path, val_fraction=0.2, val_block=8, patch_size=(16, 16),
                  method_params={"n_trees": 4, "sigmas": "1", "scale": 0.5, "pseudo_labels": False})
    t = AutoTrainer(cfg, items, ["background", "blob"])
    t._interactive = False
    list(t._forest_phase())
    own_split = t.forest.split
    scored = []
    real_validation = auto_mod.forest_validation

    def checked_validation(forest, split, *args):
        scored.append(_trained_on_held_out(t.forest.split, split, False))
        return real_validation(forest, split, *args)

    auto_mod.forest_validation = checked_validation
    try:
        t._prepare_network(t.forest.items)
    finally:
        auto_mod.forest_validation = real_validation
    assert t.net_split.enabled
    assert _trained_on_held_out(own_split, t.net_split, False)  # the case this guards against happened
    assert scored == [False]  # scored on pixels it had not seen
    assert t.forest_val is not None
    # then refitted on every painted pixel: the forest shown is the one the person would get alone
    assert t.forest_refits == 2
    held = [w.mask.sum() for w in t.net_split.windows]
    assert sum(held) > 0 and all(np.array_equal(a.target, b.target) for a, b in zip(t.forest.split.train_items, items))


def test_many_painted_images_are_compared_on_whole_held_out_images(tmp_path):
    """With `compare_images` painted images, both learners are scored on whole images neither trained
    on (held-out blocks next to training strokes cannot show how either does on a new image)."""
    from napari_labelfx.engine.auto_trainer import _trained_on_held_out

    items = _items(n=4)
    params = {"n_trees": 4, "sigmas": "1,2", "scale": 1.0, "compare_images": 3}
    t = AutoTrainer(_config(tmp_path, val_fraction=0.25, method_params=params), items, ["background", "nucleus"])
    t._interactive = False
    list(t._forest_phase())
    scored = []
    real_validation = auto_mod.forest_validation

    def checked_validation(forest, split, *args):
        scored.append(_trained_on_held_out(t.forest.split, split, False))
        return real_validation(forest, split, *args)

    auto_mod.forest_validation = checked_validation
    try:
        _, net_items, info = t._prepare_network(t.forest.items)
    finally:
        auto_mod.forest_validation = real_validation
    (held,) = t.net_split.held_items
    assert scored == [False] and t.forest_val is not None
    assert (net_items[held].target < 0).all()  # neither painted nor forest labels of the held-out image
    others = [net for i, net in enumerate(net_items) if i != held]
    assert all((net.target >= 0).sum() > (item.target >= 0).sum() for net, item in zip(others, items))
    # below the threshold, or with 0, the comparison holds out blocks inside every image
    for least in (5, 0):
        t2 = AutoTrainer(_config(tmp_path, val_fraction=0.25, method_params={**params, "compare_images": least}),
                         items, ["background", "nucleus"])
        assert t2._comparison_split(items, (32, 32)).held_items == ()
    with pytest.raises(ConfigError, match="compare_images"):
        AutoTrainer(_config(tmp_path, method_params={**params, "compare_images": -1}), items, ["background", "nucleus"])
