"""The harness behind ``labelfx eval``: train a method on a seeded split of a dataset folder, score the test set.

One run: open the folder (:mod:`.dataset`), split it (:mod:`.split`), give ``strong`` training images
their full masks and the others a derived kind (:mod:`.derive`), train with the engine's
:class:`~napari_labelfx.engine.Trainer`, predict the test images with
:class:`~napari_labelfx.inference.Predictor` from the saved model folder (the code path of the GUI)
and compute the metrics of :mod:`napari_labelfx.tools.metrics`. Instance sets are trained
semantically (background vs. object); instances come from
:func:`~napari_labelfx.tools.metrics.instances_from_semantic`.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..annotations import IGNORE_INDEX
from ..tools.metrics import InstanceEvaluator, SemanticEvaluator, instances_from_semantic
from .dataset import EvalDataset, load_dataset, rescale_sample
from .derive import DeriveParams, class_map, derive_item, iter_objects, parse_kind
from .split import make_split

#: Iterations when none are given. Measured on 2 shared CPU cores (small preset, batch 4, 128x128
#: patches, one torch thread): a 20-image 512x512 set, training plus prediction, took 4 minutes
#: (2.6 CPU-minutes), leaving room for a machine twice as loaded (see docs/evaluation.md).
DEFAULT_ITERATIONS = 300
#: With a time budget: the iteration cap and the validation interval (iterations).
BUDGET_ITERATION_CAP = 10_000_000
BUDGET_VAL_EVERY = 50
#: Default patch size per spatial dimensionality when ``patch`` is not given.
DEFAULT_PATCH = {2: (128, 128), 3: (16, 64, 64)}


class EvalError(ValueError):
    """An evaluation run cannot be set up (bad option or dataset)."""


def _json_safe(obj: Any) -> Any:
    """Plain JSON: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """Write ``data`` as indented JSON atomically (temporary file in the same folder, then rename)."""
    from ..io.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_json_safe(data), indent=2) + "\n", encoding="utf-8")
    return path


def _object_scale(masks: list[np.ndarray], task: str) -> float | None:
    """Median object area (pixels) over the given masks, or None without objects."""
    areas: list[int] = []
    for mask in masks:
        areas.extend(o.area for o in iter_objects(mask, task))
    return float(np.median(areas)) if areas else None



def prepare_eval(
    dataset: str | os.PathLike | EvalDataset, strong: int = 3, others: str = "none", test: int | None = None,
    seed: int = 0, scale: float = 1.0, derive_params: DeriveParams | None = None,
) -> tuple[EvalDataset, Any, dict, list, list[str], float]:
    """The seeded split and the training items of an evaluation run (see :func:`run_eval`).

    Returns (dataset, split, training samples by stem, training items, class names, derive seconds).
    """
    ds = dataset if isinstance(dataset, EvalDataset) else load_dataset(dataset)
    others_spec = parse_kind(others)
    split = make_split(ds.stems, strong=strong, test=test, seed=seed)
    scale = float(scale)
    if not 0.0 < scale <= 4.0:
        raise EvalError(f"scale must be in (0, 4], got {scale}")
    samples = {s: rescale_sample(ds.load(s), scale) for s in split.train}
    spatial_ndim = len(next(iter(samples.values())).spatial_shape) if samples else 2
    if spatial_ndim not in (2, 3):
        raise EvalError(f"{ds.root}: images must be 2D or 3D, got {spatial_ndim} spatial dimensions")
    params = derive_params or DeriveParams()
    class_names = (["background", *ds.classes]) if ds.multilabel else ds.class_names
    k = len(class_names)

    # -- training items ------------------------------------------------------------------------------
    t0 = time.perf_counter()
    items = []
    for stem in split.train:
        smp = samples[stem]
        kind = "strong" if stem in split.strong else others_spec
        items.append(
            derive_item(smp.image, smp.mask, ds.task, kind, seed=seed, name=stem, raw=smp.raw,
                        num_classes=None if ds.multilabel else k, params=params)
        )
    derive_seconds = time.perf_counter() - t0
    if not any(it.target is not None or it.tags is not None for it in items):
        raise EvalError(
            f"no training image carries a label (strong={strong}, others={others!r}); give strong > 0 or a kind"
        )
    return ds, split, samples, items, class_names, derive_seconds


