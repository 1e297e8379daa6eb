"""Shared parts of the methods that learn from unlabelled pixels (``rpg``, ``fixmatch``, ``rpg+``).

Every step such a method runs, in one forward pass (one BN mode for all):

* the engine's labelled batch,
* extra labelled patches its terms ask for (RPG's class-covering reference pool),
* ``unlabelled_batch`` patches of unlabelled pixels (items without a target, and the unknown pixels
  of partly annotated items: in the GUI, the unpainted part of the image), with a weak view (flips).

The loss is CE + ``dice_weight`` x Dice on the labelled and extra patches, plus each term's loss on the
unlabelled pixels times its weight and a linear ramp-up over the first ``rampup`` share of training.
A method is :class:`UnlabelledBatchMethod` with its list of :class:`UnlabelledTerm` (``rpg``: the
reference pseudo-label term; ``fixmatch``: the strong-view consistency term; ``rpg+``: both); each term
reads only its own parameters, and each method declares only the parameters of its terms plus
:data:`UNLABELLED_PARAMS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..annotations.kinds import IGNORE_INDEX, MULTILABEL_IGNORE, TrainingItem
from ..core.results import MethodResult
from ..data.checks import known_mask
from ..data.crop import crop_pad
from . import losses
from ._reference import class_presence, sample_pool
from .base import Method, MethodContext, Param, ParamSpec

#: Unknown-pixel positions remembered per item for centring unlabelled patches.
MAX_UNKNOWN_POOL = 65536


# -- patch drawing from ctx.items ------------------------------------------------------------------------
class PatchDrawer:
    """Draw labelled (pool) and unlabelled patches from training items, in 2D or 3D mode.

    Parameters
    ----------
    items : the training items (``ctx.items``).
    patch : the patch size, (Y, X) or (Z, Y, X); 2D patches of volumes are single slices.
    num_classes, multilabel : target layout.
    rng : numpy generator.
    """

    def __init__(self, items: list[TrainingItem], patch: tuple[int, ...], num_classes: int,
                 multilabel: bool, rng: np.random.Generator) -> None:
        self.items, self.patch = items, tuple(patch)
        self.num_classes, self.multilabel, self.rng = num_classes, multilabel, rng
        targets = [it.target for it in items]
        self.presence = class_presence(targets, num_classes, multilabel)
        self.unknown: list[np.ndarray | None] = []
        counts = []
        for it in items:
            spatial = it.image.shape[1:]
            if it.target is None:
                self.unknown.append(None)  # everything unknown: centres drawn uniformly
                counts.append(float(np.prod(spatial)))
                continue
            flat = np.flatnonzero(~known_mask(it.target, multilabel))
            counts.append(float(flat.size))
            if flat.size > MAX_UNKNOWN_POOL:
                flat = rng.choice(flat, MAX_UNKNOWN_POOL, replace=False)
            self.unknown.append(flat)
        self.unknown_counts = np.asarray(counts)

    @property
    def has_unlabelled(self) -> bool:
        return bool(self.unknown_counts.sum() > 0)

    def _class_pixels(self, item: TrainingItem, key: int) -> np.ndarray:
        t = item.target
        if self.multilabel:
            m = (t[key] == 1) if key < self.num_classes else (np.all(t != MULTILABEL_IGNORE, axis=0) & ~np.any(t == 1, axis=0))
        else:
            m = t == key
        return np.flatnonzero(m)

    def _crop(self, item_index: int, centre: tuple[int, ...]) -> dict[str, Any]:
        item = self.items[item_index]
        spatial = item.image.shape[1:]
        slices = len(spatial) == 3 and len(self.patch) == 2
        size = (1, *self.patch) if slices else self.patch
        start = []
        for ax, (c, d, s) in enumerate(zip(centre, spatial, size)):
            if slices and ax == 0:
                start.append(int(c))
                continue
            st = int(c) - int(self.rng.integers(s))
            st = min(max(st, 0), d - s) if d >= s else (d - s) // 2
            start.append(st)
        img = crop_pad(item.image, start, size, 0.0)
        valid = crop_pad(np.ones(spatial, bool), start, size, False)
        if item.target is None:
            fill = MULTILABEL_IGNORE if self.multilabel else IGNORE_INDEX
            shape = ((self.num_classes, *size) if self.multilabel else tuple(size))
            tgt = np.full(shape, fill, np.uint8 if self.multilabel else np.int64)
        else:
            tgt = crop_pad(item.target, start, size, MULTILABEL_IGNORE if self.multilabel else IGNORE_INDEX)
        if slices:
            img, valid = img[:, 0], valid[0]
            tgt = tgt[:, 0] if self.multilabel else tgt[0]
        stop = [a + b for a, b in zip(start, size)]
        return {"image": img, "target": tgt, "valid": valid, "item": item_index,
                "region": [[int(a), int(b)] for a, b in zip(start, stop)]}

    def pool(self, p: int) -> list[dict[str, Any]]:
        """``p`` annotated patches: items chosen to cover every class (:func:`sample_pool`), each
        centred on a pixel of a class the earlier patches lack, so the patches cover the classes too."""
        chosen = sample_pool(self.presence, p, self.rng)
        covered = np.zeros(self.presence.shape[1], bool)
        out = []
        for i in chosen:
            present = np.flatnonzero(self.presence[i])
            fresh = [k for k in present if not covered[k]]
            key = int(self.rng.choice(fresh if fresh else present))
            pix = self._class_pixels(self.items[i], key)
            centre = np.unravel_index(int(pix[self.rng.integers(pix.size)]), self.items[i].image.shape[1:])
            crop = self._crop(i, tuple(int(c) for c in centre))
            covered |= class_presence([crop["target"]], self.num_classes, self.multilabel)[0]
            out.append(crop)
        return out

    def unlabelled(self, n: int) -> list[dict[str, Any]]:
        """``n`` patches centred on unknown pixels (items drawn in proportion to their unknown area)."""
        w = self.unknown_counts / self.unknown_counts.sum()
        out = []
        for _ in range(n):
            i = int(self.rng.choice(len(self.items), p=w))
            spatial = self.items[i].image.shape[1:]
            pool = self.unknown[i]
            if pool is None:
                centre = tuple(int(self.rng.integers(d)) for d in spatial)
            else:
                centre = tuple(int(c) for c in np.unravel_index(int(pool[self.rng.integers(pool.size)]), spatial))
            out.append(self._crop(i, centre))
        return out


def stack(crops: list[dict[str, Any]], device: torch.device) -> dict[str, torch.Tensor]:
    """Stack crops into tensors: image, target, valid (bool)."""
    return {k: torch.from_numpy(np.stack([c[k] for c in crops])).to(device) for k in ("image", "target", "valid")}


def weak_flip(tensors: list[torch.Tensor], rng: np.random.Generator, nd: int) -> tuple[list[torch.Tensor], np.ndarray]:
    """Flip each sample of every (B, ..., *spatial) tensor along random spatial axes (the weak view)."""
    b = tensors[0].shape[0]
    flips = rng.integers(0, 2, (b, nd)).astype(bool)
    out = []
    for t in tensors:
        parts = []
        for i in range(b):
            axes = tuple(a - nd for a in range(nd) if flips[i, a])
            parts.append(torch.flip(t[i], axes) if axes else t[i])
        out.append(torch.stack(parts))
    return out, flips


def unknown_of(target: torch.Tensor, valid: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """(B, *spatial) bool: pixels inside the image whose label is unknown (the queries)."""
    if multilabel:
        return valid & (target == MULTILABEL_IGNORE).any(dim=1)
    return valid & (target == IGNORE_INDEX)


def supervised_terms(logits: torch.Tensor, target: torch.Tensor, multilabel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE or BCE, Dice) over known pixels."""
    if multilabel:
        return losses.bce_with_ignore(logits, target), losses.soft_dice_loss_multilabel(logits, target)
    return losses.cross_entropy(logits, target), losses.soft_dice_loss(logits, target)


