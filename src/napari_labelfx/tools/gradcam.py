"""Grad-CAM saliency maps and the pseudo-masks CheXseg derives from them (Qt-free, torch + numpy).

Grad-CAM (Selvaraju et al. 2017): for class c and feature maps A_k,
``alpha_k = mean_spatial(d logit_c / d A_k)`` and ``map_c = ReLU(sum_k alpha_k A_k)``, upsampled to
the image. CheXseg (Gadgil et al. 2021) normalises each map by its maximum, thresholds it per class
(the threshold that maximises IoU on the strongly labelled images) and fills holes.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

__all__ = [
    "GradCamError",
    "best_thresholds",
    "grad_cam",
    "normalise_maps",
    "otsu_threshold",
    "pseudo_mask",
    "saliency_from_model",
    "unet_grad_cam",
]

#: Default grid of candidate thresholds (fractions of each map's maximum).
THRESHOLD_GRID = tuple(float(t) for t in np.round(np.linspace(0.05, 0.95, 19), 3))


class GradCamError(ValueError):
    """Grad-CAM input (model, image, classes, maps) is unusable."""


def grad_cam(
    features: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
    classes: Sequence[int],
    size: Sequence[int] | None = None,
) -> torch.Tensor:
    """Grad-CAM maps of ``classes`` for features ``(B, F, *spatial)`` and an image head.

    Parameters
    ----------
    features : activations A (any graph is cut: gradients flow only from ``head``).
    head : maps features to image-level logits (B, K).
    classes : class indices to explain.
    size : upsample the maps (bilinear/trilinear) to this spatial size; None keeps the feature size.

    Returns
    -------
    (B, len(classes), *size) non-negative maps (not normalised).
    """
    if features.ndim not in (4, 5):
        raise GradCamError(f"grad_cam expects features (B, F, H, W) or (B, F, D, H, W), got {tuple(features.shape)}")
    a = features.detach().float().requires_grad_(True)
    with torch.enable_grad():
        logits = head(a)
        if logits.ndim != 2:
            raise GradCamError(f"the image head must return (B, K) logits, got {tuple(logits.shape)}")
        maps = []
        for c in classes:
            if not 0 <= int(c) < logits.shape[1]:
                raise GradCamError(f"class {c} is out of range for {logits.shape[1]} image-level logits")
            (grad,) = torch.autograd.grad(logits[:, int(c)].sum(), a, retain_graph=True)
            alpha = grad.flatten(2).mean(dim=2)  # (B, F)
            weighted = (alpha.reshape(*alpha.shape, *([1] * (a.ndim - 2))) * a).sum(dim=1)
            maps.append(torch.relu(weighted).detach())
    out = torch.stack(maps, dim=1) if maps else a.new_zeros((a.shape[0], 0, *a.shape[2:]))
    if size is not None and tuple(out.shape[2:]) != tuple(size) and out.shape[1] > 0:
        mode = "bilinear" if out.ndim == 4 else "trilinear"
        out = F.interpolate(out, size=tuple(int(s) for s in size), mode=mode, align_corners=False).clamp_min(0)
    return out


def unet_grad_cam(
    model: torch.nn.Module,
    image: np.ndarray,
    classes: Sequence[int] | None = None,
    input_size: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM of a UNet with an image head (``model.encode`` / ``model.classify``) on one image.

    Parameters
    ----------
    model : a network with ``encode(x)`` (bottleneck features) and ``classify(features)``.
    image : (C, *spatial) float32, normalised like the training images.
    classes : classes to explain (default: all image-level outputs).
    input_size : resize the image to this spatial size first (the scale the classifier learned);
        the maps are returned at the image's own size either way.
    device : where to run.

    Returns
    -------
    maps (len(classes), *spatial) float32 and image-level probabilities (K,) float32 (sigmoid).
    """
    if not hasattr(model, "encode") or not hasattr(model, "classify"):
        raise GradCamError("Grad-CAM needs a model with encode() and classify() (a UNet built with image_head=True)")
    if getattr(model, "image_head", True) is None:
        raise GradCamError("this model has no image-level head: train it with an image head (e.g. method chexseg)")
    image = np.asarray(image, dtype=np.float32)
    spatial = tuple(image.shape[1:])
    x = torch.from_numpy(np.ascontiguousarray(image))[None].to(device)
    if input_size is not None and tuple(input_size) != spatial:
        x = F.interpolate(x, size=tuple(int(s) for s in input_size), mode="area")
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            feats = model.encode(x)
            probs = torch.sigmoid(model.classify(feats).float())[0]
        if classes is None:
            classes = list(range(probs.shape[0]))
        maps = grad_cam(feats, model.classify, classes, size=spatial)
    finally:
        model.train(was)
    return maps[0].cpu().numpy().astype(np.float32), probs.cpu().numpy().astype(np.float32)


