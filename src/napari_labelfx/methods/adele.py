"""``adele``: train on noisy labels, detect the end of early learning, then correct the labels.

Every epoch (the trainer's epoch, or every ``epoch_iters`` iterations when set) the method scores the
current prediction against the INITIAL noisy labels, per class (IoU over the training images), and
fits the ADELE curve to each class's scores (:mod:`napari_labelfx.methods.early_learning`). From the
epoch a class's curve has flattened, that class is corrected every epoch: the prediction is
averaged over TTA views (scales x flips, de-augmented, :mod:`napari_labelfx.tools.tta`), fused with
agreement weighting (:mod:`napari_labelfx.tools.fusion`), and a known pixel becomes class ``c`` where
the fused confidence of ``c`` exceeds ``confidence``, for classes present in that image's initial
labels only (ADELE). The corrected labels replace the training targets (``ctx.set_training_items``),
never a person's layer; pixels a person protected (rejected corrections, see
:mod:`napari_labelfx.annotations.review`, passed as ``item.extra["protected"]``) keep their label.

Results (a ``MethodResult``): curves (agreement per class and its fit), markers (the start epoch), and the
result layers "corrected labels" (image 0) and "corrected boxes" (instances of the corrected labels, as
rectangles). The loss is the supervised one (cross-entropy + Dice).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ..annotations.kinds import IGNORE_INDEX, TrainingItem
from ..core.results import Curve, Marker, MethodResult, ResultLayer
from ..tools.fusion import fuse_probabilities
from ..tools.tta import all_flips, predict_views, tta_views
from .base import MethodContext, MethodError, Param
from .early_learning import EarlyLearningError, fit_early_learning
from .registry import register_method
from .supervised import Supervised


def _class_iou(pred: np.ndarray, target: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class intersection and union counts of ``pred`` vs ``target`` on known pixels."""
    known = target != IGNORE_INDEX
    p, t = pred[known].astype(np.int64), target[known].astype(np.int64)
    inter = np.bincount(t[p == t], minlength=k)[:k]
    union = np.bincount(p, minlength=k)[:k] + np.bincount(t, minlength=k)[:k] - inter
    return inter.astype(np.float64), union.astype(np.float64)


def instance_boxes_as_shapes(labels: np.ndarray) -> list[np.ndarray]:
    """Rectangles (4 corners, (y, x)) around the connected foreground objects of a 2D label image."""
    from ..tools.metrics import boxes_from_instances, instances_from_semantic

    if labels.ndim != 2:
        return []
    inst = instances_from_semantic(labels, min_size=1).labels
    boxes, _ = boxes_from_instances(inst)
    return [np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], np.float64) for y0, x0, y1, x1 in boxes]


