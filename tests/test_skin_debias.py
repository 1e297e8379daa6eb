"""Debiasing building blocks: gradient reversal, class weights, LNTL / TABE / CLGR losses."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from napari_labelfx.models.debias import (
    CLGR,
    LNTL,
    TABE,
    BiasHead,
    GradientReversal,
    MainHead,
    confusion_loss,
    debias_step,
    inverse_frequency_weights,
    make_scheme,
    negative_entropy,
)

torch.set_num_threads(1)


def test_gradient_reversal_flips_and_scales_the_gradient():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    w = torch.tensor([0.5, 2.0, -1.0])
    grl = GradientReversal(0.1)
    y = grl(x)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    torch.testing.assert_close(x.grad, -0.1 * w)
    x.grad = None
    (GradientReversal(2.0)(x) * w).sum().backward()
    torch.testing.assert_close(x.grad, -2.0 * w)


def test_inverse_frequency_weights():
    w = inverse_frequency_weights([0, 0, 0, 1, -1], n_types=3)
    torch.testing.assert_close(w, torch.tensor([4 / 6, 2.0, 0.0]))
    torch.testing.assert_close(inverse_frequency_weights(torch.tensor([0, 1, 2]), 3), torch.ones(3))
    with pytest.raises(ValueError, match="0..2"):
        inverse_frequency_weights([0, 5], 3)


def test_lntl_loss_on_a_hand_case():
    head = BiasHead(2, 2)
    with torch.no_grad():
        head.fc.weight.copy_(torch.eye(2))
        head.fc.bias.zero_()
    feats = torch.tensor([[1.0, -1.0]], requires_grad=True)  # bias logits (1, -1)
    main_logits = torch.tensor([[0.5]])
    losses = LNTL(head)(feats, main_logits, torch.tensor([1.0]), torch.tensor([1]))
    p1 = math.e / (math.e + 1 / math.e)  # softmax of (1, -1): 0.8808
    p2 = 1 - p1
    bce = math.log(1 + math.exp(-0.5))  # 0.4741
    negent = p1 * math.log(p1) + p2 * math.log(p2)  # -0.3654
    ce = -math.log(p2)  # 2.1269
    assert losses.main.item() == pytest.approx(0.474077, abs=1e-5)
    assert losses.debias.item() == pytest.approx(0.01 * -0.365334, abs=1e-6)
    assert losses.bias.item() == pytest.approx(2.126928, abs=1e-5)
    assert losses.total.item() == pytest.approx(bce + 0.01 * negent + ce, abs=1e-6)
    losses.total.backward()
    # the bias head learns from its CE only (the entropy term uses detached head weights) ...
    logits = head(feats.detach())
    expected_w = torch.autograd.grad(nn.functional.cross_entropy(logits, torch.tensor([1])), head.fc.weight)[0]
    torch.testing.assert_close(head.fc.weight.grad, expected_w)
    # ... and the features get +0.01 d(negent) and the reversed, 0.1-scaled CE gradient
    f = feats.detach().requires_grad_(True)
    g_ent = torch.autograd.grad(negative_entropy(f @ torch.eye(2)), f)[0]
    g_ce = torch.autograd.grad(nn.functional.cross_entropy(f @ torch.eye(2), torch.tensor([1])), f)[0]
    torch.testing.assert_close(feats.grad, 0.01 * g_ent - 0.1 * g_ce)


def _biased_setup(seed: int = 0):
    """Inputs whose skin type (3 classes) is linearly visible; an encoder and a trained bias head."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(60) % 3
    x = torch.randn(60, 4, generator=g) * 0.3
    x[:, 0] += labels.float() * 2.0
    torch.manual_seed(seed)
    encoder = nn.Linear(4, 8)
    head = BiasHead(8, 3)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(head(encoder(x).detach()), labels).backward()
        opt.step()
    head.zero_grad(set_to_none=True)
    return x, labels, encoder, head


def mean_entropy(logits: torch.Tensor) -> float:
    return float(-negative_entropy(logits.detach()))


def test_tabe_confusion_pushes_bias_head_towards_uniform():
    x, labels, encoder, head = _biased_setup()
    scheme = TABE(head, confusion_weight=1.0)
    before = mean_entropy(head(encoder(x)))
    assert before < 0.6 * math.log(3)  # the head does see skin type
    opt = torch.optim.Adam(encoder.parameters(), lr=0.05)
    for _ in range(40):
        opt.zero_grad()
        losses = scheme(encoder(x), torch.zeros(60, 1), torch.zeros(60), labels)
        losses.debias.backward()
        assert head.fc.weight.grad is None  # confusion never trains the bias head
        opt.step()
    after = mean_entropy(head(encoder(x)))
    assert after > 0.95 * math.log(3) > before
    assert confusion_loss(torch.zeros(5, 3)).item() == pytest.approx(math.log(3))


def test_tabe_bias_step_is_detached_and_clgr_reverses_it():
    x, labels, encoder, head = _biased_setup()
    weights = inverse_frequency_weights(labels, 3)
    feats = encoder(x)
    TABE(head, class_weights=weights)(feats, torch.zeros(60, 1), torch.zeros(60), labels).bias.backward()
    assert encoder.weight.grad is None and head.fc.weight.grad is not None
    head.zero_grad()
    plain = torch.autograd.grad(nn.functional.cross_entropy(head(encoder(x)), labels), encoder.weight)[0]
    losses = CLGR(head, grl_lambda=0.1)(encoder(x), torch.zeros(60, 1), torch.zeros(60), labels)
    losses.bias.backward()
    torch.testing.assert_close(encoder.weight.grad, -0.1 * plain)


def test_unknown_skin_types_are_ignored():
    head = BiasHead(3, 6)
    feats = torch.randn(4, 3)
    losses = make_scheme("lntl", head)(feats, torch.zeros(4), torch.ones(4), torch.full((4,), -1))
    assert losses.bias.item() == 0.0
    part = make_scheme("tabe", head)(feats, torch.zeros(4), torch.ones(4), torch.tensor([2, -1, -1, -1]))
    expected = nn.functional.cross_entropy(head(feats[:1]), torch.tensor([2]))
    assert part.bias.item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="unknown debiasing"):
        make_scheme("nope", head)


def test_debias_step_with_separate_confusion_optimizer():
    x, labels, encoder, head = _biased_setup()
    main_head = MainHead(8, 1)
    targets = (labels == 1).float()
    scheme = TABE(head)
    feats = encoder(x)
    losses = scheme(feats, main_head(feats), targets, labels)
    expected_conf = torch.autograd.grad(losses.debias, encoder.weight, retain_graph=True)[0]
    w0 = encoder.weight.detach().clone()
    head_w0 = head.fc.weight.detach().clone()
    main_opt = torch.optim.SGD(list(encoder.parameters()) + list(main_head.parameters()), lr=0.0)
    bias_opt = torch.optim.SGD(head.parameters(), lr=0.1)
    conf_opt = torch.optim.SGD(encoder.parameters(), lr=TABE.CONFUSION_LR)
    debias_step(losses, main_opt, bias_opt, conf_opt)
    # the main step has lr 0 here, so the encoder moved by the confusion step alone
    torch.testing.assert_close(encoder.weight.detach(), w0 - TABE.CONFUSION_LR * expected_conf)
    assert not torch.equal(head.fc.weight.detach(), head_w0)
    assert set(losses.as_dict()) == {"main", "debias", "bias"}
