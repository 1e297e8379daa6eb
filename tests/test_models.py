"""UNet 2D/3D: tap shapes for odd sizes, heads, registry and config round trip."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_labelfx.models import (
    PRESETS,
    ModelConfig,
    ModelConfigError,
    SegOutput,
    UnknownModelError,
    available_models,
    build_model,
    config_from_preset,
    register_model,
)

torch.set_num_threads(1)


def _tiny(**kw) -> ModelConfig:
    base = dict(depth=3, width=4)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("dims,size", [(2, (37, 45)), (3, (11, 19, 13))])
@pytest.mark.parametrize("upsample", ["linear", "transpose"])
@pytest.mark.parametrize("norm", ["batch", "group", "instance"])
def test_tap_shapes_odd_sizes(dims, size, upsample, norm):
    depth = 3 if dims == 2 else 2
    cfg = _tiny(spatial_dims=dims, in_channels=2, num_classes=3, depth=depth, norm=norm, upsample=upsample)
    model = build_model(cfg).eval()
    assert model.config is cfg
    x = torch.randn(2, 2, *size)
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, SegOutput)
    assert out.logits.shape == (2, 3, *size)
    assert out.features.shape == (2, model.feature_channels, *size)
    assert len(out.decoder) == depth + 1 == len(model.decoder_channels)
    for i, (tap, ch) in enumerate(zip(out.decoder, model.decoder_channels)):
        expected = tuple(math.ceil(s / 2 ** (depth - i)) for s in size)
        assert tap.shape == (2, ch, *expected), f"tap f{i}"
    assert out.image_logits is None
    # the head is exactly the 1x1 classifier on the returned features
    torch.testing.assert_close(model.head(out.features), out.logits)
    # encode() is the (valid part of the) bottleneck, i.e. f0
    torch.testing.assert_close(model.encode(x), out.decoder[0])


def test_default_depth_four_gives_five_taps():
    model = build_model(ModelConfig(width=2)).eval()
    out = model(torch.randn(1, 1, 33, 17))
    sizes = [tuple(t.shape[2:]) for t in out.decoder]
    assert sizes == [(3, 2), (5, 3), (9, 5), (17, 9), (33, 17)]


def test_padding_is_consistent_with_explicit_reflect_pad():
    """An odd-sized input gives the crop of the prediction on its own reflect-padded version."""
    model = build_model(_tiny(norm="instance")).eval()
    x = torch.randn(1, 1, 21, 30)
    padded = F.pad(x, [0, 2, 0, 3], mode="reflect")  # to 24 x 32 (multiples of 8)
    with torch.no_grad():
        a = model(x).logits
        b = model(padded).logits[..., :21, :30]
    torch.testing.assert_close(a, b)


def test_tiny_input_smaller_than_divisor():
    model = build_model(_tiny(spatial_dims=3, depth=3)).eval()
    out = model(torch.randn(1, 1, 3, 5, 2))
    assert out.logits.shape == (1, 2, 3, 5, 2)


def test_multilabel_and_image_head():
    cfg = _tiny(num_classes=4, multilabel=True, image_head=True)
    model = build_model(cfg)
    out = model(torch.randn(3, 1, 19, 23))
    assert out.logits.shape == (3, 4, 19, 23)
    assert out.image_logits is not None and out.image_logits.shape == (3, 4)
    # image logits come from the bottleneck tap, so Grad-CAM can differentiate them w.r.t. f0
    grad = torch.autograd.grad(out.image_logits[:, 1].sum(), out.decoder[0], retain_graph=True)[0]
    assert grad.shape == out.decoder[0].shape and grad.abs().sum() > 0
    torch.testing.assert_close(model.classify(out.decoder[0]), out.image_logits)
    loss = out.logits.sum() + out.image_logits.sum()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_no_image_head_classify_raises():
    model = build_model(_tiny())
    with pytest.raises(ValueError, match="image-level head"):
        model.classify(torch.randn(1, 32, 2, 2))


def test_dropout_only_in_train_mode():
    model = build_model(_tiny(dropout=0.5))
    x = torch.randn(1, 1, 16, 16)
    model.eval()
    with torch.no_grad():
        a, b = model(x).logits, model(x).logits
    torch.testing.assert_close(a, b)
    model.train()
    out = model(x)
    torch.testing.assert_close(model.head(out.features), out.logits)


def test_wrong_input_raises():
    model = build_model(_tiny(in_channels=3))
    with pytest.raises(ValueError, match="C=3"):
        model(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.randn(1, 3, 4, 16, 16))


@pytest.mark.parametrize("init", ["kaiming", "xavier"])
def test_init_schemes(init):
    model = build_model(ModelConfig(depth=2, width=32, init=init, norm="none"))
    conv = model.downs[1][1][0][0]  # Conv2d(64 -> 128), fan_in 576, fan_out 1152
    std = conv.weight.std().item()
    fan_in, fan_out = 64 * 9, 128 * 9
    expected = math.sqrt(2 / fan_in) if init == "kaiming" else math.sqrt(2 / (fan_in + fan_out))
    assert abs(std - expected) / expected < 0.05
    assert conv.bias is not None and torch.all(conv.bias == 0)


def test_config_round_trip_json():
    cfg = ModelConfig(spatial_dims=3, in_channels=2, num_classes=5, depth=2, width=8, norm="group",
                      upsample="transpose", init="xavier", multilabel=True, image_head=True, dropout=0.1)
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    m1, m2 = build_model(cfg), build_model(again.to_dict())
    assert [k for k in m1.state_dict()] == [k for k in m2.state_dict()]


@pytest.mark.parametrize(
    "kw,msg",
    [({"spatial_dims": 4}, "spatial_dims"), ({"norm": "layer"}, "norm"), ({"depth": 0}, "depth"),
     ({"width": -1}, "width"), ({"upsample": "nearest"}, "upsample"), ({"dropout": 1.5}, "dropout"),
     ({"init": "orthogonal"}, "init")],
)
def test_config_validation(kw, msg):
    with pytest.raises(ModelConfigError, match=msg):
        ModelConfig(**kw)


def test_from_dict_unknown_key():
    with pytest.raises(ModelConfigError, match="unknown keys.*'widht'"):
        ModelConfig.from_dict({"widht": 3})
    assert issubclass(ModelConfigError, ValueError)


def test_presets():
    assert set(PRESETS) == {"small", "medium", "large"}
    small = config_from_preset("small", spatial_dims=3, num_classes=3)
    assert (small.depth, small.width, small.spatial_dims) == (3, 16, 3)
    counts = [sum(p.numel() for p in build_model(config_from_preset(n)).parameters()) for n in PRESETS]
    assert counts == sorted(counts)
    with pytest.raises(ModelConfigError, match="preset"):
        config_from_preset("huge")


def test_registry():
    assert "unet" in available_models()

    @register_model("test-pointwise")
    class Pointwise(nn.Module):
        def __init__(self, cfg: ModelConfig) -> None:
            super().__init__()
            self.head = nn.Conv2d(cfg.in_channels, cfg.num_classes, 1)

        def forward(self, x):
            return SegOutput(logits=self.head(x), features=x, decoder=[x])

    model = build_model({"name": "test-pointwise", "num_classes": 3})
    assert isinstance(model, Pointwise) and model.config.num_classes == 3
    assert "test-pointwise" in available_models()
    # registering the same factory again is harmless; a different one under the same name is not
    register_model("test-pointwise")(Pointwise)
    with pytest.raises(ValueError, match="already registered"):
        register_model("test-pointwise")(lambda cfg: None)
    with pytest.raises(UnknownModelError, match="unknown model 'nope'.*unet"):
        build_model(ModelConfig(name="nope"))


@pytest.mark.parametrize("dims", [2, 3])
def test_batchnorm_folding_in_eval_matches_unfolded(dims):
    """Eval mode folds BatchNorm into the conv; the result equals conv -> BN -> ReLU."""
    model = build_model(_tiny(spatial_dims=dims, depth=2))
    x = torch.randn(2, 1, *((12,) * dims))
    model.train()
    for _ in range(3):  # non-trivial running statistics
        model(x + torch.randn_like(x))
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    model.eval()
    block = model.inc[0]
    with torch.no_grad():
        unfolded = block[2](block[1](block[0](x)))
        torch.testing.assert_close(block(x), unfolded, atol=1e-5, rtol=1e-5)
        folded_out = model(x).logits
    # the whole network agrees with a copy whose blocks run the unfolded path
    import copy

    ref = copy.deepcopy(model)
    for m in ref.modules():
        if type(m).__name__ == "ConvNormAct":
            m.forward = (lambda mod: (lambda t: mod[2](mod[1](mod[0](t)))))(m)
    with torch.no_grad():
        torch.testing.assert_close(folded_out, ref(x).logits, atol=1e-4, rtol=1e-4)