def weighted_pseudo_loss(logits: torch.Tensor, pseudo: torch.Tensor, weight: torch.Tensor,
                         mask: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Sum of ``weight`` x CE (BCE averaged over classes when multi-label) over ``mask``, divided by
    the number of masked pixels (low-weight pixels count in the mean, as in FixMatch)."""
    if multilabel:
        y = torch.where(pseudo == MULTILABEL_IGNORE, torch.zeros_like(pseudo), pseudo).float()
        known = (pseudo != MULTILABEL_IGNORE).float()
        ce = (F.binary_cross_entropy_with_logits(logits.float(), y, reduction="none") * known).sum(1)
        ce = ce / known.sum(1).clamp_min(1)
    else:
        safe = torch.where(pseudo == IGNORE_INDEX, torch.zeros_like(pseudo), pseudo)
        ce = F.cross_entropy(logits.float(), safe, reduction="none")
    used = (mask if multilabel else mask & (pseudo != IGNORE_INDEX)).float()
    return (ce * weight.float() * used).sum() / mask.float().sum().clamp_min(1.0)


#: Parameters every method with unlabelled patches has.
UNLABELLED_PARAMS = ParamSpec((
    Param("unlabelled_batch", "int", 0, "unlabelled patches per step (0 = the batch size)", min=0),
    Param("rampup", "float", 0.1, "share of training over which the unlabelled terms ramp up linearly", min=0),
    Param("dice_weight", "float", 1.0, "weight of the soft Dice term", min=0),
    Param("weak_flip", "bool", True, "random flips as the weak view of unlabelled patches; turn off when a mirror "
          "image swaps classes (left/right lung)"),
))


@dataclass
class WeakStep:
    """One step's forward pass, for the terms: the network, its output on all parts and the parts.

    ``unl`` holds the stacked unlabelled patches: ``image`` (the weak view), ``target``, ``valid`` and
    ``query`` (unknown pixels inside the image, weak view); ``crops`` are the drawn patches and
    ``flips`` the weak view's flips per patch (to undo them for display).
    """

    net: Any
    out: Any
    n_lab: int
    n_extra: int
    unl: dict[str, torch.Tensor]
    crops: list[dict[str, Any]]
    flips: np.ndarray

    @property
    def unlabelled(self) -> slice:
        """The unlabelled patches' rows of the batch."""
        return slice(self.n_lab + self.n_extra, None)


class UnlabelledTerm:
    """One loss term on the unlabelled pixels (see the module docstring); ``params`` are the method's."""

    #: Parameters this term reads.
    params_spec: ParamSpec = ParamSpec()

    def __init__(self, params: dict[str, Any], method_name: str) -> None:
        self.params = params
        self.method_name = method_name

    @property
    def weight(self) -> float:
        """Factor of this term's loss (before the ramp-up)."""
        return 1.0

    def extra_labelled(self, drawer: PatchDrawer) -> list[dict[str, Any]]:
        """Labelled patches to add to the step (trained with the supervised loss too); none by default."""
        return []

    def forward(self, step: WeakStep, extra: dict[str, torch.Tensor] | None, ctx: MethodContext,
                rng: np.random.Generator) -> dict[str, Any]:
        """Outputs for :meth:`loss` (e.g. pseudo-labels), computed after the shared forward pass."""
        return {}

    def loss(self, logits: torch.Tensor, outputs: dict[str, Any], ctx: MethodContext
             ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor | float]]:
        """(unweighted loss or None when the step has nothing for it, named terms); ``logits`` of the
        unlabelled patches."""
        return None, {}

    def result_layers(self) -> MethodResult:
        return MethodResult()


