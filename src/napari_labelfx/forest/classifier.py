"""A random forest on filter features (scikit-learn), stored as plain arrays so loading runs no code.

Multi-class targets train one forest over the classes that have painted pixels; multi-label targets
(K, ...) train one binary forest per class on the pixels known for that class. The trees are written
as numeric arrays (node children, split feature, threshold, leaf values) in an ``.npz`` read with
``allow_pickle=False`` and rebuilt into scikit-learn trees, so a model file can hold nothing but numbers.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


class ForestError(ValueError):
    """Forest settings, training data or a stored forest are unusable."""


@dataclass(frozen=True)
class ForestSettings:
    """Settings of the pixel forest.

    Attributes
    ----------
    kind : ``"extra"`` (extremely randomized trees: random split thresholds, 5-10x faster to train
        than a random forest at the same accuracy on filter features, measured in docs/benchmarks.md)
        or ``"random"`` (Breiman's random forest, ilastik's classifier).
    n_trees : trees per forest (ilastik uses 100).
    max_depth : depth limit per tree (None: grow until leaves are pure or too small).
    min_samples_leaf : smallest leaf; above 1 it smooths the probabilities and shrinks the model.
    max_samples : labelled pixels drawn for training (per class at least ``max_samples / (2 K)``
        when that many are painted, so thin scribbles of a rare class are not drowned out).
    seed : random seed of sampling and trees.
    n_jobs : worker threads of scikit-learn (None: all cores).
    """

    kind: str = "extra"
    n_trees: int = 64
    max_depth: int | None = None
    min_samples_leaf: int = 2
    max_samples: int = 40_000
    seed: int = 0
    n_jobs: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("extra", "random"):
            raise ForestError(f"forest setting kind must be 'extra' or 'random', got {self.kind!r}")
        if not isinstance(self.n_trees, int) or isinstance(self.n_trees, bool) or not 1 <= self.n_trees <= 1000:
            raise ForestError(f"forest setting n_trees must be an integer in 1..1000, got {self.n_trees!r}")
        if self.max_depth is not None and (not isinstance(self.max_depth, int) or self.max_depth < 1):
            raise ForestError(f"forest setting max_depth must be None or an integer >= 1, got {self.max_depth!r}")
        if not isinstance(self.min_samples_leaf, int) or self.min_samples_leaf < 1:
            raise ForestError(f"forest setting min_samples_leaf must be an integer >= 1, got {self.min_samples_leaf!r}")
        if not isinstance(self.max_samples, int) or self.max_samples < 10:
            raise ForestError(f"forest setting max_samples must be an integer >= 10, got {self.max_samples!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _make_forest(settings: ForestSettings, seed_offset: int = 0) -> Any:
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    cls = ExtraTreesClassifier if settings.kind == "extra" else RandomForestClassifier
    return cls(
        n_estimators=settings.n_trees, max_depth=settings.max_depth, min_samples_leaf=settings.min_samples_leaf,
        max_features="sqrt", n_jobs=settings.n_jobs if settings.n_jobs is not None else (os.cpu_count() or 1),
        random_state=settings.seed + seed_offset,
    )


class PixelForest:
    """Random forest(s) mapping per-pixel features to class probabilities.

    Parameters
    ----------
    num_classes : output classes K (multi-class: including background; multi-label: channels).
    multilabel : one binary forest per class instead of one multi-class forest.
    settings : :class:`ForestSettings`.
    """

    def __init__(self, num_classes: int, multilabel: bool = False, settings: ForestSettings | None = None) -> None:
        if num_classes < 1:
            raise ForestError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.multilabel = bool(multilabel)
        self.settings = settings or ForestSettings()
        #: multi-class: [forest]; multi-label: one forest per class (None where a class was never painted)
        self.forests: list[Any | None] = []
        #: class indices each forest's probability columns stand for
        self.columns: list[np.ndarray] = []
        self.n_features: int = 0

    @property
    def fitted(self) -> bool:
        return bool(self.forests) and any(f is not None for f in self.forests)

    def fit(self, x: np.ndarray, y: np.ndarray) -> PixelForest:
        """Train on features ``x`` (N, F) and labels ``y``: (N,) class indices, or (N, K) 0/1/255."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ForestError(f"no labelled pixels to train the forest on (features of shape {x.shape})")
        self.n_features = int(x.shape[1])
        self.forests, self.columns = [], []
        if not self.multilabel:
            y = np.asarray(y).astype(np.int64, copy=False)
            classes = np.unique(y)
            if classes.size < 2:
                raise ForestError(
                    f"the forest needs painted pixels of at least two classes, got only class {classes.tolist()}"
                )
            forest = _make_forest(self.settings).fit(x, y)
            self.forests.append(forest)
            self.columns.append(np.asarray(forest.classes_, np.int64))
            return self
        y = np.asarray(y)
        for k in range(self.num_classes):
            known = y[:, k] != 255
            yk = y[known, k]
            if yk.size == 0 or np.unique(yk).size < 2:
                # a class painted only one way (or not at all): a constant answer, no forest
                self.forests.append(None)
                self.columns.append(np.asarray([int(yk[0]) if yk.size else 0], np.int64))
                continue
            forest = _make_forest(self.settings, seed_offset=k).fit(x[known], yk)
            self.forests.append(forest)
            self.columns.append(np.asarray(forest.classes_, np.int64))
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probabilities (N, K) float32 for features ``x`` (N, F)."""
        if not self.fitted:
            raise ForestError("the forest is not trained yet")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ForestError(f"the forest takes {self.n_features} features per pixel, got an array of shape {x.shape}")
        out = np.zeros((x.shape[0], self.num_classes), np.float32)
        if x.shape[0] == 0:
            return out
        if not self.multilabel:
            p = self.forests[0].predict_proba(x)
            out[:, self.columns[0]] = p
            return out
        for k, (forest, cols) in enumerate(zip(self.forests, self.columns)):
            if forest is None:
                out[:, k] = float(cols[0])
            else:
                p = forest.predict_proba(x)
                out[:, k] = p[:, list(cols).index(1)] if 1 in cols else 0.0
        return out

    # -- storage as arrays -------------------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every tree as numeric arrays (see the module docstring)."""
        arrays: dict[str, np.ndarray] = {"n_features": np.asarray(self.n_features, np.int64)}
        for i, (forest, cols) in enumerate(zip(self.forests, self.columns)):
            arrays[f"f{i}_columns"] = np.asarray(cols, np.int64)
            if forest is None:
                continue
            trees = [est.tree_ for est in forest.estimators_]
            counts = np.asarray([t.node_count for t in trees], np.int64)
            arrays[f"f{i}_offsets"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            arrays[f"f{i}_left"] = np.concatenate([t.children_left for t in trees]).astype(np.int64)
            arrays[f"f{i}_right"] = np.concatenate([t.children_right for t in trees]).astype(np.int64)
            arrays[f"f{i}_feature"] = np.concatenate([t.feature for t in trees]).astype(np.int64)
            arrays[f"f{i}_threshold"] = np.concatenate([t.threshold for t in trees]).astype(np.float64)
            arrays[f"f{i}_samples"] = np.concatenate([t.n_node_samples for t in trees]).astype(np.int64)
            arrays[f"f{i}_weighted"] = np.concatenate([t.weighted_n_node_samples for t in trees]).astype(np.float64)
            arrays[f"f{i}_impurity"] = np.concatenate([t.impurity for t in trees]).astype(np.float64)
            # leaf class distributions (node, class); sklearn keeps (node, outputs=1, classes)
            arrays[f"f{i}_value"] = np.concatenate([t.value[:, 0, :] for t in trees]).astype(np.float64)
            arrays[f"f{i}_depth"] = np.asarray([t.max_depth for t in trees], np.int64)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], num_classes: int, multilabel: bool,
                    settings: ForestSettings | None = None) -> PixelForest:
        """Rebuild from :meth:`to_arrays` output (raises :class:`ForestError` when inconsistent)."""
        self = cls(num_classes, multilabel, settings)
        try:
            self.n_features = int(arrays["n_features"])
            n_forests = num_classes if multilabel else 1
            for i in range(n_forests):
                cols = np.asarray(arrays[f"f{i}_columns"], np.int64)
                if cols.ndim != 1 or cols.size == 0 or cols.min() < 0 or cols.max() >= max(num_classes, 2):
                    raise ForestError(f"forest {i}: class columns {cols.tolist()} do not fit {num_classes} classes")
                self.columns.append(cols)
                self.forests.append(_rebuild_forest(arrays, f"f{i}_", self.n_features, cols)
                                    if f"f{i}_offsets" in arrays else None)
        except KeyError as exc:
            raise ForestError(f"the stored forest lacks the array {exc.args[0]!r}") from None
        if not self.fitted:
            raise ForestError("the stored forest holds no trees")
        return self


