"""AdamW and the learning-rate schedule used by the trainer.

AdamW is written out here (a few lines on torch's ``_foreach`` kernels) instead of taken from
``torch.optim`` because constructing any ``torch.optim`` optimizer imports ``torch._dynamo``, which
costs 2-4 s in every fresh training process; that delay sits right between the person clicking
Train and the first live prediction. The update is the standard one (Loshchilov & Hutter,
"Decoupled Weight Decay Regularization"): ``p <- p (1 - lr wd)``, then the bias-corrected Adam
step. It duck-types what ``torch.amp.GradScaler`` needs (``param_groups``, ``step``).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch


def lr_factor(iteration: int, total: int, warmup: int, floor: float = 0.01) -> float:
    """Learning-rate multiplier: linear warm-up over ``warmup`` steps, then cosine decay to ``floor``."""
    if warmup > 0 and iteration < warmup:
        return (iteration + 1) / warmup
    t = (iteration - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, t))))


class AdamW:
    """AdamW with decoupled weight decay over parameter groups.

    Parameters
    ----------
    params : parameters or parameter-group dicts (``{"params": [...], "lr": ..., "weight_decay": ...}``).
    lr, betas, eps, weight_decay : defaults for groups that do not set them.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        params = list(params)
        if params and not isinstance(params[0], dict):
            params = [{"params": params}]
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        self.param_groups: list[dict[str, Any]] = []
        seen: set[int] = set()
        for group in params:
            g = {**defaults, **group, "params": list(group["params"])}
            for p in g["params"]:
                if id(p) in seen:
                    raise ValueError("AdamW: a parameter appears in more than one group")
                seen.add(id(p))
            g.setdefault("initial_lr", g["lr"])
            self.param_groups.append(g)
        self.state: dict[torch.Tensor, dict[str, Any]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        for g in self.param_groups:
            params = [p for p in g["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            beta1, beta2 = g["betas"]
            m, v, steps = [], [], []
            for p in params:
                st = self.state.get(p)
                if st is None:
                    st = self.state[p] = {
                        "step": 0,
                        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                    }
                st["step"] += 1
                m.append(st["exp_avg"])
                v.append(st["exp_avg_sq"])
                steps.append(st["step"])
            lr, wd, eps = g["lr"], g["weight_decay"], g["eps"]
            if wd:
                torch._foreach_mul_(params, 1 - lr * wd)
            torch._foreach_lerp_(m, grads, 1 - beta1)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, grads, grads, 1 - beta2)
            denom = torch._foreach_sqrt(v)
            torch._foreach_div_(denom, [math.sqrt(1 - beta2**s) for s in steps])
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(params, m, denom, [-lr / (1 - beta1**s) for s in steps])

    def state_dict(self) -> dict[str, Any]:
        """Tensors and builtins only (loadable with ``torch.load(weights_only=True)``)."""
        index = {}
        groups = []
        for g in self.param_groups:
            ids = []
            for p in g["params"]:
                index[id(p)] = len(index)
                ids.append(index[id(p)])
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "betas": list(g["betas"]), "params": ids})
        state = {}
        for g in self.param_groups:
            for p in g["params"]:
                if p in self.state:
                    st = self.state[p]
                    state[index[id(p)]] = {"step": int(st["step"]), "exp_avg": st["exp_avg"],
                                           "exp_avg_sq": st["exp_avg_sq"]}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; raises ValueError when the groups do not match."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
            len(a["params"]) != len(b["params"]) for a, b in zip(groups, self.param_groups)
        ):
            raise ValueError("the saved optimizer state has different parameter groups")
        params = [p for g in self.param_groups for p in g["params"]]
        saved = state_dict["state"]
        for i, st in saved.items():
            p = params[int(i)]
            if st["exp_avg"].shape != p.shape:
                raise ValueError(f"saved optimizer state {i} has shape {tuple(st['exp_avg'].shape)}, parameter {tuple(p.shape)}")
        self.state = {}
        for i, st in saved.items():
            p = params[int(i)]
            self.state[p] = {"step": int(st["step"]), "exp_avg": st["exp_avg"].to(p.device, p.dtype).clone(),
                             "exp_avg_sq": st["exp_avg_sq"].to(p.device, p.dtype).clone()}
        for g, s in zip(self.param_groups, groups):
            for k, val in s.items():
                if k != "params":
                    g[k] = tuple(val) if k == "betas" else val
