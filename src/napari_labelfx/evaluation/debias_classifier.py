"""Image-level classifier with skin-type debiasing heads (LNTL / TABE / CLGR), Qt-free.

A UNet encoder (the segmentation network's contracting path, so a trained segmentation model's
weights could seed it) is pooled to one feature vector per image; the **main head** predicts the
binary task (e.g. melanoma vs the rest, from a ``labels.csv`` column) and the **bias head** the
Fitzpatrick skin type, whose influence on the encoder is removed by one of the schemes in
:mod:`napari_labelfx.models.debias`. Skin types come from a CSV column (1..6 or I..VI) or from the
ITA estimator (:func:`napari_labelfx.tools.skin_tone.estimate_skin_tone`).

Typical use::

    data = load_classification_data("derm_ph2", "diagnosis", positive="melanoma")
    report = train_and_evaluate(data, ClassifierConfig(scheme="tabe", iterations=200))

The report gives AUC and accuracy on held-out images overall and per skin type. On a few dozen
images this checks the mechanics only: a fairness gain cannot be shown (see
docs/benchmarks.md, section "Domain tools").
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.debias import (
    TABE,
    UNKNOWN_TYPE,
    BiasHead,
    MainHead,
    bce_main_loss,
    debias_step,
    inverse_frequency_weights,
    make_scheme,
)

SCHEMES = ("none", "lntl", "tabe", "clgr")
_ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4, "V": 5, "VI": 6}


class ClassifierDataError(ValueError):
    """The dataset, label column or skin-type column cannot be used (the message names which)."""


@dataclass
class ClassificationData:
    """Images with a binary target and skin-type labels.

    Attributes
    ----------
    images : float32 (N, 3, S, S) RGB in [0, 1], resized to ``S``.
    targets : float32 (N,) 0/1.
    skin_types : int64 (N,) type index 0..5 (type I = 0), ``UNKNOWN_TYPE`` (-1) when unknown.
    names : image stems.
    positive : the label value counted as 1.
    skin_source : ``"estimator"`` or the CSV column the types came from.
    """

    images: np.ndarray
    targets: np.ndarray
    skin_types: np.ndarray
    names: list[str]
    positive: str
    skin_source: str


def parse_skin_type(value: Any) -> int:
    """Type index 0..5 from ``1..6`` or ``I..VI``; ``UNKNOWN_TYPE`` for a blank value."""
    text = str(value).strip().upper()
    if text in ("", "NAN", "NONE"):
        return UNKNOWN_TYPE
    if text in _ROMAN:
        return _ROMAN[text] - 1
    try:
        k = int(float(text))
    except ValueError:
        raise ClassifierDataError(f"skin type {value!r} is neither 1..6 nor I..VI") from None
    if not 1 <= k <= 6:
        raise ClassifierDataError(f"skin type {value!r} is outside 1..6")
    return k - 1


def load_classification_data(
    dataset: str | os.PathLike,
    label_column: str,
    positive: str | None = None,
    skin_column: str | None = None,
    image_size: int = 128,
) -> ClassificationData:
    """Read a dataset folder (images + ``labels.csv``) for :func:`train_and_evaluate`.

    Parameters
    ----------
    dataset : folder with ``images/`` and ``labels.csv`` (see ``evaluation.dataset``).
    label_column : the ``labels.csv`` column holding the image-level class.
    positive : the value that counts as 1 (None: the least frequent value; ties: alphabetical first).
    skin_column : a column with Fitzpatrick types (1..6 or I..VI); None: estimate them by ITA.
    image_size : images are resized (area interpolation) to this square side.
    """
    import cv2

    from ..tools.skin_tone import estimate_skin_tone
    from .dataset import load_dataset

    ds = load_dataset(dataset)
    images, values, types, names = [], [], [], []
    for stem in ds.stems:
        smp = ds.load(stem)
        if label_column not in smp.labels:
            raise ClassifierDataError(f"{ds.root}: labels.csv has no column {label_column!r} for image {stem!r}")
        raw = np.asarray(smp.raw)
        if raw.ndim != 3 or raw.shape[-1] < 3:
            raise ClassifierDataError(f"{ds.image_path(stem)}: expected an RGB image, got shape {raw.shape}")
        rgb = raw[..., :3]
        if rgb.dtype != np.uint8:
            hi = float(rgb.max()) or 1.0
            rgb = np.clip(rgb.astype(np.float32) * (255.0 / hi), 0, 255).astype(np.uint8)
        if skin_column is None:
            types.append(estimate_skin_tone(rgb, name=stem).fitzpatrick - 1)
        else:
            if skin_column not in smp.labels:
                raise ClassifierDataError(f"{ds.root}: labels.csv has no column {skin_column!r} for image {stem!r}")
            types.append(parse_skin_type(smp.labels[skin_column]))
        small = cv2.resize(rgb, (image_size, image_size), interpolation=cv2.INTER_AREA)
        images.append(small.transpose(2, 0, 1).astype(np.float32) / 255.0)
        values.append(str(smp.labels[label_column]).strip())
        names.append(stem)
    distinct = sorted(set(values))
    if len(distinct) < 2:
        raise ClassifierDataError(f"{ds.root}: column {label_column!r} has fewer than two values ({distinct})")
    if positive is None:
        counts = {v: values.count(v) for v in distinct}
        positive = min(distinct, key=lambda v: (counts[v], v))
    elif positive not in distinct:
        raise ClassifierDataError(f"{ds.root}: value {positive!r} not in column {label_column!r} ({distinct})")
    targets = np.array([v == positive for v in values], dtype=np.float32)
    return ClassificationData(np.stack(images), targets, np.asarray(types, dtype=np.int64), names, positive,
                              "estimator" if skin_column is None else skin_column)


@dataclass
class ClassifierConfig:
    """Settings of :func:`train_and_evaluate`.

    Attributes
    ----------
    scheme : ``"none"`` (main head only), ``"lntl"``, ``"tabe"`` or ``"clgr"``.
    iterations, batch_size, lr : AdamW training of encoder + main head (and of the bias head).
    confusion_lr : SGD learning rate of the separate confusion step (TABE/CLGR; 3e-3 in the source).
    width, depth : UNet encoder size.
    n_types : skin types of the bias head (6 Fitzpatrick types).
    test_fraction : share of images held out (stratified by target) for the report.
    seed : split, initialisation and batch order.
    device : torch device string.
    """

    scheme: str = "tabe"
    iterations: int = 200
    batch_size: int = 8
    lr: float = 1e-3
    confusion_lr: float = TABE.CONFUSION_LR
    width: int = 16
    depth: int = 3
    n_types: int = 6
    test_fraction: float = 0.3
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.scheme = str(self.scheme).lower()
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown debiasing scheme {self.scheme!r}; choose one of {list(SCHEMES)}")
        if self.iterations < 1 or self.batch_size < 1 or not 0 < self.test_fraction < 1:
            raise ValueError("iterations and batch_size must be >= 1 and test_fraction in (0, 1)")


class DebiasClassifier(nn.Module):
    """UNet encoder -> global average pool -> main head (+ bias head)."""

    def __init__(self, width: int = 16, depth: int = 3, n_types: int = 6, in_channels: int = 3) -> None:
        super().__init__()
        from ..models import build_model
        from ..models.config import ModelConfig

        self.encoder = build_model(ModelConfig(in_channels=in_channels, num_classes=2, width=width, depth=depth))
        feat = int(self.encoder.decoder_channels[0])
        self.main_head = MainHead(feat, 1)
        self.bias_head = BiasHead(feat, n_types)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled bottleneck features (B, F)."""
        return self.encoder.encode(x).flatten(2).mean(dim=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(features, main logits (B,), bias logits (B, K))``."""
        f = self.features(x)
        return f, self.main_head(f).reshape(-1), self.bias_head(f)


def stratified_split(targets: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices with each target value split in the same proportion (>= 1 test each)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for value in np.unique(targets):
        idx = rng.permutation(np.flatnonzero(targets == value))
        n_test = min(max(1, int(round(test_fraction * idx.size))), max(idx.size - 1, 0))
        test += idx[:n_test].tolist()
        train += idx[n_test:].tolist()
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(test, dtype=np.int64))


def auc_score(targets: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank statistic (ties count half); NaN when only one class is present."""
    t = np.asarray(targets) > 0.5
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = s[t], s[~t]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (pos.size * neg.size))


