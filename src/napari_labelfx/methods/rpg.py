"""``rpg``: reference-guided pseudo-labels (Seibold et al., AAAI 2022; METHODS.md section 4).

Every step the network sees, in one forward pass (one BN mode for all):

* the engine's labelled batch,
* a class-covering reference pool of ``p`` annotated patches (drawn here from ``ctx.items``),
* ``unlabelled_batch`` patches of unlabelled pixels (items without a target, and the unknown pixels
  of partly annotated items: in the GUI, the unpainted part of the image), with a weak view (flips).

Each unlabelled pixel takes the label of its nearest pool pixel in feature space (``out.features``,
the per-pixel input of the 1x1 head), weighted by the entropy weight W of its k nearest references;
the search runs without gradients on an s x s grid, chunked (see ``methods/_reference.py``).
Loss = CE + Dice on the labelled and pool patches + ``rpg_weight`` x W-weighted CE on the
unlabelled pixels (BCE per class and a multi-hot nearest label when multi-label). The unlabelled
term ramps up linearly over the first ``rampup`` fraction of training, while the features are
still random [A].

The current unlabelled patch's pseudo-label and W are published as RESULT layers
"pseudo-label" and "pseudo-label weight" every ``result_every`` iterations.

The drawing, the weak view and the supervised part are shared with ``fixmatch`` and ``rpg+``
(:mod:`._unlabelled`); this module holds the reference term (:class:`ReferencePseudoLabels`) and
``rpg`` = that term alone.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.results import MethodResult, ResultLayer
from ._reference import DEFAULT_CHUNK_ELEMENTS, pseudo_label_grid
from ._unlabelled import (  # noqa: F401  PatchDrawer, stack, ... are imported from here by older code
    MAX_UNKNOWN_POOL,
    UNLABELLED_PARAMS,
    PatchDrawer,
    UnlabelledBatchMethod,
    UnlabelledTerm,
    WeakStep,
    stack,
    supervised_terms,
    unknown_of,
    weak_flip,
    weighted_pseudo_loss,
)
from .base import MethodContext, Param, ParamSpec
from .registry import register_method

#: Parameters of the reference pseudo-label term (``rpg``, ``rpg+``).
REFERENCE_PARAMS = ParamSpec((
    Param("pool", "int", 3, "annotated patches in the reference pool (p)", min=1, important=True),
    Param("grid", "int", 64, "search grid edge s (features and labels resized to s x s)", min=1, important=True),
    Param("k", "count_or_fraction", 7000, "nearest references for the entropy weight W: a count, or a "
          "fraction of the pool", important=True),
    Param("rpg_weight", "float", 1.0, "weight of the pseudo-label loss", min=0),
    Param("chunk_elements", "int", DEFAULT_CHUNK_ELEMENTS, "similarity elements per search chunk (memory bound; "
          "2^22 = 16 MiB)", min=1),
    Param("result_every", "int", 50, "iterations between pseudo-label result layers (0 = never)", min=0),
))


def display_labels(labels: np.ndarray, multilabel: bool) -> np.ndarray:
    """Labels for a napari Labels layer: class indices; multi-label: 1 + highest present class, 0 none."""
    if not multilabel:
        return labels.astype(np.int32)
    out = np.zeros(labels.shape[1:], np.int32)
    for k in range(labels.shape[0]):
        out[labels[k] == 1] = k + 1
    return out


class ReferencePseudoLabels(UnlabelledTerm):
    """The RPG term: nearest-reference pseudo-labels of the unlabelled pixels, entropy-weighted (module docstring).

    It adds the reference pool to the step's labelled patches and publishes the first unlabelled
    patch's pseudo-label and W as result layers every ``result_every`` iterations.
    """

    params_spec = REFERENCE_PARAMS

    def __init__(self, params: dict[str, Any], method_name: str) -> None:
        super().__init__(params, method_name)
        self._last: dict[str, Any] | None = None
        self._published = -1

    @property
    def weight(self) -> float:
        return float(self.params["rpg_weight"])

    def extra_labelled(self, drawer: PatchDrawer) -> list[dict[str, Any]]:
        return drawer.pool(int(self.params["pool"]))

    def forward(self, step: WeakStep, extra: dict[str, torch.Tensor] | None, ctx: MethodContext,
                rng: np.random.Generator) -> dict[str, Any]:
        b, n_p = step.n_lab, step.n_extra
        feats = step.out.features.detach()
        labels, weight = pseudo_label_grid(
            feats[b + n_p:], feats[b:b + n_p], extra["target"] if extra is not None else None, ctx.num_classes,
            ctx.multilabel, int(self.params["grid"]), self.params["k"], int(self.params["chunk_elements"]),
        )
        self._remember(ctx, step.crops[0], step.flips[0], labels[0], weight[0], step.unl["query"][0])
        return {"rpg_labels": labels, "rpg_weight": weight}

    def loss(self, logits: torch.Tensor, outputs: dict[str, Any], ctx: MethodContext
             ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor | float]]:
        if "rpg_labels" not in outputs:
            return None, {}
        query = outputs["unl"]["query"]
        lu = weighted_pseudo_loss(logits, outputs["rpg_labels"], outputs["rpg_weight"], query, ctx.multilabel)
        w = outputs["rpg_weight"][query].float().mean().detach() if query.any() else 0.0
        return lu, {"rpg": lu.detach(), "rpg_w": w}

    def _remember(self, ctx: MethodContext, crop: dict[str, Any], flips: np.ndarray, labels: torch.Tensor,
                  weight: torch.Tensor, query: torch.Tensor) -> None:
        """Keep the first unlabelled patch's pseudo-label for the RESULT layers (flips undone)."""
        every = int(self.params["result_every"])
        if every <= 0 or (ctx.iteration // every == self._published and self._last is not None):
            return
        nd = len(flips)
        axes = tuple(a - nd for a in range(nd) if flips[a])
        if axes:
            labels, weight, query = (torch.flip(t, axes) for t in (labels, weight, query))
        lab = labels.cpu().numpy()
        q = query.cpu().numpy()
        shown = display_labels(lab, ctx.multilabel) * q
        w = weight.float().cpu().numpy() * q
        item = tuple(ctx.items[crop["item"]].image.shape[1:])
        region = [list(r) for r in crop["region"]]
        # clip to the image (patches may be padded at borders)
        sl = []
        for ax, (r, d) in enumerate(zip(region, item)):
            lo, hi = max(0, r[0]), min(d, r[1])
            sl.append((lo - r[0], hi - r[0]))
            region[ax] = [lo, hi]
        if len(region) == shown.ndim + 1:  # a slice of a volume
            shown, w = shown[None], w[None]
        cut = tuple(slice(a, b) for a, b in sl)
        self._last = {"item": int(crop["item"]), "region": region, "labels": shown[cut], "weight": w[cut],
                      "iteration": ctx.iteration}
        self._published = ctx.iteration // every
        if ctx.emit_result is not None and ctx.iteration > 0:
            ctx.emit_result(self.result_layers())

    # -- results ------------------------------------------------------------------------------------
    def result_layers(self) -> MethodResult:
        if self._last is None:
            return MethodResult()
        last = self._last
        region = tuple((int(a), int(b)) for a, b in last["region"])
        return MethodResult(
            layers=(
                ResultLayer(name="pseudo-label", kind="labels", data=last["labels"], image_index=last["item"],
                            region=region, opacity=0.5),
                ResultLayer(name="pseudo-label weight", kind="image", data=last["weight"].astype(np.float32),
                            image_index=last["item"], region=region, colormap="viridis", opacity=0.5,
                            value_range=(0.0, 1.0), additive=True),
            ),
            message=f"{self.method_name}: pseudo-label of iteration {last['iteration']} (W mean "
                    f"{float(last['weight'].mean()) if last['weight'].size else 0.0:.2f})",
        )


@register_method
class RPG(UnlabelledBatchMethod):
    """Reference-guided pseudo-labels on unlabelled pixels (see the module docstring)."""

    name = "rpg"
    description = "reference-guided pseudo-labels: nearest annotated pixels in feature space, entropy-weighted"
    params_spec = REFERENCE_PARAMS + UNLABELLED_PARAMS
    term_types = (ReferencePseudoLabels,)
