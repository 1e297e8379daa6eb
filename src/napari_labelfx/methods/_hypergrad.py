"""Closed-form last-layer hypergradients for per-instance trust weights (DII), and Adam on the weights.

DII (METHODS.md section 2) weighs the loss of weak instance k by gamma_k and moves gamma_k along
``-dL_S/dgamma_k ~ g_S . g_k`` (identity-Hessian approximation), where g_S is the gradient of the
strong loss and g_k the gradient of instance k's loss, both taken with respect to the FINAL
classifier only. For a 1x1-conv classifier ``z_p = W h_p + b`` and a pixel-mean cross-entropy the
gradient of the loss over a pixel set P is ``G_W = (1/|P|) sum_p r_p h_p^T`` and
``G_b = (1/|P|) sum_p r_p`` with ``r_p = softmax(z_p) - onehot(y_p)``. Hence

    g_S . g_k = <G_W^S, G_W^k> + <G_b^S, G_b^k> = (1/|P_k|) sum_{p in P_k} r_p^T (G_W^S h_p + G_b^S),

one scalar per pixel scattered into its instance: no per-instance backward pass and no copies of
the parameters are needed, whatever the number of instances.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..annotations.kinds import IGNORE_INDEX

__all__ = ["GammaAdam", "LastLayerGrad", "instance_alignment", "last_layer_grad", "residuals"]


@dataclass
class LastLayerGrad:
    """Sums of the classifier gradient over pixels: ``grad_w = sum_w / n``, ``grad_b = sum_b / n``.

    Kept as sums so gradients over several crops combine exactly into the pixel-mean over all of them.
    """

    sum_w: torch.Tensor  # (K, F)
    sum_b: torch.Tensor  # (K,)
    n: int = 0

    @property
    def grad_w(self) -> torch.Tensor:
        """dL/dW of the pixel-mean cross-entropy, (K, F)."""
        return self.sum_w / max(self.n, 1)

    @property
    def grad_b(self) -> torch.Tensor:
        """dL/db of the pixel-mean cross-entropy, (K,)."""
        return self.sum_b / max(self.n, 1)

    def add(self, other: LastLayerGrad) -> LastLayerGrad:
        """Combine the sums of two pixel sets (in place; returns self)."""
        self.sum_w = self.sum_w + other.sum_w
        self.sum_b = self.sum_b + other.sum_b
        self.n += other.n
        return self


def _flat(features: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if logits.ndim < 3 or features.shape[0] != logits.shape[0] or features.shape[2:] != logits.shape[2:]:
        raise ValueError(
            f"features {tuple(features.shape)} and logits {tuple(logits.shape)} must be (B, F|K, *spatial) "
            "with the same batch and spatial sizes"
        )
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    k, f = logits.shape[1], features.shape[1]
    h = features.detach().float().movedim(1, -1).reshape(-1, f)
    z = logits.detach().float().movedim(1, -1).reshape(-1, k)
    return h, z, target.reshape(-1).long()


def residuals(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``softmax(z) - onehot(y)`` per pixel, flattened to (N, K); zero rows at unknown pixels."""
    k = logits.shape[1]
    z = logits.detach().float().movedim(1, -1).reshape(-1, k)
    y = target.reshape(-1).long()
    known = y != ignore_index
    r = torch.softmax(z, dim=1) - F.one_hot(torch.where(known, y, torch.zeros_like(y)), k).float()
    return r * known.unsqueeze(1).float()