def _metrics(targets: np.ndarray, probs: np.ndarray, types: np.ndarray) -> dict[str, Any]:
    pred = probs >= 0.5
    out: dict[str, Any] = {"n": int(targets.size), "auc": auc_score(targets, probs),
                           "accuracy": float((pred == (targets > 0.5)).mean()) if targets.size else float("nan"),
                           "per_skin_type": {}}
    for k in sorted(set(types.tolist())):
        sel = types == k
        label = "unknown" if k == UNKNOWN_TYPE else ("I", "II", "III", "IV", "V", "VI")[k]
        out["per_skin_type"][label] = {"n": int(sel.sum()), "auc": auc_score(targets[sel], probs[sel]),
                                       "accuracy": float((pred[sel] == (targets[sel] > 0.5)).mean())}
    return out


def train_classifier(
    data: ClassificationData, train_idx: Sequence[int], config: ClassifierConfig, log: Any = None
) -> tuple[DebiasClassifier, list[dict[str, float]]]:
    """Train a :class:`DebiasClassifier` on ``train_idx``; returns the model and the loss history."""
    cfg = config
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 7])
    device = torch.device(cfg.device)
    model = DebiasClassifier(cfg.width, cfg.depth, cfg.n_types).to(device)
    idx = np.asarray(train_idx, dtype=np.int64)
    if idx.size == 0:
        raise ClassifierDataError("no training image")
    x_all = torch.from_numpy(data.images[idx]).to(device)
    y_all = torch.from_numpy(data.targets[idx]).to(device)
    t_all = torch.from_numpy(data.skin_types[idx]).to(device)
    main_params = list(model.encoder.parameters()) + list(model.main_head.parameters())
    main_opt = torch.optim.AdamW(main_params, lr=cfg.lr, weight_decay=1e-4)
    bias_opt = torch.optim.AdamW(model.bias_head.parameters(), lr=cfg.lr)
    scheme = None
    conf_opt = None
    if cfg.scheme != "none":
        known = data.skin_types[idx]
        weights = inverse_frequency_weights(known, cfg.n_types) if (known != UNKNOWN_TYPE).any() else None
        scheme = make_scheme(cfg.scheme, model.bias_head, class_weights=weights)
        if cfg.scheme in ("tabe", "clgr"):
            # the source's separate "confusion" optimiser: plain SGD on the encoder only
            conf_opt = torch.optim.SGD(model.encoder.parameters(), lr=cfg.confusion_lr)
    history: list[dict[str, float]] = []
    model.train()
    for it in range(cfg.iterations):
        b = rng.choice(idx.size, size=min(cfg.batch_size, idx.size), replace=idx.size < cfg.batch_size)
        x = x_all[b]
        # flips and quarter turns: dermoscopy has no preferred orientation
        if rng.random() < 0.5:
            x = torch.flip(x, dims=(-1,))
        x = torch.rot90(x, int(rng.integers(4)), dims=(-2, -1))
        feats = model.features(x)
        main_logits = model.main_head(feats).reshape(-1)
        if scheme is None:
            loss = bce_main_loss(main_logits, y_all[b])
            main_opt.zero_grad(set_to_none=True)
            loss.backward()
            main_opt.step()
            rec = {"iteration": it + 1, "main": float(loss.detach())}
        else:
            losses = scheme(feats, main_logits, y_all[b], t_all[b])
            debias_step(losses, main_opt, bias_opt, conf_opt)
            rec = {"iteration": it + 1, **losses.as_dict()}
        if not all(math.isfinite(v) for v in rec.values()):
            raise FloatingPointError(f"classifier loss became non-finite at iteration {it + 1}: {rec}")
        history.append(rec)
        if log is not None and (it + 1) % max(cfg.iterations // 10, 1) == 0:
            log(f"iteration {it + 1}/{cfg.iterations}: " + ", ".join(f"{k}={v:.4f}" for k, v in rec.items() if k != "iteration"))
    model.eval()
    return model, history


@torch.no_grad()
def predict_probabilities(model: DebiasClassifier, images: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Main-head probabilities (N,) of images (N, 3, S, S)."""
    model.eval()
    out = []
    for i in range(0, len(images), 16):
        x = torch.from_numpy(images[i:i + 16]).to(device)
        out.append(torch.sigmoid(model(x)[1]).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def train_and_evaluate(data: ClassificationData, config: ClassifierConfig, log: Any = None) -> dict[str, Any]:
    """Seeded stratified split, training, and test AUC/accuracy overall and per skin type."""
    train_idx, test_idx = stratified_split(data.targets, config.test_fraction, config.seed)
    model, history = train_classifier(data, train_idx, config, log)
    probs = predict_probabilities(model, data.images[test_idx], config.device)
    return {
        "config": asdict(config),
        "positive": data.positive,
        "skin_source": data.skin_source,
        "n_train": int(train_idx.size),
        "n_test": int(test_idx.size),
        "skin_type_counts": {t: int((data.skin_types == i).sum()) for i, t in enumerate(("I", "II", "III", "IV", "V", "VI"))},
        "test": _metrics(data.targets[test_idx], probs, data.skin_types[test_idx]),
        "final_losses": history[-1] if history else {},
        "test_images": [data.names[i] for i in test_idx],
    }