class UnlabelledBatchMethod(Method):
    """A method trained on labelled patches plus weak views of unlabelled ones, with :class:`UnlabelledTerm` s."""

    params_spec = UNLABELLED_PARAMS
    #: The term classes, in the order their losses are added.
    term_types: tuple[type[UnlabelledTerm], ...] = ()

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.terms = [t(self.params, self.name) for t in self.term_types]
        self._drawer: PatchDrawer | None = None
        self._drawer_key: tuple[int, tuple[int, ...]] | None = None
        self._rng = np.random.default_rng(0)

    def _get_drawer(self, ctx: MethodContext, patch: tuple[int, ...]) -> PatchDrawer:
        key = (id(ctx.items), patch)
        if self._drawer is None or self._drawer_key != key:
            self._drawer = PatchDrawer(list(ctx.items), patch, ctx.num_classes, ctx.multilabel, self._rng)
            self._drawer_key = key
        return self._drawer

    def on_start(self, ctx: MethodContext) -> None:
        seed = int(torch.initial_seed()) % (2 ** 32)  # follows the trainer's seed
        self._rng = np.random.default_rng([seed, 6])

    def forward(self, models: Any, batch: dict[str, torch.Tensor], ctx: MethodContext) -> dict[str, Any]:
        net = models[self.inference_model]
        image = batch["image"]
        patch = tuple(int(s) for s in image.shape[2:])
        drawer = self._get_drawer(ctx, patch)
        b = image.shape[0]
        n_u = int(self.params["unlabelled_batch"]) or b
        extra = [crop for term in self.terms for crop in term.extra_labelled(drawer)]
        unl = drawer.unlabelled(n_u) if drawer.has_unlabelled else []
        parts = [image]
        extra_t = unl_t = None
        if extra:
            extra_t = stack(extra, image.device)
            parts.append(extra_t["image"].to(image.dtype))
        flips = np.zeros((len(unl), len(patch)), bool)
        if unl:
            unl_t = stack(unl, image.device)
            query = unknown_of(unl_t["target"], unl_t["valid"], ctx.multilabel)
            if self.params["weak_flip"]:
                (unl_img, query), flips = weak_flip([unl_t["image"], query], self._rng, len(patch))
            else:  # e.g. chest X-rays, whose left and right classes a mirror image swaps
                unl_img = unl_t["image"]
            unl_t["image"], unl_t["query"] = unl_img.to(image.dtype), query
            parts.append(unl_t["image"])
        out = net(torch.cat(parts)) if len(parts) > 1 else net(image)
        res: dict[str, Any] = {self.inference_model: out, "n_lab": b, "n_pool": len(extra), "pool": extra_t,
                               "unl": unl_t}
        if unl_t is not None:
            step = WeakStep(net, out, b, len(extra), unl_t, unl, flips)
            for term in self.terms:
                res.update(term.forward(step, extra_t, ctx, self._rng))
        return res

    def _ramp(self, ctx: MethodContext) -> float:
        r = float(self.params["rampup"])
        return 1.0 if r <= 0 else min(1.0, ctx.progress / r)

    def loss(self, batch: dict[str, torch.Tensor], outputs: dict[str, Any], ctx: MethodContext
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        logits = outputs[self.inference_model].logits
        b, n_p = outputs["n_lab"], outputs["n_pool"]
        target = batch["target"]
        if n_p:
            target = torch.cat([target, outputs["pool"]["target"].to(target.dtype)])
        ce, dice = supervised_terms(logits[:b + n_p], target, ctx.multilabel)
        total = ce + float(self.params["dice_weight"]) * dice
        terms: dict[str, torch.Tensor | float] = {"ce": ce.detach(), "dice": dice.detach()}
        for term in self.terms:
            value, named = term.loss(logits[b + n_p:], outputs, ctx)
            if value is not None:
                total = total + term.weight * self._ramp(ctx) * value
            terms.update(named)
        return total, terms

    def result_layers(self) -> MethodResult:
        out = MethodResult()
        for term in self.terms:
            out = out.merged(term.result_layers())
        return out
