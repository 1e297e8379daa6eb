"""``dii-dcr``: per-weak-instance trust weights (DII) and dual-network co-regularization (DCR).

METHODS.md section 2. Every weak instance k (a box, ellipse, polygon or coarse mask: the ids of
``TrainingItem.instances`` on items of kind ``weak``/``noisy``) carries a weight gamma_k in [0, 1]
(init 0.5); strong pixels weigh 1. The segmentation loss is cross-entropy + soft Dice with these
per-pixel weights. Every ``tau`` iterations the network is frozen and gamma moves along the
last-layer hypergradient ``g_S . g_k`` (closed form, see ``_hypergrad``) with Adam (lr ``beta``).

Which pixels belong to instance k: its shape, plus (when the area outside the shapes of a weak item
is taken as background, ``weak_outside="background"``, the setting of the paper where a weak label
is a full coarse mask) the background pixels nearer to k than to any other shape. So an ellipse that
misses half of its object is judged, and down-weighted, by the object pixels it wrongly calls
background too.

DCR adds a second network (different init). Network 1 sees the batch resampled in proportion to
max(gamma, ``gamma_floor``) (resampling inside the batch: per-sample multiplicities on its loss,
since the engine's sampler cannot be steered), network 2 the batch as drawn. Foreground paste mixes
each sample with a partner; each network learns the other's mixed argmax pseudo-target (cross pseudo
supervision) with weight ``lam * (gamma_i + gamma_j) / 2``, ramped up over ``cps_rampup`` of
training because both networks' early predictions are noise. Network 1 predicts.

Deviation from the paper: the engine's AdamW (the optimizer of every method, so comparisons with
``supervised`` use the same optimizer) instead of SGD with momentum.

Baselines through parameters: ``dii=false dcr=false gamma_init=1`` is plain training on strong plus
weak masks taken as strong; ``dii=false`` is DCR alone, ``dcr=false`` DII alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from ..annotations.kinds import IGNORE_INDEX, LabelKind, TrainingItem
from ..core.results import Curve, MethodResult, ResultLayer
from . import _hypergrad, _paste
from .base import Method, MethodContext, MethodError, Param, ParamSpec
from .registry import register_method

#: Item kinds whose instances get trust weights.
WEAK_KINDS = (LabelKind.WEAK.value, LabelKind.NOISY.value)
#: Instances listed by name in the status message.
LEAST_TRUSTED_SHOWN = 5


@dataclass
class _WeakIndex:
    """Where each weak instance's gamma lives: (item position, instance id) -> global index."""

    keys: list[tuple[str, int]]  # (item name, instance id) per global index
    item_of: np.ndarray  # (G,) item position of each instance
    lut: list[np.ndarray | None]  # per item: instance id -> global index (-1 none); None = not weak
    whole_item: list[bool]  # per item: the item has no instance map, it is one instance
    weak_item: np.ndarray  # (N,) bool


def _instance_map(item: TrainingItem) -> tuple[np.ndarray | None, bool]:
    """The item's weak-instance ids, or (for a weak item without ids) its known pixels as instance 1."""
    if item.instances is not None and int(item.instances.max(initial=0)) > 0:
        return item.instances, False
    if item.target is None:
        return None, False
    return (item.target != IGNORE_INDEX).astype(np.int32), True


def build_weak_index(items: list[TrainingItem]) -> _WeakIndex:
    """Number the weak instances of ``items`` (items of kind weak or noisy with a target)."""
    keys: list[tuple[str, int]] = []
    item_of: list[int] = []
    luts: list[np.ndarray | None] = []
    whole: list[bool] = []
    weak = np.zeros(len(items), dtype=bool)
    for i, item in enumerate(items):
        kind = getattr(item.kind, "value", item.kind)
        if kind not in WEAK_KINDS or item.target is None:
            luts.append(None)
            whole.append(False)
            continue
        inst, is_whole = _instance_map(item)
        ids = np.unique(inst[inst > 0]) if inst is not None else np.zeros(0, np.int64)
        if ids.size == 0:
            luts.append(None)
            whole.append(False)
            continue
        lut = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
        for iid in ids:
            lut[iid] = len(keys)
            keys.append((item.name, int(iid)))
            item_of.append(i)
        luts.append(lut)
        whole.append(is_whole)
        weak[i] = True
    return _WeakIndex(keys, np.asarray(item_of, dtype=np.int64), luts, whole, weak)


