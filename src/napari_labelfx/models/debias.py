"""Skin-tone debiasing for image-level classifiers: gradient reversal, bias head, LNTL / TABE / CLGR.

Following "Detecting Melanoma Fairly" (Bevan & Atapour-Abarghouei), a classifier's pooled encoder
feature feeds two heads: the **main head** (dropout 0.5, linear, BCE on the diagnosis) and the
**bias head** (linear, softmax over K skin types, cross-entropy weighted by inverse class
frequency). The schemes differ in how the bias head's signal reaches the encoder:

``LNTL`` (Learning Not To Learn)
    ``main + 0.01 * negative entropy(bias head)`` trains the encoder to make the bias head uncertain;
    the bias head learns skin type by CE through a **gradient reversal** layer, so the encoder at the
    same time receives ``-0.1 x`` that gradient (it un-learns skin type).
``TABE`` (Turning A Blind Eye)
    ``main + 0.03 * CE(uniform 1/K, bias head)`` (the "confusion" loss) trains the encoder towards a
    uniform bias prediction; the bias head learns skin type by CE on **detached** features.
``CLGR`` (TABE with gradient reversal)
    as TABE, but the bias head's CE passes through gradient reversal instead of a detach.

Every scheme returns :class:`DebiasLosses` whose terms touch disjoint parameter sets by
construction: ``debias`` (entropy / confusion) reaches only the encoder - it is computed with the
bias head's weights detached - and ``bias`` reaches only the bias head, plus the encoder through
the reversal for LNTL and CLGR. So ``losses.total.backward()`` with one optimizer is correct, and
:func:`debias_step` runs the source's separate optimizers (main, confusion at lr 3e-3, bias).
Skin-type labels are class indices 0..K-1 (type I = 0); -1 marks an unknown type (ignored).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Skin-type label of images whose type is unknown (ignored by the bias losses).
UNKNOWN_TYPE = -1


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lambd: float) -> torch.Tensor:
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lambd * grad, None


def grad_reverse(x: torch.Tensor, lambd: float = 0.1) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``-lambd`` in the backward pass."""
    return _ReverseGrad.apply(x, float(lambd))


class GradientReversal(nn.Module):
    """Gradient reversal layer: identity forward, ``x (-lambd)`` backward (``lambd`` = 0.1)."""

    def __init__(self, lambd: float = 0.1) -> None:
        super().__init__()
        if lambd < 0:
            raise ValueError(f"gradient reversal lambda must be >= 0, got {lambd}")
        self.lambd = float(lambd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.lambd)

    def extra_repr(self) -> str:
        return f"lambd={self.lambd}"


class MainHead(nn.Module):
    """Main classification head on the pooled feature: dropout (0.5) then linear -> logits."""

    def __init__(self, in_features: int, n_outputs: int = 1, dropout: float = 0.5) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, n_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(features))


class BiasHead(nn.Module):
    """Bias head: linear map of the pooled feature to K skin-type logits (softmax in the loss)."""

    def __init__(self, in_features: int, n_types: int = 6) -> None:
        super().__init__()
        if n_types < 2:
            raise ValueError(f"the bias head needs at least 2 skin types, got {n_types}")
        self.fc = nn.Linear(in_features, n_types)

    @property
    def n_types(self) -> int:
        return int(self.fc.out_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def frozen(self, features: torch.Tensor) -> torch.Tensor:
        """Logits with the head's weights detached: gradients flow to ``features`` only."""
        return F.linear(features, self.fc.weight.detach(), self.fc.bias.detach())


def inverse_frequency_weights(labels: Any, n_types: int, ignore_index: int = UNKNOWN_TYPE) -> torch.Tensor:
    """Class weights ``N / (K_present * n_k)`` for the bias CE (1 for every class when balanced).

    Parameters
    ----------
    labels : skin-type indices of the training set (array or tensor); ``ignore_index`` is skipped.
    n_types : number of skin types K.
    ignore_index : label of unknown types.

    Returns
    -------
    float32 (K,): classes absent from ``labels`` get weight 0 (they cannot occur in training).
    """
    lab = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1).astype(np.int64)
    lab = lab[lab != ignore_index]
    if lab.size == 0:
        raise ValueError("no known skin-type label to compute class weights from")
    if lab.min() < 0 or lab.max() >= n_types:
        raise ValueError(f"skin-type labels must be in 0..{n_types - 1} (or {ignore_index}), got {lab.min()}..{lab.max()}")
    counts = np.bincount(lab, minlength=n_types).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_types)
    w[present] = lab.size / (present.sum() * counts[present])
    return torch.as_tensor(w, dtype=torch.float32)