def last_layer_grad(
    features: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> LastLayerGrad:
    """Gradient sums of the pixel-mean cross-entropy w.r.t. a 1x1-conv classifier (W, b).

    Parameters
    ----------
    features : (B, F, *spatial) classifier inputs h.
    logits : (B, K, *spatial) classifier outputs z = W h + b.
    target : (B, *spatial) class indices, ``ignore_index`` = not part of the loss.

    Returns
    -------
    LastLayerGrad whose ``grad_w``/``grad_b`` equal autograd's gradient of ``cross_entropy(mean over
    known pixels)`` w.r.t. the classifier weight (K, F) and bias (K,).
    """
    h, _, y = _flat(features, logits, target)
    r = residuals(logits, target, ignore_index)
    return LastLayerGrad(r.t() @ h, r.sum(0), int((y != ignore_index).sum()))


def instance_alignment(
    features: torch.Tensor,
    logits: torch.Tensor,
    target: torch.Tensor,
    groups: torch.Tensor,
    strong: LastLayerGrad,
    num_groups: int,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-instance sums of ``r_p^T (G_W^S h_p + G_b^S)`` and pixel counts.

    ``sums[k] / counts[k]`` is ``g_S . g_k``, the dot product of the strong gradient with the
    gradient of instance k's pixel-mean cross-entropy (both w.r.t. the classifier only).

    Parameters
    ----------
    features, logits, target : as in :func:`last_layer_grad`.
    groups : (B, *spatial) int64 instance index in [0, num_groups), -1 = not a weak pixel.
    strong : the strong-set gradient.
    num_groups : number of instances.

    Returns
    -------
    (sums, counts) float64 tensors of shape (num_groups,) on the features' device.
    """
    h, _, y = _flat(features, logits, target)
    if groups.shape != target.shape:
        raise ValueError(f"groups shape {tuple(groups.shape)} does not match target {tuple(target.shape)}")
    r = residuals(logits, target, ignore_index)
    g = groups.reshape(-1).long()
    use = (g >= 0) & (y != ignore_index)
    # (G_W h_p + G_b) for every pixel, then its dot product with r_p
    s = (r * (h @ strong.grad_w.t().to(h) + strong.grad_b.to(h))).sum(1)
    sums = torch.zeros(num_groups, dtype=torch.float64, device=h.device)
    counts = torch.zeros(num_groups, dtype=torch.float64, device=h.device)
    idx = g[use]
    sums.index_add_(0, idx, s[use].double())
    counts.index_add_(0, idx, torch.ones_like(idx, dtype=torch.float64))
    return sums, counts


@dataclass
class GammaAdam:
    """Adam on a vector of weights in [0, 1]; only the entries given a gradient move.

    Each entry keeps its own step count, so an instance left out of a sampled hypergradient step
    neither moves nor ages its bias correction.
    """

    size: int
    lr: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    init: float = 0.5
    value: np.ndarray = field(init=False)
    m: np.ndarray = field(init=False)
    v: np.ndarray = field(init=False)
    t: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.init <= 1.0:
            raise ValueError(f"gamma init must be in [0, 1], got {self.init}")
        if self.lr <= 0:
            raise ValueError(f"gamma learning rate (beta) must be > 0, got {self.lr}")
        self.value = np.full(self.size, float(self.init))
        self.m = np.zeros(self.size)
        self.v = np.zeros(self.size)
        self.t = np.zeros(self.size, dtype=np.int64)

    def step(self, index: np.ndarray, grad: np.ndarray) -> None:
        """One Adam step on ``value[index]`` with gradient ``grad`` (descent), then clip to [0, 1]."""
        index = np.asarray(index, dtype=np.int64)
        grad = np.asarray(grad, dtype=np.float64)
        if index.shape != grad.shape:
            raise ValueError(f"index {index.shape} and grad {grad.shape} differ in shape")
        b1, b2 = self.betas
        self.t[index] += 1
        self.m[index] = b1 * self.m[index] + (1 - b1) * grad
        self.v[index] = b2 * self.v[index] + (1 - b2) * grad**2
        m_hat = self.m[index] / (1 - b1 ** self.t[index])
        v_hat = self.v[index] / (1 - b2 ** self.t[index])
        self.value[index] = np.clip(self.value[index] - self.lr * m_hat / (np.sqrt(v_hat) + self.eps), 0.0, 1.0)
