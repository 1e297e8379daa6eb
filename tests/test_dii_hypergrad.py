"""DII: closed-form last-layer hypergradient against autograd, and Adam on the trust weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_labelfx.annotations.kinds import IGNORE_INDEX
from napari_labelfx.methods import _hypergrad
from napari_labelfx.models import build_model


def _tiny_net(k: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_model({"spatial_dims": 2, "in_channels": 2, "num_classes": k, "depth": 1, "width": 4,
                       "norm": "none"})
    return net.eval()


def _head_grad(net: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    gw, gb = torch.autograd.grad(loss, [net.head.weight, net.head.bias], retain_graph=True)
    return torch.cat([gw.flatten(), gb.flatten()]).double()


def test_last_layer_grad_and_instance_dots_equal_autograd():
    torch.set_num_threads(1)
    k = 3
    net = _tiny_net(k)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 12, 12, generator=gen)
    out = net(x)
    strong_t = torch.randint(0, k, (2, 12, 12), generator=gen)
    strong_t[0, :3] = IGNORE_INDEX  # unknown pixels must not count
    g_s = _hypergrad.last_layer_grad(out.features, out.logits, strong_t)
    loss_s = F.cross_entropy(out.logits, strong_t, ignore_index=IGNORE_INDEX)
    auto_s = _head_grad(net, loss_s)
    closed_s = torch.cat([g_s.grad_w.flatten(), g_s.grad_b.flatten()]).double()
    assert torch.allclose(closed_s, auto_s, atol=1e-6)

    # three weak instances with their own (noisy) labels on the same images
    weak_t = torch.randint(0, k, (2, 12, 12), generator=gen)
    groups = torch.full((2, 12, 12), -1, dtype=torch.int64)
    groups[0, 2:6, 2:8] = 0
    groups[1, 5:11, 1:4] = 1
    groups[1, 0:2, :] = 2
    weak_t[1, 0, :] = IGNORE_INDEX  # part of instance 2 unknown: excluded from its mean
    sums, counts = _hypergrad.instance_alignment(out.features, out.logits, weak_t, groups, g_s, 3)
    for gidx in range(3):
        sel = (groups == gidx) & (weak_t != IGNORE_INDEX)
        assert counts[gidx].item() == sel.sum().item()
        tk = torch.where(sel, weak_t, torch.full_like(weak_t, IGNORE_INDEX))
        auto_k = _head_grad(net, F.cross_entropy(out.logits, tk, ignore_index=IGNORE_INDEX))
        expected = torch.dot(auto_s, auto_k).item()
        assert sums[gidx].item() / counts[gidx].item() == pytest.approx(expected, rel=1e-5, abs=1e-9)


def test_gradients_from_several_crops_combine_to_the_pixel_mean():
    torch.set_num_threads(1)
    net = _tiny_net(2)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 8, 8, generator=gen)
    t = torch.randint(0, 2, (2, 8, 8), generator=gen)
    out = net(x)
    whole = _hypergrad.last_layer_grad(out.features, out.logits, t)
    parts = _hypergrad.last_layer_grad(out.features[:1], out.logits[:1], t[:1]).add(
        _hypergrad.last_layer_grad(out.features[1:], out.logits[1:], t[1:]))
    assert parts.n == whole.n == 128
    assert torch.allclose(parts.grad_w, whole.grad_w, atol=1e-6)
    assert torch.allclose(parts.grad_b, whole.grad_b, atol=1e-6)


def test_shape_errors_are_clear():
    net = _tiny_net(2)
    out = net(torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="target shape"):
        _hypergrad.last_layer_grad(out.features, out.logits, torch.zeros(1, 4, 4, dtype=torch.long))


def test_gamma_adam_moves_only_given_entries_and_clips():
    opt = _hypergrad.GammaAdam(3, lr=0.1, init=0.5)
    opt.step(np.array([0, 1]), np.array([-2.0, 3.0]))  # descent: negative gradient -> weight grows
    assert opt.value[0] == pytest.approx(0.6, abs=1e-6)
    assert opt.value[1] == pytest.approx(0.4, abs=1e-6)
    assert opt.value[2] == 0.5 and opt.t[2] == 0
    for _ in range(20):
        opt.step(np.array([0, 1]), np.array([-1.0, 1.0]))
    assert opt.value[0] == 1.0 and opt.value[1] == 0.0  # saturate and stay in [0, 1]
    with pytest.raises(ValueError):
        _hypergrad.GammaAdam(2, init=1.5)