@dataclass(frozen=True)
class RunSpec:
    """One evaluation run: what to train on which split, and how to score it (see :func:`run_eval`)."""

    dataset: str | os.PathLike | EvalDataset
    method: str
    strong: int = 3
    others: str = "none"
    test: int | None = None
    seed: int = 0
    iters: int | None = None
    device: str = "auto"
    out: str | os.PathLike | None = None
    preset: str = "small"
    patch: int | None = None
    batch: int | None = None
    scale: float = 1.0
    augment: dict[str, Any] | None = None
    instance_split: str = "none"
    min_size: int | None = None
    max_dets: int = 1000
    derive_params: DeriveParams | None = None
    model_dir: str | os.PathLike | None = None
    time_budget: float | None = None
    method_params: dict[str, Any] = field(default_factory=dict)


def run_eval(
    dataset: str | os.PathLike | EvalDataset,
    method: str,
    strong: int = 3,
    others: str = "none",
    test: int | None = None,
    seed: int = 0,
    iters: int | None = None,
    device: str = "auto",
    out: str | os.PathLike | None = None,
    preset: str = "small",
    patch: int | None = None,
    batch: int | None = None,
    scale: float = 1.0,
    augment: dict[str, Any] | None = None,
    *,
    instance_split: str = "none",
    min_size: int | None = None,
    max_dets: int = 1000,
    derive_params: DeriveParams | None = None,
    model_dir: str | os.PathLike | None = None,
    progress: Any = None,
    time_budget: float | None = None,
    **method_params: Any,
) -> dict:
    """Train ``method`` on a split of a dataset folder and evaluate it on the held-out test images.

    Parameters
    ----------
    dataset : dataset folder (or an opened :class:`EvalDataset`).
    method : training method name (see ``napari_labelfx.methods.available_methods()``).
    strong : training images that keep their full masks.
    others : derived kind of the remaining training images (``none``, ``image-level``, ``scribble``,
        ``box``, ``ellipse``, ``noisy-classical``, ``noisy-drop:F``, ``strong``).
    test : test images (None: ``max(2, round(30 %))``).
    seed : split, derivation and training seed.
    iters : training iterations (None: :data:`DEFAULT_ITERATIONS`).
    device : ``auto``, ``cpu``, ``cuda``, ``mps``.
    out : JSON file to write the result to (atomically).
    preset : model size preset.
    patch : patch edge in pixels (None: 128 in 2D, 16x64x64 in 3D).
    batch : patches per step (None: the engine's default).
    scale : resample images and masks by this factor for training and prediction (e.g. 0.25 trains a
        512x512 image at 128x128); predictions are resized back and scored at the original size.
    instance_split : ``"none"`` or ``"watershed"``: how predicted foreground becomes instances.
    min_size : smallest predicted instance kept (None: 10 % of the median training object area,
        computed from the strong training masks, or without any from the painted training labels,
        at least 10 pixels).
    max_dets : COCO detections kept per test image (reported).
    derive_params : knobs of the label derivations.
    model_dir : keep the trained model folder here (None: a temporary folder, deleted after).
    progress : tqdm-like progress object for training.
    time_budget : train for this many wall-clock seconds instead of an iteration count (``iters``
        then caps the iterations; the report's ``iterations`` says how many were done).
    **method_params : parameters of the training method.

    Returns
    -------
    dict with method, dataset, seed, split sizes and stems, iterations, seconds, device and metrics
    (for ``noisy-*`` labels also ``metrics["training_labels"]``: AP/AR of the training labels against
    the truth, initial and, for label-correcting methods, corrected).
    """
    spec = RunSpec(dataset, method, strong=strong, others=others, test=test, seed=seed, iters=iters,
                   device=device, out=out, preset=preset, patch=patch, batch=batch, scale=scale, augment=augment,
                   instance_split=instance_split, min_size=min_size, max_dets=max_dets,
                   derive_params=derive_params, model_dir=model_dir, time_budget=time_budget,
                   method_params=dict(method_params))
    return evaluate(spec, progress=progress)


