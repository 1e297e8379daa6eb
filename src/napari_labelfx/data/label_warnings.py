"""Warnings about training data that is valid but will not teach what the person expects.

Neither case is an error (a person may mean it), but both used to train silently: a single class
teaches nothing to tell apart, and an empty strong layer teaches that everything is background.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Unknown pixels in multi-class (int) and multi-label (uint8) targets.
_IGNORE_INT = -1
_IGNORE_MULTILABEL = 255


def training_data_warnings(items: Sequence[Any], class_names: Sequence[str] | None = None) -> list[str]:
    """One sentence per problem found in engine training items (see ``annotations.TrainingItem``)."""
    warnings: list[str] = []
    seen: set[int] = set()
    any_target = False
    for item in items:
        target = getattr(item, "target", None)
        if target is None:
            continue
        any_target = True
        target = np.asarray(target)
        kind = str(getattr(getattr(item, "kind", ""), "value", getattr(item, "kind", "")))
        name = getattr(item, "name", "image")
        if target.dtype == np.uint8 and target.ndim == np.asarray(item.image).ndim:  # multi-label (K, ...)
            known = target != _IGNORE_MULTILABEL
            positive = np.any((target == 1) & known, axis=tuple(range(1, target.ndim)))
            any_target = False  # one class is fine in multi-label: its negatives are the other side
            if kind == "strong" and not positive.any():
                warnings.append(f"{name}: the strong labels have nothing painted, so they teach that "
                                "everything is background")
            continue
        values = np.unique(target[target != _IGNORE_INT])
        seen.update(int(v) for v in values)
        if kind == "strong" and values.size and np.array_equal(values, [0]):
            warnings.append(f"{name}: the strong labels have nothing painted, so they teach that everything "
                            "is background")
    if any_target and len(seen) == 1:
        (only,) = seen
        label = class_names[only] if class_names is not None and 0 <= only < len(class_names) else f"class {only}"
        warnings.append(f"only {label!r} is labelled in the training data; the model cannot learn to tell "
                        "classes apart: label at least one other class")
    return warnings
