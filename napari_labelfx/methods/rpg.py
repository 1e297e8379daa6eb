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
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..annotations.kinds import IGNORE_INDEX, MULTILABEL_IGNORE, TrainingItem
from ..data.checks import known_mask
from ..data.crop import crop_pad
from . import losses
from ._reference import DEFAULT_CHUNK_ELEMENTS, class_presence, pseudo_label_grid, sample_pool
from .base import Method, MethodContext, MethodError, Param, ParamSpec
from .registry import register_method

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


def display_labels(labels: np.ndarray, multilabel: bool) -> np.ndarray:
    """Labels for a napari Labels layer: class indices; multi-label: 1 + highest present class, 0 none."""
    if not multilabel:
        return labels.astype(np.int32)
    out = np.zeros(labels.shape[1:], np.int32)
    for k in range(labels.shape[0]):
        out[labels[k] == 1] = k + 1
    return out


@register_method
class RPG(Method):
    """Reference-guided pseudo-labels on unlabelled pixels (see the module docstring)."""

    name = "rpg"
    description = "reference-guided pseudo-labels: nearest annotated pixels in feature space, entropy-weighted"
    params_spec = ParamSpec((
        Param("pool", "int", 3, "annotated patches in the reference pool (p)", min=1, important=True),
        Param("grid", "int", 64, "search grid edge s (features and labels resized to s x s)", min=1, important=True),
        Param("k", "count_or_fraction", 7000, "nearest references for the entropy weight W: a count, or a "
              "fraction of the pool", important=True),
        Param("unlabelled_batch", "int", 0, "unlabelled patches per step (0 = the batch size)", min=0),
        Param("rpg_weight", "float", 1.0, "weight of the pseudo-label loss", min=0),
        Param("rampup", "float", 0.1, "share of training over which the unlabelled terms ramp up linearly", min=0),
        Param("chunk_elements", "int", DEFAULT_CHUNK_ELEMENTS, "similarity elements per search chunk (memory bound; "
              "2^22 = 16 MiB)", min=1),
        Param("result_every", "int", 50, "iterations between pseudo-label result layers (0 = never)", min=0),
        Param("dice_weight", "float", 1.0, "weight of the soft Dice term", min=0),
        Param("weak_flip", "bool", True, "random flips as the weak view of unlabelled patches; turn off when a mirror "
              "image swaps classes (left/right lung)"),
    ))
    use_rpg = True
    use_fixmatch = False

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self._drawer: PatchDrawer | None = None
        self._drawer_key: tuple[int, tuple[int, ...]] | None = None
        self._rng = np.random.default_rng(0)
        self._last: dict[str, Any] | None = None
        self._published = -1

    # -- drawing ------------------------------------------------------------------------------------
    def _get_drawer(self, ctx: MethodContext, patch: tuple[int, ...]) -> PatchDrawer:
        key = (id(ctx.items), patch)
        if self._drawer is None or self._drawer_key != key:
            self._drawer = PatchDrawer(list(ctx.items), patch, ctx.num_classes, ctx.multilabel, self._rng)
            self._drawer_key = key
        return self._drawer

    def on_start(self, ctx: MethodContext) -> None:
        seed = int(torch.initial_seed()) % (2 ** 32)  # follows the trainer's seed
        self._rng = np.random.default_rng([seed, 6])

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, models: Any, batch: dict[str, torch.Tensor], ctx: MethodContext) -> dict[str, Any]:
        net = models[self.inference_model]
        image = batch["image"]
        patch = tuple(int(s) for s in image.shape[2:])
        drawer = self._get_drawer(ctx, patch)
        b = image.shape[0]
        n_u = int(self.params["unlabelled_batch"]) or b
        pool = drawer.pool(int(self.params["pool"])) if self.use_rpg else []
        unl = drawer.unlabelled(n_u) if drawer.has_unlabelled else []
        parts = [image]
        pool_t = unl_t = None
        if pool:
            pool_t = stack(pool, image.device)
            parts.append(pool_t["image"].to(image.dtype))
        flips = None
        if unl:
            unl_t = stack(unl, image.device)
            query = unknown_of(unl_t["target"], unl_t["valid"], ctx.multilabel)
            if self.params["weak_flip"]:
                (unl_img, query), flips = weak_flip([unl_t["image"], query], self._rng, len(patch))
            else:  # e.g. chest X-rays, whose left and right classes a mirror image swaps
                unl_img, flips = unl_t["image"], np.zeros((len(unl), len(patch)), bool)
            unl_t["image"], unl_t["query"] = unl_img.to(image.dtype), query
            parts.append(unl_t["image"])
        out = net(torch.cat(parts)) if len(parts) > 1 else net(image)
        n_p = len(pool)
        res: dict[str, Any] = {self.inference_model: out, "n_lab": b, "n_pool": n_p, "pool": pool_t, "unl": unl_t}
        if unl and self.use_rpg:
            feats = out.features.detach()
            labels, weight = pseudo_label_grid(
                feats[b + n_p:], feats[b:b + n_p], pool_t["target"], ctx.num_classes, ctx.multilabel,
                int(self.params["grid"]), self.params["k"], int(self.params["chunk_elements"]),
            )
            res["rpg_labels"], res["rpg_weight"] = labels, weight
            self._remember(ctx, unl[0], flips[0], labels[0], weight[0], query[0])
        if unl and self.use_fixmatch:
            res.update(self._fixmatch_forward(net, out.logits[b + n_p:].detach(), unl_t, ctx))
        return res

    def _fixmatch_forward(self, net: Any, weak_logits: torch.Tensor, unl_t: dict[str, torch.Tensor],
                          ctx: MethodContext) -> dict[str, Any]:
        raise MethodError(f"{self.name} does not use FixMatch")

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
        item = self.items_shape(ctx, crop["item"])
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

    @staticmethod
    def items_shape(ctx: MethodContext, index: int) -> tuple[int, ...]:
        return tuple(ctx.items[index].image.shape[1:])

    # -- loss ---------------------------------------------------------------------------------------
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
        if "rpg_labels" in outputs:
            unl = outputs["unl"]
            lu = weighted_pseudo_loss(logits[b + n_p:], outputs["rpg_labels"], outputs["rpg_weight"],
                                      unl["query"], ctx.multilabel)
            total = total + float(self.params["rpg_weight"]) * self._ramp(ctx) * lu
            terms["rpg"] = lu.detach()
            terms["rpg_w"] = outputs["rpg_weight"][unl["query"]].float().mean().detach() if unl["query"].any() else 0.0
        if "strong_logits" in outputs:
            lf = weighted_pseudo_loss(outputs["strong_logits"], outputs["strong_target"],
                                      outputs["strong_weight"], outputs["strong_mask"], ctx.multilabel)
            total = total + float(self.params.get("fixmatch_weight", 1.0)) * self._ramp(ctx) * lf
            terms["fixmatch"] = lf.detach()
        return total, terms

    # -- results ------------------------------------------------------------------------------------
    def result_layers(self) -> dict[str, Any]:
        if self._last is None:
            return {}
        last = self._last
        return {
            "layers": {
                "pseudo-label": {"data": last["labels"], "type": "labels", "image_index": last["item"],
                                 "region": last["region"], "kwargs": {"opacity": 0.5}},
                "pseudo-label weight": {"data": last["weight"].astype(np.float32), "type": "image",
                                        "image_index": last["item"], "region": last["region"],
                                        "kwargs": {"colormap": "viridis", "opacity": 0.5,
                                                   "contrast_limits": [0.0, 1.0], "blending": "additive"}},
            },
            "message": f"{self.name}: pseudo-label of iteration {last['iteration']} (W mean "
                       f"{float(last['weight'].mean()) if last['weight'].size else 0.0:.2f})",
        }