def evaluate(spec: RunSpec, progress: Any = None) -> dict:
    """Run ``spec``: derive the training labels, train, predict the test images, score; the report dict.

    ``progress`` is a tqdm-like object for training. See :func:`run_eval` for the meaning of each field.
    """
    import torch

    from ..core.device import select_device
    from ..engine.factory import make_trainer
    from ..inference import Predictor

    t_start = time.perf_counter()
    ds, split, samples, items, class_names, derive_seconds = prepare_eval(
        spec.dataset, strong=spec.strong, others=spec.others, test=spec.test, seed=spec.seed, scale=spec.scale,
        derive_params=spec.derive_params,
    )
    scale = float(spec.scale)
    spatial_ndim = len(next(iter(samples.values())).spatial_shape) if samples else 2
    resolved_device = select_device(spec.device)
    tmp = None if spec.model_dir is not None else tempfile.TemporaryDirectory(prefix="labelfx-eval-")
    try:
        train_dir = Path(spec.model_dir) if spec.model_dir is not None else Path(tmp.name)
        config = _train_config(spec, spatial_ndim, str(resolved_device), train_dir)
        torch.manual_seed(int(spec.seed))
        t0 = time.perf_counter()
        trainer = make_trainer(config, items, class_names, multilabel=ds.multilabel)
        result = trainer.run(progress=progress)
        train_seconds = time.perf_counter() - t0
        folder = result.best_dir or result.last_dir
        if folder is None:
            raise EvalError("training wrote no model folder")

        # -- prediction and metrics --------------------------------------------------------------------
        t0 = time.perf_counter()
        predictor = Predictor.from_folder(folder, device=str(resolved_device))
        metrics, per_image, min_size, min_distance = score_predictor(
            ds, split, samples, items, predictor, scale=scale, instance_split=spec.instance_split,
            min_size=spec.min_size, max_dets=spec.max_dets,
        )
        predict_seconds = time.perf_counter() - t0
        if ds.task == "instance" and split.others and str(parse_kind(spec.others)).startswith("noisy"):
            # how good the labels the network trained on were (and, for label-correcting methods,
            # became): scored against the true masks of the same training images, at training scale
            metrics["training_labels"] = _score_training_labels(
                getattr(trainer, "method", None), items, split, samples, spec.instance_split,
                min_size=max(1, int(round(min_size * scale**spatial_ndim))),
                min_distance=max(int(round(min_distance * scale)), 1), max_dets=spec.max_dets,
            )
    finally:
        if tmp is not None:
            tmp.cleanup()

    seconds = {"total": time.perf_counter() - t_start, "derive": derive_seconds, "train": train_seconds,
               "predict_and_score": predict_seconds}
    report = _json_safe(_report(spec, ds, split, class_names, config, result, trainer, str(resolved_device),
                                seconds, metrics, per_image))
    if spec.out is not None:
        write_json(spec.out, report)
    return report