def negative_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Batch mean of ``sum_k p_k log p_k`` of the softmax (<= 0; -log K when uniform)."""
    logp = F.log_softmax(logits, dim=1)
    return (logp.exp() * logp).sum(dim=1).mean()


def confusion_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the softmax against the uniform target 1/K (minimal, log K, when uniform)."""
    return -F.log_softmax(logits, dim=1).mean(dim=1).mean()


def bce_main_loss(main_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits; ``targets`` is reshaped to the logits' shape."""
    return F.binary_cross_entropy_with_logits(main_logits, targets.to(main_logits.dtype).reshape(main_logits.shape))


@dataclass
class DebiasLosses:
    """Loss terms of one batch.

    Attributes
    ----------
    main : task loss (encoder + main head).
    debias : weighted entropy (LNTL) or confusion (TABE, CLGR) term; reaches the encoder only.
    bias : skin-type CE of the bias head (plus the reversed gradient into the encoder for LNTL, CLGR).
    bias_logits : the bias head's logits (detached), for accuracy logging.
    """

    main: torch.Tensor
    debias: torch.Tensor
    bias: torch.Tensor
    bias_logits: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        """Sum of the three terms, for a single backward pass."""
        return self.main + self.debias + self.bias

    def as_dict(self) -> dict[str, float]:
        """Plain floats for progress messages."""
        return {"main": float(self.main.detach()), "debias": float(self.debias.detach()), "bias": float(self.bias.detach())}


class _Scheme:
    """Shared settings of the three schemes."""

    def __init__(
        self,
        bias_head: BiasHead,
        class_weights: torch.Tensor | Sequence[float] | None = None,
        main_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = bce_main_loss,
    ) -> None:
        self.bias_head = bias_head
        self.class_weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        if self.class_weights is not None and self.class_weights.shape != (bias_head.n_types,):
            raise ValueError(f"class_weights must have {bias_head.n_types} entries, got {tuple(self.class_weights.shape)}")
        self.main_loss = main_loss

    def _bias_ce(self, logits: torch.Tensor, bias_labels: torch.Tensor) -> torch.Tensor:
        labels = bias_labels.to(logits.device).long().reshape(-1)
        if not bool((labels != UNKNOWN_TYPE).any()):
            return logits.sum() * 0.0  # no known type in this batch: keep the graph, add nothing
        w = None if self.class_weights is None else self.class_weights.to(logits.device, logits.dtype)
        return F.cross_entropy(logits, labels, weight=w, ignore_index=UNKNOWN_TYPE)


class LNTL(_Scheme):
    """Learning Not To Learn: ``main + w_ent * negent(bias)``; bias CE through gradient reversal.

    Parameters
    ----------
    bias_head : the model's :class:`BiasHead`.
    entropy_weight : weight of the negative entropy (0.01).
    grl_lambda : gradient reversal factor (0.1).
    class_weights : (K,) bias CE weights, e.g. :func:`inverse_frequency_weights`.
    main_loss : ``(main_logits, targets) -> loss`` (BCE with logits by default).
    """

    def __init__(
        self,
        bias_head: BiasHead,
        entropy_weight: float = 0.01,
        grl_lambda: float = 0.1,
        class_weights: torch.Tensor | Sequence[float] | None = None,
        main_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = bce_main_loss,
    ) -> None:
        super().__init__(bias_head, class_weights, main_loss)
        self.entropy_weight = float(entropy_weight)
        self.grl_lambda = float(grl_lambda)

    def __call__(
        self, features: torch.Tensor, main_logits: torch.Tensor, targets: torch.Tensor, bias_labels: torch.Tensor
    ) -> DebiasLosses:
        main = self.main_loss(main_logits, targets)
        debias = self.entropy_weight * negative_entropy(self.bias_head.frozen(features))
        logits = self.bias_head(grad_reverse(features, self.grl_lambda))
        return DebiasLosses(main, debias, self._bias_ce(logits, bias_labels), logits.detach())


class TABE(_Scheme):
    """Turning A Blind Eye: ``main + w_conf * CE(uniform, bias)``; bias CE on detached features.

    Parameters
    ----------
    bias_head : the model's :class:`BiasHead`.
    confusion_weight : weight of the confusion loss (0.03).
    class_weights, main_loss : as for :class:`LNTL`.
    """

    #: The source's learning rate of the separate confusion optimiser (see :func:`debias_step`).
    CONFUSION_LR = 3e-3

    def __init__(
        self,
        bias_head: BiasHead,
        confusion_weight: float = 0.03,
        class_weights: torch.Tensor | Sequence[float] | None = None,
        main_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = bce_main_loss,
    ) -> None:
        super().__init__(bias_head, class_weights, main_loss)
        self.confusion_weight = float(confusion_weight)

    def _bias_input(self, features: torch.Tensor) -> torch.Tensor:
        return features.detach()

    def __call__(
        self, features: torch.Tensor, main_logits: torch.Tensor, targets: torch.Tensor, bias_labels: torch.Tensor
    ) -> DebiasLosses:
        main = self.main_loss(main_logits, targets)
        debias = self.confusion_weight * confusion_loss(self.bias_head.frozen(features))
        logits = self.bias_head(self._bias_input(features))
        return DebiasLosses(main, debias, self._bias_ce(logits, bias_labels), logits.detach())


class CLGR(TABE):
    """TABE whose bias step passes through gradient reversal (``grl_lambda`` 0.1) instead of a detach."""

    def __init__(
        self,
        bias_head: BiasHead,
        confusion_weight: float = 0.03,
        grl_lambda: float = 0.1,
        class_weights: torch.Tensor | Sequence[float] | None = None,
        main_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = bce_main_loss,
    ) -> None:
        super().__init__(bias_head, confusion_weight, class_weights, main_loss)
        self.grl_lambda = float(grl_lambda)

    def _bias_input(self, features: torch.Tensor) -> torch.Tensor:
        return grad_reverse(features, self.grl_lambda)


def make_scheme(name: str, bias_head: BiasHead, **kwargs: Any) -> _Scheme:
    """Scheme by name: ``"lntl"``, ``"tabe"`` or ``"clgr"`` (keyword settings as in each class)."""
    table = {"lntl": LNTL, "tabe": TABE, "clgr": CLGR}
    key = str(name).strip().lower()
    if key not in table:
        raise ValueError(f"unknown debiasing scheme {name!r}; choose one of {sorted(table)}")
    return table[key](bias_head, **kwargs)


def _params(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in opt.param_groups for p in group["params"]]


def debias_step(
    losses: DebiasLosses,
    main_optimizer: torch.optim.Optimizer,
    bias_optimizer: torch.optim.Optimizer,
    confusion_optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """One update from one forward pass, with the source's separate optimisers.

    Parameters
    ----------
    losses : terms of the batch.
    main_optimizer : encoder + main head. Without ``confusion_optimizer`` it also applies the
        ``debias`` gradient to the encoder (one combined step).
    bias_optimizer : bias head.
    confusion_optimizer : encoder only (TABE/CLGR: SGD at lr 3e-3 in the source); it receives only
        the ``debias`` gradient and steps after the main optimiser.
    """
    opts = [main_optimizer, bias_optimizer] + ([confusion_optimizer] if confusion_optimizer else [])
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    if confusion_optimizer is None:
        losses.total.backward()
        main_optimizer.step()
        bias_optimizer.step()
        return
    conf_params = [p for p in _params(confusion_optimizer) if p.requires_grad]
    # the confusion gradient is taken before any step changes the encoder in place
    conf_grads = torch.autograd.grad(losses.debias, conf_params, retain_graph=True, allow_unused=True)
    (losses.main + losses.bias).backward()
    main_optimizer.step()
    bias_optimizer.step()
    for p, g in zip(conf_params, conf_grads):
        p.grad = None if g is None else g.detach()
    confusion_optimizer.step()