def nearest_instance(instances: np.ndarray) -> np.ndarray:
    """Every pixel's nearest instance id (Euclidean); all zeros when there is no instance pixel."""
    if not np.any(instances > 0):
        return np.zeros_like(instances)
    _, idx = ndimage.distance_transform_edt(instances == 0, return_indices=True)
    return instances[tuple(idx)]


def weighted_ce_dice(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, norm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-weighted cross-entropy (sum w*ce / norm) and soft Dice (probabilities and one-hot times w).

    Dice averages the foreground classes present in the weighted target (background left to CE, as
    in ``supervised``).
    """
    k = logits.shape[1]
    known = target != IGNORE_INDEX
    safe = torch.where(known, target, torch.zeros_like(target))
    w = weight * known.float()
    ce = (F.cross_entropy(logits.float(), safe, reduction="none") * w).sum() / norm.clamp_min(1.0)
    wk = w.unsqueeze(1)
    probs = torch.softmax(logits.float(), dim=1) * wk
    onehot = F.one_hot(safe, k).movedim(-1, 1).float() * wk
    dims = (0, *range(2, probs.ndim))
    inter, denom, mass = (probs * onehot).sum(dims), probs.sum(dims) + onehot.sum(dims), onehot.sum(dims)
    dice = (2 * inter + 1e-5) / (denom + 1e-5)
    present = (mass > 0).float()
    if k > 1:
        dice, present = dice[1:], present[1:]
    return ce, ((1 - dice) * present).sum() / present.sum().clamp_min(1.0)


@register_method
class DiiDcr(Method):
    """Trust weights per weak instance by last-layer hypergradient, with dual-network co-regularization."""

    name = "dii-dcr"
    description = "weak boxes/ellipses/coarse masks: learned trust weight per weak instance + dual-network co-regularization"
    params_spec = ParamSpec((
        Param("dii", "bool", True, "learn the trust weights (false: they stay at gamma_init); "
              "`dii=false dcr=false gamma_init=1` = weak masks treated as strong", important=True),
        Param("dcr", "bool", True, "second network, weight-proportional resampling, paste, cross pseudo supervision",
              important=True),
        Param("tau", "int", 0, "iterations between weight updates (0 = 10 % of the run, clipped to 10-400)", min=0,
              important=True),
        Param("beta", "float", 0.1, "learning rate of the weights (Adam)", min=0, min_open=True),
        Param("gamma_init", "float", 0.5, "initial trust weight", min=0, max=1),
        Param("gamma_floor", "float", 0.1, "network 1 samples a weak patch at least this much", min=0, max=1),
        Param("lam", "float", 4.0, "weight of the cross pseudo supervision term", min=0, important=True),
        Param("cps_rampup", "float", 0.2, "share of training over which `lam` ramps up (sigmoid-shaped)", min=0),
        Param("weak_outside", "choice", "background", "outside the weak shapes of an image: `background` (weak masks "
              "are full coarse masks) or `ignore` (unknown)", choices=("background", "ignore")),
        Param("max_weak_per_step", "int", 64, "weak instances scored per weight update (a random sample beyond)",
              min=0, min_open=True),
        Param("hyper_crop", "int", 256, "crop edge around each instance (and of strong crops) for the weight update",
              min=0, min_open=True),
        Param("strong_crops", "int", 8, "strong crops per weight update", min=0, min_open=True),
        Param("dice_weight", "float", 1.0, "weight of the soft Dice term", min=0),
    ))
    supports_multilabel = False

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self._index: _WeakIndex | None = None
        self._items: list[TrainingItem] | None = None
        self._opt: _hypergrad.GammaAdam | None = None
        self._saved: dict[str, Any] | None = None
        self._curve_x: list[int] = []
        self._curve_y: list[float] = []
        self._rng = np.random.default_rng(0)

    # -- networks ------------------------------------------------------------------------------------
    def build_models(self, model_config: Any) -> dict[str, nn.Module]:
        """Network 1 (predicts) and, with DCR, network 2 (same architecture, its own random init)."""
        from ..models import build_model

        models = {"net": build_model(model_config)}
        if self.params["dcr"]:
            models["net2"] = build_model(model_config)  # the global RNG has moved on: a different init
        return models

    # -- weak-instance bookkeeping -------------------------------------------------------------------
    def _sync_items(self, ctx: MethodContext) -> None:
        """(Re)build the instance index when the items change, keeping known instances' weights."""
        if self._items is ctx.items and self._index is not None:
            return
        old = {} if self._index is None or self._opt is None else {
            key: (self._opt.value[g], self._opt.m[g], self._opt.v[g], self._opt.t[g])
            for g, key in enumerate(self._index.keys)
        }
        if self._saved is not None:  # resumed: weights from the checkpoint
            old.update({(str(n), int(i)): (float(v), float(m), float(s), int(t)) for (n, i), v, m, s, t in zip(
                self._saved["keys"], self._saved["gamma"].tolist(), self._saved["m"].tolist(),
                self._saved["v"].tolist(), self._saved["t"].tolist())})
            self._saved = None
        self._items = ctx.items
        self._index = build_weak_index(list(ctx.items))
        self._opt = _hypergrad.GammaAdam(len(self._index.keys), lr=float(self.params["beta"]),
                                         init=float(self.params["gamma_init"]))
        for g, key in enumerate(self._index.keys):
            if key in old:
                self._opt.value[g], self._opt.m[g], self._opt.v[g], self._opt.t[g] = old[key]

    @property
    def gammas(self) -> np.ndarray:
        """Current weight of every weak instance (order of :meth:`weights_table`)."""
        return np.zeros(0) if self._opt is None else self._opt.value.copy()

    def weights_table(self) -> list[dict[str, Any]]:
        """One row per weak instance: ``{"item", "instance", "gamma"}``."""
        if self._index is None or self._opt is None:
            return []
        return [{"item": n, "instance": i, "gamma": float(g)} for (n, i), g in zip(self._index.keys, self._opt.value)]

    def on_start(self, ctx: MethodContext) -> None:
        """Number the weak instances and seed the method's own random stream."""
        if ctx.multilabel:
            raise MethodError("dii-dcr supports multi-class targets only")
        self._rng = np.random.default_rng(int(torch.initial_seed()) % (2**32))
        self._sync_items(ctx)
        assert self._index is not None
        if not self._index.keys:
            ctx.log("dii-dcr: no weak instances in the training items: training on the strong labels only",
                    "warning")
        else:
            ctx.log(f"dii-dcr: {len(self._index.keys)} weak instances in "
                    f"{int(self._index.weak_item.sum())} images, weights start at {self.params['gamma_init']}")

    # -- per-pixel weights ---------------------------------------------------------------------------
    def _effective_target(self, target: torch.Tensor, weak_sample: torch.Tensor) -> torch.Tensor:
        """Weak samples' unknown pixels become background when weak masks count as full masks."""
        if self.params["weak_outside"] != "background" or not bool(weak_sample.any()):
            return target
        sel = weak_sample.view(-1, *([1] * (target.ndim - 1))) & (target == IGNORE_INDEX)
        return torch.where(sel, torch.zeros_like(target), target)

    def _pixel_groups(self, instances: np.ndarray | None, item_index: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Global instance index per pixel of a batch (-1: not weak); see the module docstring."""
        assert self._index is not None
        groups = np.full(shape, -1, dtype=np.int64)
        outside_counts = self.params["weak_outside"] == "background"
        for b, i in enumerate(item_index.tolist()):
            lut = self._index.lut[i] if i < len(self._index.lut) else None
            if lut is None:
                continue
            if self._index.whole_item[i]:
                groups[b] = lut[1]
                continue
            ins = np.zeros(shape[1:], np.int32) if instances is None else instances[b]
            ins = np.where(ins < lut.size, ins, 0)
            if not np.any(ins > 0):
                # no shape in the patch: its (background) pixels belong to the item's instances as a
                # whole and weigh their mean gamma (marker -2, see _pixel_weights)
                groups[b] = -2 if outside_counts else -1
                continue
            dom = nearest_instance(ins) if outside_counts else ins
            groups[b] = np.where(dom > 0, lut[dom], -1)
        return groups

    def _pixel_weights(self, groups: np.ndarray, item_index: np.ndarray, device: torch.device) -> torch.Tensor:
        """gamma of each pixel's instance, 1 for non-weak pixels, the item's mean gamma for group -2."""
        assert self._index is not None and self._opt is not None
        gam = self._opt.value
        w = np.ones(groups.shape, dtype=np.float32)
        sel = groups >= 0
        w[sel] = gam[groups[sel]]
        for b in np.flatnonzero((groups == -2).reshape(groups.shape[0], -1).any(axis=1)):
            mine = gam[self._index.item_of == int(item_index[b])]
            w[b][groups[b] == -2] = float(mine.mean()) if mine.size else 1.0
        return torch.from_numpy(w).to(device)

    # -- training step -------------------------------------------------------------------------------
    def forward(self, models: dict[str, nn.Module], batch: dict[str, torch.Tensor], ctx: MethodContext) -> dict[str, Any]:
        """Both networks on the batch; with DCR also on the foreground-pasted batch."""
        self._sync_items(ctx)
        assert self._index is not None
        x = batch["image"]
        item_index = batch["item_index"].cpu().numpy()
        weak_sample = torch.from_numpy(self._index.weak_item[item_index]).to(x.device)
        target = self._effective_target(batch["target"].long(), weak_sample)
        ins = batch.get("instances")
        groups = self._pixel_groups(None if ins is None else ins.cpu().numpy(), item_index, tuple(target.shape))
        weight = self._pixel_weights(groups, item_index, x.device)
        out: dict[str, Any] = {"target": target, "weight": weight, "net": models["net"](x)}
        if "net2" not in models:
            return out
        out["net2"] = models["net2"](x)
        b = x.shape[0]
        perm = _paste.pair_permutation(b).to(x.device)
        mask, _ = _paste.foreground_masks(target)
        with torch.no_grad():
            p1 = out["net"].logits.argmax(1)
            p2 = out["net2"].logits.argmax(1)
        mask = mask.to(x.device)
        x_m = _paste.paste(x, x[perm], mask)
        out.update(perm=perm, y1m=_paste.mixed_target(p1, p1[perm], mask),
                   y2m=_paste.mixed_target(p2, p2[perm], mask),
                   mixed1=models["net"](x_m), mixed2=models["net2"](x_m))
        return out

    def _cps_weight(self, ctx: MethodContext) -> float:
        ramp = float(self.params["cps_rampup"])
        if ramp <= 0:
            return float(self.params["lam"])
        t = min(1.0, ctx.progress / ramp)
        return float(self.params["lam"]) * float(np.exp(-5.0 * (1.0 - t) ** 2))  # Laine & Aila's ramp-up

    def loss(self, batch: dict[str, torch.Tensor], outputs: dict[str, Any],
             ctx: MethodContext) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        """Weighted CE + Dice for each network, plus the weighted cross pseudo supervision term."""
        target, weight = outputs["target"], outputs["weight"]
        known = (target != IGNORE_INDEX).float()
        dw = float(self.params["dice_weight"])
        b = target.shape[0]
        flat_w, flat_k = (weight * known).reshape(b, -1), known.reshape(b, -1)
        # sample weight: mean pixel weight over its known pixels (strong = 1)
        g_sample = torch.where(flat_k.sum(1) > 0, flat_w.sum(1) / flat_k.sum(1).clamp_min(1), torch.ones(b, device=target.device))
        if "net2" not in outputs:
            ce, dice = weighted_ce_dice(outputs["net"].logits, target, weight, known.sum())
            return ce + dw * dice, {"ce": ce.detach(), "dice": dice.detach(), "gamma": g_sample.mean().detach()}
        # network 1: the batch resampled in proportion to max(gamma, floor), as multiplicities
        p = g_sample.detach().clamp_min(float(self.params["gamma_floor"]))
        counts = torch.bincount(torch.multinomial(p / p.sum(), b, replacement=True), minlength=b).float()
        c = counts.view(-1, *([1] * (target.ndim - 1)))
        ce1, dice1 = weighted_ce_dice(outputs["net"].logits, target, weight * c, (known * c).sum())
        ce2, dice2 = weighted_ce_dice(outputs["net2"].logits, target, weight, known.sum())
        perm = outputs["perm"]
        r = (F.cross_entropy(outputs["mixed1"].logits.float(), outputs["y2m"], reduction="none")
             + F.cross_entropy(outputs["mixed2"].logits.float(), outputs["y1m"], reduction="none"))
        r = r.reshape(b, -1).mean(1)
        pair_w = (g_sample + g_sample[perm]).detach() / 2
        cps = (pair_w * r).mean()
        lam = self._cps_weight(ctx)
        total = ce1 + dw * dice1 + ce2 + dw * dice2 + lam * cps
        return total, {"ce": ce1.detach(), "dice": dice1.detach(), "ce2": ce2.detach(), "cps": cps.detach(),
                       "gamma": g_sample.mean().detach()}

    # -- weight updates ------------------------------------------------------------------------------
    def _tau(self, ctx: MethodContext) -> int:
        tau = int(self.params["tau"])
        return tau if tau > 0 else int(np.clip(ctx.total_iterations // 10, 10, 400))

    def on_iteration(self, ctx: MethodContext) -> None:
        """Every tau iterations: a hypergradient step on the weights."""
        if not self.params["dii"] or ctx.iteration % self._tau(ctx) != 0:
            return
        self._sync_items(ctx)
        if self._index is None or not self._index.keys:
            return
        self.update_weights(ctx)

    def _crop(self, item: TrainingItem, centre: tuple[int, ...], dims: int) -> tuple[np.ndarray, ...]:
        """(image, target, instances) of a window of edge ``hyper_crop`` around ``centre`` (one slice of a
        volume for a 2D network)."""
        edge = int(self.params["hyper_crop"])
        spatial = item.image.shape[1:]
        lead: tuple[Any, ...] = ()
        if len(spatial) > dims:  # 2D network on a volume: the centre's slice
            lead, spatial, centre = (int(centre[0]),), spatial[1:], centre[1:]
        sl = tuple(slice(max(0, min(c - edge // 2, n - edge)), max(0, min(c - edge // 2, n - edge)) + min(edge, n))
                   for c, n in zip(centre, spatial))
        image = item.image[(slice(None), *lead, *sl)]
        target = item.target[(*lead, *sl)]
        inst, _ = _instance_map(item)
        return image, target, None if inst is None else inst[(*lead, *sl)]

    def _run(self, net: nn.Module, image: np.ndarray, device: torch.device) -> Any:
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(device)
        return net(x)

    def update_weights(self, ctx: MethodContext) -> np.ndarray:
        """One DII step: g_S on strong crops, g_S . g_k for (a sample of) the weak instances, Adam, clip.

        Returns the global indices of the instances that were updated.
        """
        assert self._index is not None and self._opt is not None
        net = ctx.models["net"]
        dims = int(getattr(getattr(net, "config", None), "spatial_dims", 2))
        items = list(ctx.items)
        was = net.training
        net.eval()  # frozen network: running BatchNorm statistics, no dropout
        try:
            with torch.no_grad():
                strong = self._strong_grad(net, items, dims, ctx.device)
                if strong is None or strong.n == 0:
                    ctx.log("dii-dcr: no strong pixels to judge the weak labels by: weights unchanged", "warning")
                    return np.zeros(0, np.int64)
                chosen = self._sample_instances()
                sums = torch.zeros(len(self._index.keys), dtype=torch.float64, device=ctx.device)
                counts = torch.zeros_like(sums)
                for g in chosen.tolist():
                    i = int(self._index.item_of[g])
                    item = items[i]
                    inst_full, _ = _instance_map(item)
                    iid = self._index.keys[g][1]
                    centre = tuple(int(np.mean(a)) for a in np.nonzero(inst_full == iid))
                    image, target, inst = self._crop(item, centre, dims)
                    out = self._run(net, image, ctx.device)
                    weak = torch.ones(1, dtype=torch.bool, device=ctx.device)
                    tgt = self._effective_target(torch.from_numpy(np.asarray(target, np.int64))[None].to(ctx.device), weak)
                    groups = self._pixel_groups(None if inst is None else inst[None], np.array([i]), tuple(tgt.shape))
                    groups = np.where(groups == -2, -1, groups)
                    s, n = _hypergrad.instance_alignment(out.features, out.logits, tgt,
                                                         torch.from_numpy(groups).to(ctx.device), strong,
                                                         len(self._index.keys))
                    sums += s
                    counts += n
        finally:
            net.train(was)
        counts_np, sums_np = counts.cpu().numpy(), sums.cpu().numpy()
        upd = np.flatnonzero(counts_np > 0)
        # dL_S/dgamma_k ~ -g_S . g_k: a label whose gradient agrees with the strong one gains weight
        self._opt.step(upd, -sums_np[upd] / counts_np[upd])
        self._curve_x.append(int(ctx.iteration))
        self._curve_y.append(float(self._opt.value.mean()))
        return upd

    def _sample_instances(self) -> np.ndarray:
        assert self._index is not None
        g = len(self._index.keys)
        cap = int(self.params["max_weak_per_step"])
        return np.arange(g) if g <= cap else np.sort(self._rng.choice(g, cap, replace=False))

    def _strong_grad(self, net: nn.Module, items: list[TrainingItem], dims: int,
                     device: torch.device) -> _hypergrad.LastLayerGrad | None:
        """Last-layer gradient of the pixel-mean CE over crops of the strong items (centred on known pixels)."""
        assert self._index is not None
        strong = [i for i, it in enumerate(items) if it.target is not None and not self._index.weak_item[i]
                  and getattr(it.kind, "value", it.kind) not in WEAK_KINDS and np.any(it.target != IGNORE_INDEX)]
        if not strong:
            return None
        total: _hypergrad.LastLayerGrad | None = None
        for _ in range(int(self.params["strong_crops"])):
            item = items[strong[int(self._rng.integers(len(strong)))]]
            known = np.flatnonzero(item.target != IGNORE_INDEX)
            centre = tuple(int(c) for c in np.unravel_index(int(self._rng.choice(known)), item.target.shape))
            image, target, _ = self._crop(item, centre, dims)
            out = self._run(net, image, device)
            g = _hypergrad.last_layer_grad(out.features, out.logits,
                                           torch.from_numpy(np.asarray(target, np.int64))[None].to(device))
            total = g if total is None else total.add(g)
        return total

    # -- results -------------------------------------------------------------------------------------
    def result_layers(self) -> MethodResult:
        """"weak weights" (gamma painted on each weak instance of image 0), "weak trust" (its instances
        with a gamma table), the mean-gamma curve and a list of the least trusted labels."""
        if self._index is None or self._opt is None or not self._index.keys:
            return MethodResult()
        gam = self._opt.value
        layers: list[ResultLayer] = []
        item = self._items[0] if self._items else None
        lut = self._index.lut[0] if self._index.lut else None
        if item is not None and lut is not None:
            inst, _ = _instance_map(item)
            assert inst is not None
            ids = np.clip(inst, 0, lut.size - 1)
            g = np.where(inst > 0, lut[ids], -1)
            img = np.full(inst.shape, np.nan, np.float32)
            img[g >= 0] = gam[g[g >= 0]]
            present = np.unique(inst[inst > 0])
            layers.append(ResultLayer(name="weak weights", kind="image", data=img, colormap="turbo",
                                      value_range=(0.0, 1.0), opacity=0.6))
            layers.append(ResultLayer(name="weak trust", kind="labels", data=inst.astype(np.int32), opacity=0.4,
                                      table={"index": [0, *present.tolist()],
                                             "gamma": [float("nan"), *[float(gam[lut[v]]) for v in present]]}))
        order = np.argsort(gam, kind="stable")[:LEAST_TRUSTED_SHOWN]
        worst = ", ".join(f"{self._index.keys[g][0]} #{self._index.keys[g][1]} ({gam[g]:.2f})" for g in order)
        message = (f"weak-label trust: {len(gam)} instances, mean {gam.mean():.2f}, "
                   f"{int((gam < 0.25).sum())} distrusted (< 0.25); least trusted: {worst}")
        curves = {"mean weak gamma": Curve(list(self._curve_x), list(self._curve_y))} if self._curve_x else {}
        return MethodResult(layers=tuple(layers), curves=curves, message=message)

    # -- resume --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Weights and their Adam state, keyed by (item name, instance id)."""
        if self._index is None or self._opt is None:
            return {}
        return {"keys": [[n, i] for n, i in self._index.keys], "gamma": torch.from_numpy(self._opt.value.copy()),
                "m": torch.from_numpy(self._opt.m.copy()), "v": torch.from_numpy(self._opt.v.copy()),
                "t": torch.from_numpy(self._opt.t.copy()), "curve_x": list(self._curve_x),
                "curve_y": list(self._curve_y)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (applied to instances with the same item name and id)."""
        if not state or "keys" not in state:
            return
        self._saved = {k: state[k] for k in ("keys", "gamma", "m", "v", "t")}
        self._curve_x = [int(v) for v in state.get("curve_x", [])]
        self._curve_y = [float(v) for v in state.get("curve_y", [])]
        self._index = None  # rebuilt (with the saved weights) at the next step