def _train_config(spec: RunSpec, spatial_ndim: int, device: str, train_dir: Path) -> Any:
    """The engine's ``TrainConfig`` for ``spec``; bad options are an :class:`EvalError`."""
    from ..engine import TrainConfig

    budget = spec.time_budget
    if budget is not None and not (isinstance(budget, (int, float)) and budget > 0):
        raise EvalError(f"time budget must be a positive number of seconds, got {budget!r}")
    iters = spec.iters
    iterations = int(iters) if iters is not None else (BUDGET_ITERATION_CAP if budget else DEFAULT_ITERATIONS)
    if iterations < 1:
        raise EvalError(f"iters must be >= 1, got {iters}")
    if spec.patch is not None:
        if int(spec.patch) < 4:
            raise EvalError(f"patch must be >= 4 pixels, got {spec.patch}")
        patch_size = (int(spec.patch),) * spatial_ndim
    else:
        patch_size = DEFAULT_PATCH[spatial_ndim]
    cfg_kwargs: dict[str, Any] = dict(
        method=spec.method, preset=spec.preset, spatial="2d" if spatial_ndim == 2 else "3d",
        iterations=iterations, patch_size=patch_size, device=device, seed=int(spec.seed),
        preview_every_s=0.0, output_dir=str(train_dir), method_params=dict(spec.method_params),
        val_every=BUDGET_VAL_EVERY if budget else max(iterations // 5, 1),
        log_every=10 if budget else max(min(iterations // 20, 50), 1),
        time_budget_s=None if budget is None else float(budget),
    )
    if spec.batch is not None:
        cfg_kwargs["batch_size"] = int(spec.batch)
    if spec.augment:
        from ..data.augment import AugmentConfig

        known = {f.name for f in fields(AugmentConfig)}
        unknown = sorted(set(spec.augment) - known)
        if unknown:
            raise EvalError(f"unknown augmentation switch(es) {unknown}; known: {sorted(known)}")
        cfg_kwargs["augment"] = dict(spec.augment)
    return TrainConfig(**cfg_kwargs)


def _report(spec: RunSpec, ds: EvalDataset, split: Any, class_names: list[str], config: Any, result: Any,
            trainer: Any, device: str, seconds: dict[str, float], metrics: dict[str, Any],
            per_image: Any) -> dict[str, Any]:
    """The report of a finished run."""
    report: dict[str, Any] = {
        "method": spec.method,
        "dataset": str(ds.root),
        "task": ds.task,
        "classes": class_names,
        "seed": int(spec.seed),
        "others": str(parse_kind(spec.others)),
        "split": {"sizes": split.sizes(), "strong": split.strong, "others": split.others, "test": split.test},
        "iterations": int(result.iterations),
        "iterations_requested": int(config.iterations),
        "time_budget_s": spec.time_budget,
        "stopped_reason": result.stopped_reason,
        # the test images are predicted with the best checkpoint by validation loss: say which one
        "validation": [{"iteration": int(r["iteration"]), "val_loss": r["val_loss"]}
                       for r in result.history if r.get("kind") == "val"],
        "best_iteration": _best_iteration(result.history),
        "preset": spec.preset,
        "patch_size": list(config.patch_size),
        "batch_size": int(config.batch_size),
        "scale": float(spec.scale),
        "augment": dict(config.augment),
        "method_params": dict(spec.method_params),
        "device": device,
        "seconds": seconds,
        "metrics": metrics,
        "per_image": per_image,
    }
    if hasattr(trainer, "snapshot"):  # the default path: which learner was scored, and why
        report["auto"] = trainer.snapshot()
        report["auto"].update({"scale": trainer.scale, "diameter": trainer.diameter})
    return report


def score_predictor(
    ds: EvalDataset, split: Any, samples: dict, items: list, predictor: Any, *, scale: float = 1.0,
    instance_split: str = "none", min_size: int | None = None, max_dets: int = 1000,
) -> tuple[dict[str, Any], list[dict[str, Any]], int, int]:
    """Predict the split's test images with ``predictor`` and score them (the scoring of ``labelfx eval``).

    Returns (metrics, per-image rows, the instance ``min_size`` and ``min_distance`` used).
    """
    spatial_ndim = len(next(iter(samples.values())).spatial_shape) if samples else 2
    class_names = (["background", *ds.classes]) if ds.multilabel else ds.class_names
    # multi-label channel 0 is the derived background: scores cover the dataset's own classes
    semantic = SemanticEvaluator(class_names, multilabel=ds.multilabel, background_index=0)
    instance = InstanceEvaluator(max_dets=max_dets) if ds.task == "instance" else None
    # detection view (SISSI-style): the same instances matched by their bounding boxes
    instance_box = InstanceEvaluator(max_dets=max_dets, iou_type="box") if instance is not None else None
    min_distance = 2
    if instance is not None:
        # object size as a person would state it: from the strong training masks
        area = _object_scale([samples[s].mask for s in split.strong], ds.task)
        if area is None:
            # no full masks: take the size from the objects the person did paint (e.g. noisy labels)
            painted = [np.where(it.target == IGNORE_INDEX, 0, it.target) for it in items
                       if it.target is not None and it.target.ndim == spatial_ndim]
            area = _object_scale(painted, "semantic")
        if area:  # instances are found at the original resolution
            area = area / scale**spatial_ndim
        if min_size is None:
            min_size = max(10, int(0.1 * area)) if area else 10
        if area:
            diameter = 2 * math.sqrt(area / math.pi) if spatial_ndim == 2 else 2 * (3 * area / (4 * math.pi)) ** (1 / 3)
            min_distance = max(int(diameter / 4), 2)
    per_image = []
    for stem in split.test:
        smp = ds.load(stem)
        pred = predictor(rescale_sample(smp, scale).image if scale != 1.0 else smp.image)
        truth = class_map(smp.mask, ds.task)
        labels, probabilities, confidence = (np.asarray(a) for a in (pred.labels, pred.probabilities, pred.confidence))
        if scale != 1.0:
            labels, probabilities, confidence = _to_original_size(
                probabilities, smp.spatial_shape, ds.multilabel, predictor.threshold,
            )
        semantic.add(truth, labels)
        row: dict[str, Any] = {"stem": stem}
        if instance is not None:
            fg = probabilities[1:].sum(axis=0) if probabilities.shape[0] > 1 else confidence
            inst = instances_from_semantic(
                labels, conf=fg, min_size=min_size, split=instance_split, min_distance=min_distance,
            )
            instance.add(smp.mask, inst.labels, scores=inst.scores)
            instance_box.add(smp.mask, inst.labels, scores=inst.scores)
            row.update(n_true=int(np.unique(smp.mask[smp.mask > 0]).size), n_pred=int(inst.labels.max()))
        per_image.append(row)
    metrics = semantic.summary()
    if instance is not None:
        inst_summary = instance.summary()
        metrics.update({k2: inst_summary[k2] for k2 in ("AP50", "AP75", "AP", "AR", "max_dets")})
        metrics["instances"] = {
            **inst_summary, "split": instance_split, "min_size": int(min_size), "min_distance": min_distance,
            "score": "mean foreground probability inside the instance",
        }
        box = instance_box.summary()
        metrics["instances_box"] = {k2: box[k2] for k2 in ("AP50", "AP75", "AP", "AR", "max_dets", "iou_type")}
    return metrics, per_image, int(min_size) if min_size is not None else 0, min_distance


def _best_iteration(history: list[dict]) -> int | None:
    """Iteration of the lowest validation loss (the checkpoint that was scored), None without validation."""
    vals = [r for r in history if r.get("kind") == "val" and r.get("val_loss") is not None]
    return int(min(vals, key=lambda r: float(r["val_loss"]))["iteration"]) if vals else None


def _score_training_labels(
    method: Any, items: list, split: Any, samples: dict, instance_split: str, *,
    min_size: int, min_distance: int, max_dets: int,
) -> dict[str, Any]:
    """AP/AR of the non-strong training labels against the truth: as given, and as corrected.

    ``initial`` scores the targets the run started from; ``corrected`` (only for methods that
    correct labels, i.e. expose ``corrected_targets()``) the targets after the last correction.
    """
    index = {it.name: i for i, it in enumerate(items)}
    rows = [index[s] for s in split.others if s in index and items[index[s]].target is not None]
    if not rows:
        return {}
    truths = [samples[items[i].name].mask for i in rows]
    views: dict[str, list] = {"initial": [items[i].target for i in rows]}
    corrected = getattr(method, "corrected_targets", None)
    if callable(corrected):
        targets = corrected()
        if len(targets) == len(items) and all(targets[i] is not None for i in rows):
            views["corrected"] = [targets[i] for i in rows]
    out: dict[str, Any] = {"images": len(rows)}
    for name, targets in views.items():
        ev = InstanceEvaluator(max_dets=max_dets)
        for truth, target in zip(truths, targets):
            sem = np.where(np.asarray(target) == IGNORE_INDEX, 0, np.asarray(target))
            inst = instances_from_semantic(sem, min_size=min_size, split=instance_split, min_distance=min_distance)
            ev.add(truth, inst.labels, scores=inst.scores)
        summ = ev.summary()
        out[name] = {k: summ[k] for k in ("AP50", "AP75", "AP", "AR")}
    start = getattr(method, "start_epoch", None)
    if isinstance(start, dict):
        out["correction_start_epoch"] = {str(c): int(e) for c, e in start.items()}
    return out


def _to_original_size(
    probabilities: np.ndarray, shape: tuple[int, ...], multilabel: bool, threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resize class probabilities predicted at a coarser scale to ``shape``; return labels, probs, confidence.

    Probabilities are interpolated linearly and the labels recomputed from them (the predictor's own
    rule), which gives smoother borders than nearest-neighbour upsampling of the labels.
    """
    from skimage.transform import resize

    from ..inference.labels import probabilities_to_labels

    probs = resize(probabilities.astype(np.float32), (probabilities.shape[0], *shape), order=1,
                   anti_aliasing=False, preserve_range=True)
    labels, confidence = probabilities_to_labels(probs, multilabel, threshold)
    return labels, probs, confidence
