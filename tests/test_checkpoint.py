"""Checkpoints: safetensors + JSON round trip, pickle refusal, clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_labelfx.models import ModelConfig, build_model
from napari_labelfx.models.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    CheckpointError,
    load_model,
    load_state_dict,
    read_config,
    save_model,
)

torch.set_num_threads(1)


class NotAStateDict:
    """A class instance: torch.save pickles it, weights_only loading must refuse it."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def _trained(cfg: ModelConfig, shape) -> torch.nn.Module:
    """A model with non-default BatchNorm statistics and weights (one optimiser step)."""
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = model(torch.randn(2, cfg.in_channels, *shape))
    loss = out.logits.square().mean() + (out.image_logits.square().mean() if out.image_logits is not None else 0)
    loss.backward()
    opt.step()
    return model.eval()


@pytest.mark.parametrize(
    "cfg,shape",
    [
        (ModelConfig(depth=2, width=4, num_classes=3), (20, 24)),
        (ModelConfig(spatial_dims=3, depth=2, width=2, norm="group", upsample="transpose",
                     multilabel=True, image_head=True, in_channels=2), (6, 9, 10)),
    ],
)
def test_round_trip_identical_outputs(tmp_path, cfg, shape):
    model = _trained(cfg, shape)
    extra = {"classes": ["bg", "a", "b"], "normalisation": {"low": 1.0, "high": 99.8},
             "best_dice": np.float32(0.75), "patch": np.array([64, 64]), "dir": tmp_path}
    folder = save_model(tmp_path / "m", model, extra)
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, MODEL_FILE]  # no temp files left
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["model"] == cfg.to_dict()
    assert config["best_dice"] == pytest.approx(0.75) and config["patch"] == [64, 64]
    loaded, cfg_back = load_model(folder)
    assert cfg_back == config and loaded.config == cfg and not loaded.training
    x = torch.randn(1, cfg.in_channels, *shape)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.equal(a.logits, b.logits)
    if a.image_logits is not None:
        assert torch.equal(a.image_logits, b.image_logits)
    # loading through the weights file or the config path gives the same model
    again, _ = load_model(folder / MODEL_FILE)
    with torch.no_grad():
        assert torch.equal(again(x).logits, a.logits)


def test_save_overwrites_atomically(tmp_path):
    cfg = ModelConfig(depth=1, width=2)
    save_model(tmp_path, build_model(cfg), {"v": 1})
    save_model(tmp_path, build_model(cfg), {"v": 2})
    assert read_config(tmp_path)["v"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_FILE, MODEL_FILE]


def test_plain_state_dict_pt_is_accepted(tmp_path):
    model = _trained(ModelConfig(depth=1, width=2), (8, 8))
    save_model(tmp_path, model, {})
    (tmp_path / MODEL_FILE).unlink()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "model.pt")
    loaded, _ = load_model(tmp_path)
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)


@pytest.mark.parametrize("payload", ["instance", "module"])
def test_pickled_objects_are_refused(tmp_path, payload):
    model = build_model(ModelConfig(depth=1, width=2))
    save_model(tmp_path, model, {})
    obj = NotAStateDict() if payload == "instance" else model  # a whole pickled nn.Module too
    torch.save(obj, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_state_dict(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil\.pt.*refusing to unpickle"):
        load_model(tmp_path / "evil.pt")
    assert issubclass(CheckpointError, ValueError)


def test_pt_holding_non_tensors_is_refused(tmp_path):
    torch.save({"weights": [1, 2, 3]}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="does not hold a state_dict"):
        load_state_dict(tmp_path / "model.pt")


def test_errors_name_the_problem(tmp_path):
    model = build_model(ModelConfig(depth=1, width=2))
    with pytest.raises(CheckpointError, match="no such model folder"):
        load_model(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="reserved key 'model'"):
        save_model(tmp_path / "a", model, {"model": 1})
    with pytest.raises(CheckpointError, match="not JSON serialisable"):
        save_model(tmp_path / "b", model, {"x": object()})
    with pytest.raises(CheckpointError, match="ModelConfig"):
        save_model(tmp_path / "c", torch.nn.Linear(2, 2), {})

    folder = save_model(tmp_path / "d", model, {})
    (folder / CONFIG_FILE).unlink()
    with pytest.raises(CheckpointError, match="missing config.json"):
        load_model(folder)

    folder = save_model(tmp_path / "e", model, {})
    (folder / MODEL_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read safetensors"):
        load_model(folder)

    folder = save_model(tmp_path / "f", model, {})
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["model"]["width"] = 4  # architecture no longer matches the weights
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="has shape"):
        load_model(folder)
    config["model"]["widht"] = 4
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="invalid model section.*widht"):
        load_model(folder)

    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unsupported model file"):
        load_model(tmp_path / "w.bin")
