"""Method registry and interface: a new method plugs in without touching the loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_labelfx.annotations import LabelKind, TrainingItem
from napari_labelfx.core.results import MethodResult, ResultLayer
from napari_labelfx.engine import TrainConfig, Trainer, UpdateKind
from napari_labelfx.methods import (
    Method,
    MethodError,
    UnknownMethodError,
    available_methods,
    create_method,
    get_method,
    losses,
    register_method,
)


def test_builtin_methods_are_registered_with_defaults():
    assert {"supervised", "scribble"} <= set(available_methods())
    assert get_method("scribble")().params == {"class_balanced": True}
    assert create_method("supervised", {"dice_weight": 0.5}).params["dice_weight"] == 0.5


def test_unknown_method_and_parameter_are_clear_errors():
    with pytest.raises(UnknownMethodError, match="unknown training method 'nope'.*supervised"):
        get_method("nope")
    with pytest.raises(MethodError, match="no parameter\\(s\\) \\['alpha'\\]"):
        create_method("supervised", {"alpha": 1})


@register_method
class _DeepSupervisionProbe(Method):
    """A test method in the shape later methods take: two networks, decoder taps, hooks."""

    name = "_test_probe"
    defaults = {"pseudo_label_every": 3}

    def __init__(self, params=None):
        super().__init__(params)
        self.calls = {"start": 0, "iteration": 0, "pseudo": 0, "epoch": 0}

    def build_models(self, model_config):
        from napari_labelfx.models import build_model

        torch.manual_seed(1)
        return {"net": build_model(model_config), "twin": build_model(model_config)}

    def forward(self, models, batch, ctx):
        return {name: m(batch["image"]) for name, m in models.items()}

    def loss(self, batch, outputs, ctx):
        out = outputs["net"]
        assert len(out.decoder) == models_depth(ctx) + 1  # decoder taps reach the method
        main = losses.cross_entropy(out.logits, batch["target"])
        twin = losses.cross_entropy(outputs["twin"].logits, batch["target"])
        return main + twin, {"main": main.detach(), "twin": float(twin.detach())}

    def on_start(self, ctx):
        self.calls["start"] += 1

    def on_iteration(self, ctx):
        self.calls["iteration"] += 1

    def pseudo_label_step(self, ctx):
        self.calls["pseudo"] += 1
        probs = ctx.predict(ctx.items[0].image)  # the inference network on a whole image
        assert probs.shape == (ctx.num_classes, *ctx.items[0].image.shape[1:])

    def on_epoch_end(self, ctx):
        self.calls["epoch"] += 1

    def result_layers(self):
        calls = np.array([self.calls["iteration"]], np.int32)
        return MethodResult(layers=(ResultLayer(name="calls", kind="image", data=calls),))


def models_depth(ctx) -> int:
    return ctx.models["net"].config.depth


def test_a_registered_method_gets_its_networks_batch_and_hooks():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    target = (rng.random((24, 24)) > 0.5).astype(np.int64)
    item = TrainingItem(target[None].astype(np.float32), target, LabelKind.STRONG)
    cfg = TrainConfig(method="_test_probe", iterations=6, patch_size=(16, 16), batch_size=2, device="cpu",
                      model={"depth": 2, "width": 4}, val_fraction=0.0, log_every=3, preview_every_s=0)
    trainer = Trainer(cfg, [item], ["bg", "fg"])
    ups = list(trainer.updates())
    kinds = [u.kind for u in ups]
    assert kinds[-1] == UpdateKind.FINISHED, ups[-1]
    progress = [u for u in ups if u.kind == UpdateKind.PROGRESS]
    assert set(progress[0].losses) == {"main", "twin"}
    method = trainer.method
    assert method.calls["start"] == 1 and method.calls["iteration"] == 6 and method.calls["pseudo"] == 2
    assert method.calls["epoch"] == 6 // trainer._ctx.epoch_length
    results = [u for u in ups if u.kind == UpdateKind.RESULT]
    assert results and int(results[-1].by_name()["calls"].data[0]) == 6
    assert trainer.model is trainer.models["net"]