@register_method
class Adele(Supervised):
    """Supervised training on noisy labels with ADELE-started, TTA-fused label correction."""

    name = "adele"
    description = "noisy labels: ADELE early-learning detection, then per-class TTA-fused label correction"
    supports_multilabel = False
    params_spec = Supervised.params_spec.extend(
        Param("threshold", "float", 0.9, "relative slope drop that ends early learning (the ADELE rule)",
              min=0, max=1, min_open=True, max_open=True),
        Param("confidence", "float", 0.8, "fused confidence above which a pixel is relabelled",
              min=0, max=1, min_open=True, important=True),
        Param("tta_scales", "floats", [0.8, 0.9, 1.0, 1.1, 1.2], "scales of the TTA views (`1` alone: one view, fast)",
              min=0, min_open=True),
        Param("tta_flips", "bool", True, "all flips of the in-plane axes (4 views per scale)", important=True),
        Param("epoch_iters", "int", 0, "iterations per correction epoch (0 = the trainer's epoch)", min=0,
              important=True),
        Param("min_start_epoch", "int", 3, "correction never starts earlier (the fit needs 3 points)", min=0),
    )

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        p = self.params
        try:
            tta_views([float(s) for s in p["tta_scales"]])
        except (TypeError, ValueError) as exc:
            raise MethodError(f"{self.name}: bad tta_scales {p['tta_scales']!r}: {exc}") from None
        self.initial: list[np.ndarray] = []  # initial noisy targets (the ADELE reference)
        self.current: list[np.ndarray] = []  # the corrected targets
        self.scores: list[list[float]] = []  # per epoch, per class agreement with the initial labels
        self.epochs_seen = 0
        self.start_epoch: dict[int, int] = {}  # class -> epoch its correction switched on
        self.start_iteration: dict[int, int] = {}  # class -> iteration of that epoch (plot markers)
        self.changed_pixels: list[int] = []
        self._num_classes = 0

    # -- hooks ---------------------------------------------------------------------------------------
    def on_start(self, ctx: MethodContext) -> None:
        self._num_classes = ctx.num_classes
        self.initial = [np.array(it.target, copy=True) if it.target is not None else None for it in ctx.items]
        self.current = [None if t is None else t.copy() for t in self.initial]

    def on_iteration(self, ctx: MethodContext) -> None:
        every = int(self.params["epoch_iters"])
        if every > 0 and ctx.iteration % every == 0:
            self._epoch(ctx, emit=True)

    def on_epoch_end(self, ctx: MethodContext) -> None:
        if int(self.params["epoch_iters"]) == 0:
            self._epoch(ctx, emit=False)  # the trainer sends result_layers() right after

    # -- one epoch -----------------------------------------------------------------------------------
    def _views(self) -> list:
        # in-plane flips only: the Z axis of a volume is usually sampled differently
        flips = all_flips(2) if self.params["tta_flips"] else [()]
        return tta_views([float(s) for s in self.params["tta_scales"]], flips)

    def _epoch(self, ctx: MethodContext, emit: bool) -> None:
        if ctx.predict is None:
            return
        if len(self.initial) != len(ctx.items):
            # the person changed the annotations mid-run: their new labels are the new reference
            ctx.log(f"{self.name}: new annotations: the agreement curve and the correction restart")
            self.on_start(ctx)
            self.scores, self.epochs_seen, self.start_epoch, self.start_iteration = [], 0, {}, {}
        self.epochs_seen += 1
        epoch = self.epochs_seen
        k = ctx.num_classes
        inter, union = np.zeros(k), np.zeros(k)
        self._plain: dict[int, np.ndarray] = {}
        for idx, (it, init) in enumerate(zip(ctx.items, self.initial)):
            if init is None:
                continue
            probs = ctx.predict(self._source_image(idx, it))
            self._plain[idx] = probs  # the identity TTA view of this epoch's correction: predicted once
            pred = probs.argmax(axis=0)
            i, u = _class_iou(pred, init, k)
            inter += i
            union += u
        self.scores.append([float(x) for x in np.where(union > 0, inter / np.maximum(union, 1), np.nan)])
        self._update_starts(epoch, ctx)
        if self.start_epoch:
            self._correct(ctx)
        self._plain = {}  # predictions of this epoch's weights: stale from now on
        if emit and ctx.emit_result is not None:
            ctx.emit_result(self.result_layers())

    def _update_starts(self, epoch: int, ctx: MethodContext) -> None:
        scores = np.asarray(self.scores)
        for c in range(scores.shape[1]):
            if c in self.start_epoch:
                continue  # once on, correction stays on
            y = scores[:, c]
            if np.isnan(y).any() or y.size < 3:
                continue
            try:
                fit = fit_early_learning(y, float(self.params["threshold"]))
            except EarlyLearningError:
                continue
            if fit.started(epoch) and epoch >= int(self.params["min_start_epoch"]):
                self.start_epoch[c] = epoch
                self.start_iteration[c] = int(ctx.iteration)
                ctx.log(f"{self.name}: early learning of class {ctx.class_names[c]!r} ended at epoch {epoch} "
                        f"(fitted start {fit.start_epoch}): label correction is on")

    def _correct(self, ctx: MethodContext) -> None:
        """Relabel every item from TTA-fused predictions and hand the new targets to the trainer."""
        tau = float(self.params["confidence"])
        on = np.array(sorted(self.start_epoch), np.int64)
        new_items: list[TrainingItem] = []
        changed = 0
        for idx, (it, init) in enumerate(zip(ctx.items, self.initial)):
            cur = self.current[idx]
            if init is None or cur is None:
                new_items.append(it)
                continue
            plain = getattr(self, "_plain", {}).get(idx)

            def predict(image: np.ndarray, _plain: np.ndarray | None = plain,
                        _src: np.ndarray = self._source_image(idx, it)) -> np.ndarray:  # noqa: B008 (bound per item)
                if _plain is not None and image.shape == _src.shape and np.array_equal(image, _src):
                    return _plain  # the identity view was predicted for the agreement score
                return ctx.predict(image)

            views = predict_views(predict, self._source_image(idx, it), self._views())
            mean, conf = fuse_probabilities(views)
            win = mean.argmax(axis=0)
            present = np.unique(init[init != IGNORE_INDEX])
            allowed = np.isin(win, np.intersect1d(on, present))
            update = allowed & (conf > tau) & (cur != IGNORE_INDEX)
            protected = it.extra.get("protected") if isinstance(it.extra, dict) else None
            if protected is not None and np.shape(protected) == cur.shape:
                update &= ~np.asarray(protected, bool)
            new = cur.copy()
            new[update] = win[update]
            changed += int(np.count_nonzero(new != cur))
            self.current[idx] = new
            new_items.append(self._make_item(idx, it, new))
        self.changed_pixels.append(changed)
        if ctx.set_training_items is not None:
            ctx.set_training_items(new_items)

    # -- overridable by sissi ------------------------------------------------------------------------
    def _source_image(self, index: int, item: TrainingItem) -> np.ndarray:
        """The image the correction predicts on (the real image, also when training on synthetic ones)."""
        return item.image

    def _make_item(self, index: int, item: TrainingItem, target: np.ndarray) -> TrainingItem:
        return replace(item, target=target)

    # -- results -------------------------------------------------------------------------------------
    def result_layers(self) -> MethodResult:
        if not self.scores:
            return MethodResult()
        scores = np.asarray(self.scores)
        x = list(range(1, scores.shape[0] + 1))
        curves: dict[str, Curve] = {}
        k = scores.shape[1]
        for c in range(1 if k > 1 else 0, k):  # the foreground classes are what the person watches
            y = scores[:, c]
            curves[f"agreement class {c}"] = Curve(x, [float(v) for v in y])
            if y.size >= 3 and not np.isnan(y).any():
                try:
                    fit = fit_early_learning(y, float(self.params["threshold"]))
                    curves[f"ADELE fit class {c}"] = Curve(x, fit.fitted.tolist())
                except EarlyLearningError:
                    pass
        markers: tuple[Marker, ...] = ()
        message = None
        if self.start_epoch:
            markers = tuple((int(self.start_iteration.get(c, 0)), f"correction on (class {c}, epoch {e})")
                            for c, e in sorted(self.start_epoch.items()))
            message = (f"{self.name}: correcting labels since epoch {min(self.start_epoch.values())}; "
                       f"{self.changed_pixels[-1] if self.changed_pixels else 0} pixels changed last epoch")
        layers: list[ResultLayer] = []
        if self.current and self.current[0] is not None and self.start_epoch:
            lab = np.where(self.current[0] == IGNORE_INDEX, 0, self.current[0]).astype(np.int32)
            layers.append(ResultLayer(name="corrected labels", kind="labels", data=lab, opacity=0.5))
            boxes = instance_boxes_as_shapes(lab)
            if boxes:
                layers.append(ResultLayer(name="corrected boxes", kind="shapes", data=boxes, shape_type="rectangle",
                                          outline_color="yellow", fill_color="transparent", outline_width=1))
        return MethodResult(layers=tuple(layers), markers=markers, curves=curves, message=message)

    def corrected_targets(self) -> list[np.ndarray | None]:
        """The current (corrected) training targets, in item order."""
        return [None if t is None else t.copy() for t in self.current]

    def state_dict(self) -> dict[str, Any]:
        return {"scores": [list(s) for s in self.scores],
                "start_epoch": {int(c): int(e) for c, e in self.start_epoch.items()},
                "start_iteration": {int(c): int(e) for c, e in self.start_iteration.items()},
                "epochs_seen": int(self.epochs_seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scores = [list(map(float, s)) for s in state.get("scores", [])]
        self.start_epoch = {int(c): int(e) for c, e in dict(state.get("start_epoch", {})).items()}
        self.start_iteration = {int(c): int(e) for c, e in dict(state.get("start_iteration", {})).items()}
        self.epochs_seen = int(state.get("epochs_seen", len(self.scores)))