def _rebuild_forest(arrays: Mapping[str, np.ndarray], p: str, n_features: int, classes: np.ndarray) -> Any:
    """A fitted ``RandomForestClassifier`` from the arrays of one forest (prefix ``p``)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier
    from sklearn.tree._tree import NODE_DTYPE, Tree

    offsets = np.asarray(arrays[p + "offsets"], np.int64)
    n_classes = int(classes.size)
    left, right = np.asarray(arrays[p + "left"]), np.asarray(arrays[p + "right"])
    feature, threshold = np.asarray(arrays[p + "feature"]), np.asarray(arrays[p + "threshold"])
    value = np.asarray(arrays[p + "value"], np.float64)
    total = int(offsets[-1]) if offsets.size else 0
    if offsets.ndim != 1 or offsets.size < 2 or np.any(np.diff(offsets) < 1):
        raise ForestError(f"{p}offsets are not increasing node counts")
    for name, arr in (("left", left), ("right", right), ("feature", feature), ("threshold", threshold)):
        if arr.shape != (total,):
            raise ForestError(f"{p}{name} has shape {arr.shape}, expected ({total},)")
    if value.shape != (total, n_classes):
        raise ForestError(f"{p}value has shape {value.shape}, expected ({total}, {n_classes})")
    if feature.max() >= n_features:
        raise ForestError(f"{p}feature refers to feature {int(feature.max())} of {n_features}")
    estimators = []
    for t in range(offsets.size - 1):
        a, b = int(offsets[t]), int(offsets[t + 1])
        n = b - a
        lt, rt = left[a:b], right[a:b]
        inner = lt >= 0
        # children must point inside the tree and after their parent (no cycles)
        if np.any(inner & ((lt >= n) | (rt >= n) | (lt <= np.arange(n)) | (rt <= np.arange(n)))):
            raise ForestError(f"{p}tree {t} has children outside the tree")
        nodes = np.zeros(n, dtype=NODE_DTYPE)
        nodes["left_child"] = lt
        nodes["right_child"] = rt
        nodes["feature"] = feature[a:b]
        nodes["threshold"] = threshold[a:b]
        nodes["impurity"] = np.asarray(arrays[p + "impurity"])[a:b]
        nodes["n_node_samples"] = np.asarray(arrays[p + "samples"])[a:b]
        nodes["weighted_n_node_samples"] = np.asarray(arrays[p + "weighted"])[a:b]
        tree = Tree(n_features, np.asarray([n_classes], dtype=np.intp), 1)
        tree.__setstate__({
            "max_depth": int(np.asarray(arrays[p + "depth"])[t]), "node_count": n, "nodes": nodes,
            "values": np.ascontiguousarray(value[a:b, None, :]),
        })
        est = DecisionTreeClassifier()
        est.tree_ = tree
        est.n_features_in_ = n_features
        est.n_outputs_ = 1
        est.classes_ = classes.copy()
        est.n_classes_ = n_classes
        est.max_features_ = max(1, int(np.sqrt(n_features)))
        estimators.append(est)
    forest = RandomForestClassifier(n_estimators=len(estimators), n_jobs=os.cpu_count() or 1)
    forest.estimators_ = estimators
    forest.classes_ = classes.copy()
    forest.n_classes_ = n_classes
    forest.n_outputs_ = 1
    forest.n_features_in_ = n_features
    return forest
