"""Training items with full (strong) masks from a dataset folder (:mod:`napari_labelfx.io.dataset`).

``labelfx train --dataset`` and SISSI's clean source both train on every image of a folder as it is
annotated; this is the one place that turns a folder's masks into targets. (``labelfx eval`` derives
weaker label kinds from the same masks in ``evaluation/derive.py``, which uses :func:`class_map` too.)
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..core.normalize import DEFAULT_NORMALISATION, percentile_normalise
from ..io.dataset import TASKS, EvalDataset, Sample
from .kinds import LabelKind, TrainingItem


def class_map(mask: np.ndarray, task: str) -> np.ndarray:
    """The true target of a full mask: int64 class indices, or uint8 (K+1, ...) with background."""
    if task == "instance":
        return (np.asarray(mask) > 0).astype(np.int64)
    if task == "semantic":
        return np.asarray(mask).astype(np.int64)
    if task == "multilabel":
        m = (np.asarray(mask) > 0).astype(np.uint8)
        bg = (m.max(axis=0) == 0).astype(np.uint8) if m.shape[0] else np.ones(m.shape[1:], np.uint8)
        return np.concatenate([bg[None], m], axis=0)
    raise ValueError(f"unknown task {task!r}; tasks are {list(TASKS)}")


def dataset_class_names(ds: EvalDataset) -> list[str]:
    """Class names in target order: multi-label sets get a background entry first."""
    return ["background", *ds.classes] if ds.multilabel else list(ds.class_names)


def strong_item(sample: Sample, task: str, name: str) -> TrainingItem:
    """One image of a dataset folder with its full mask as the target (normalised with the default)."""
    norm = DEFAULT_NORMALISATION
    return TrainingItem(
        image=percentile_normalise(sample.image, float(norm["low"]), float(norm["high"]), robust=bool(norm["robust"])),
        target=class_map(sample.mask, task),
        kind=LabelKind.STRONG,
        name=str(name),
        extra={"normalisation": dict(norm), "derived_kind": "strong"},
    )


def strong_items(ds: EvalDataset, check: Callable[[str, Sample], None] | None = None) -> list[TrainingItem]:
    """Every image of ``ds`` as a strong training item; ``check(stem, sample)`` may refuse one (raise)."""
    items = []
    for stem in ds.stems:
        smp = ds.load(stem)
        if check is not None:
            check(stem, smp)
        items.append(strong_item(smp, ds.task, stem))
    return items