def normalise_maps(maps: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Each map (first axis) divided by its maximum; an all-zero map stays zero."""
    maps = np.asarray(maps, dtype=np.float32)
    peak = maps.reshape(maps.shape[0], -1).max(axis=1) if maps.size else np.zeros(0, np.float32)
    scale = np.where(peak > eps, peak, 1.0).reshape(-1, *([1] * (maps.ndim - 1)))
    return (maps / scale).astype(np.float32)


def _binary(map_: np.ndarray, threshold: float, fill_holes: bool) -> np.ndarray:
    mask = map_ >= threshold
    if fill_holes and mask.any():
        mask = ndi.binary_fill_holes(mask)
    return mask


def otsu_threshold(map_: np.ndarray) -> float:
    """Otsu's threshold of a normalised map (the authors' code's choice when no masks are at hand)."""
    from skimage.filters import threshold_otsu

    values = np.asarray(map_, dtype=np.float32).ravel()
    if values.size == 0 or float(values.max()) == float(values.min()):
        return 0.5
    return float(threshold_otsu(values))


def best_thresholds(
    maps: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    known: Sequence[np.ndarray] | None = None,
    grid: Sequence[float] = THRESHOLD_GRID,
    fill_holes: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class threshold maximising IoU (pooled over images) between thresholded maps and masks.

    Parameters
    ----------
    maps : per image, normalised maps (K, *spatial).
    truths : per image, boolean masks (K, *spatial) of the same classes.
    known : per image, boolean (*spatial) pixels whose truth is known (default: all).
    grid : candidate thresholds.
    fill_holes : fill holes before comparing (as the pseudo-masks will be).

    Returns
    -------
    thresholds (K,) (NaN for a class no image shows) and their IoU (K,).
    """
    if len(maps) != len(truths) or not maps:
        raise GradCamError(f"best_thresholds needs as many maps as masks (> 0), got {len(maps)} and {len(truths)}")
    k = maps[0].shape[0]
    inter = np.zeros((k, len(grid)))
    union = np.zeros((k, len(grid)))
    seen = np.zeros(k, bool)
    for i, (m, t) in enumerate(zip(maps, truths)):
        if m.shape != t.shape:
            raise GradCamError(f"image {i}: maps {m.shape} and masks {t.shape} differ")
        kn = np.ones(m.shape[1:], bool) if known is None else np.asarray(known[i], bool)
        for c in range(k):
            truth = np.asarray(t[c], bool) & kn
            seen[c] |= bool(truth.any())
            for j, thr in enumerate(grid):
                pred = _binary(m[c], float(thr), fill_holes) & kn
                inter[c, j] += np.count_nonzero(pred & truth)
                union[c, j] += np.count_nonzero(pred | truth)
    iou = inter / np.maximum(union, 1)
    best = iou.argmax(axis=1)
    thresholds = np.array([grid[b] if s else np.nan for b, s in zip(best, seen)], dtype=np.float64)
    return thresholds, iou[np.arange(k), best]


def pseudo_mask(
    maps: np.ndarray,
    thresholds: Sequence[float],
    present: Sequence[bool] | None = None,
    multilabel: bool = False,
    fill_holes: bool = True,
) -> np.ndarray:
    """Pseudo-mask from normalised maps of classes 0..K-1.

    Multi-class (``multilabel=False``): the maps are those of classes 1..K (the foreground classes,
    ``maps[i]`` explains class ``i + 1``); a pixel takes the foreground class whose thresholded map
    covers it (the highest map where several do), else background 0. Returns int64 (*spatial).

    Multi-label: one 0/1 channel per class. Returns uint8 (K, *spatial).

    ``present`` (per map) drops classes the image is tagged without.
    """
    maps = np.asarray(maps, dtype=np.float32)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape != (maps.shape[0],):
        raise GradCamError(f"{maps.shape[0]} maps but {thresholds.size} thresholds")
    keep = np.ones(maps.shape[0], bool) if present is None else np.asarray(present, bool)
    masks = np.stack([
        _binary(maps[c], float(thresholds[c]), fill_holes) & bool(keep[c]) for c in range(maps.shape[0])
    ]) if maps.shape[0] else np.zeros((0, *maps.shape[1:]), bool)
    if multilabel:
        return masks.astype(np.uint8)
    out = np.zeros(maps.shape[1:], np.int64)
    if masks.shape[0] == 0:
        return out
    scored = np.where(masks, maps, -1.0)
    best = scored.argmax(axis=0)
    covered = masks.any(axis=0)
    out[covered] = best[covered] + 1
    return out


def saliency_from_model(
    folder: str,
    image: np.ndarray,
    threshold: float | None = None,
    device: str = "cpu",
) -> dict:
    """Grad-CAM saliency maps and a pseudo-mask of a raw 2D image, from a trained model folder.

    Parameters
    ----------
    folder : model folder of a network with an image head (e.g. trained with method ``chexseg``).
    image : raw image (C, Y, X), normalised here as the model's ``config.json`` says.
    threshold : fraction of each map's maximum; None: Otsu's threshold per map.
    device : where to run.

    Returns
    -------
    dict with ``maps`` (n, Y, X) normalised saliency, ``class_names`` (n names: the foreground
    classes, or every class when multi-label), ``mask`` (int64 (Y, X) class indices, or uint8
    (n, Y, X) when multi-label), ``probs`` (image-level probabilities of those classes),
    ``thresholds`` and ``multilabel``.
    """
    from ..core.normalize import percentile_normalise
    from ..models.checkpoint import load_model

    image = np.asarray(image)
    if image.ndim != 3:
        raise GradCamError(f"saliency needs a 2D image (C, Y, X), got shape {image.shape}")
    model, config = load_model(folder, device=device)
    if getattr(model, "image_head", None) is None:
        raise GradCamError(f"{folder}: the model has no image-level head; train it with method 'chexseg'")
    multilabel = bool(config.get("multilabel", False))
    names = list(config.get("class_names") or [f"class {i}" for i in range(model.config.num_classes)])
    classes = list(range(len(names))) if multilabel else list(range(1, len(names)))
    norm = config.get("normalisation") or {"low": 1.0, "high": 99.8}
    x = percentile_normalise(image.astype(np.float32), float(norm["low"]), float(norm["high"]))
    patch = (config.get("train_config") or {}).get("patch_size")
    input_size = tuple(int(s) for s in patch) if patch and len(patch) == 2 else None
    maps, probs = unet_grad_cam(model, x, classes, input_size, device)
    maps = normalise_maps(maps)
    thresholds = [float(threshold) if threshold is not None else otsu_threshold(m) for m in maps]
    mask = pseudo_mask(maps, thresholds, multilabel=multilabel)
    return {"maps": maps, "class_names": [names[c] for c in classes], "mask": mask,
            "probs": probs[classes], "thresholds": thresholds, "multilabel": multilabel}
