"""Training the pixel forest with the trainer's interface: ``updates()``, ``set_items``, previews.

One fit takes seconds, so the forest is trained at once. In live mode (``method_params["live"]``, on
by default; ``run()``, the batch entry point of the CLI and ``labelfx eval``, turns it off) the trainer
then waits: every change of the annotations refits
the forest (features come from the tile cache) and every request of the person's field of view is
answered with a fresh preview, until Stop. Without live mode it fits, saves and finishes.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..annotations.kinds import IGNORE_INDEX, MULTILABEL_IGNORE, TrainingItem
from ..core.params import Param, ParamError, ParamSpec
from ..data.checks import check_items
from ..data.split import ValidationSplit, split_validation
from ..forest.classifier import ForestError, ForestSettings, PixelForest
from ..forest.features import KINDS, FilterBank
from ..forest.folder import save_forest
from ..forest.tiles import (
    FeatureCache,
    image_digest,
    predict_region_probabilities,
    sample_training_pixels,
    shared_cache,
)
from ..inference.labels import probabilities_to_labels
from .config import ConfigError, TrainConfig
from .control import TrainerControl
from .preview import RegionError, resolve_region
from .trainer import DEFAULT_NORMALISATION, TrainResult, failed_update
from .updates import Checkpoint, Failed, Finished, Log, Preview, Progress, Started, Update, Validation

#: Parameters of ``method="forest"`` (``TrainConfig.method_params``).
FOREST_PARAMS = ParamSpec((
    Param("live", "bool", True, "keep refitting after strokes until Stop (GUI; `run()` fits once)", important=True),
    Param("kind", "choice", "extra", "`extra` (extremely randomized trees) or `random` (random forest)",
          choices=("extra", "random")),
    Param("n_trees", "int", 64, "trees per forest", min=1, important=True),
    Param("max_samples", "int", 40_000, "painted pixels drawn per fit (each class keeps at least `max_samples / 2K`)",
          min=1),
    Param("min_samples_leaf", "int", 2, "smallest number of samples in a leaf", min=1),
    Param("max_depth", "int", 0, "deepest tree (0 = unlimited)", min=0),
    Param("sigmas", "floats", "0.3,0.7,1,1.6,3.5,5,10", "filter scales in pixels (0.3 contributes only its smoothing)",
          min=0, min_open=True, important=True),
    Param("features", "words", ",".join(KINDS), "filter kinds", choices=KINDS),
))
FOREST_DEFAULTS: dict[str, Any] = FOREST_PARAMS.defaults()
FOREST_IMPORTANT: tuple[str, ...] = FOREST_PARAMS.important()
#: Seconds between checks of the control and of new annotations while live.
LIVE_POLL_S = 0.05
#: Live mode answers new strokes with a quick forest first (this many trees on at most
#: QUICK_SAMPLES pixels: about 4x faster to fit and to predict, within 0.003 Dice of 64 trees on
#: nuclei_dsb_stardist), then refines it with the full settings when no newer strokes wait.
QUICK_TREES = 16
QUICK_SAMPLES = 10_000


_IMPORTS_STARTED = False


def warm_up_imports() -> None:
    """Import scikit-learn's trees in a background thread (about 1.5 s the first time).

    Called when the Train panel opens and when a forest trainer is built, so the first live
    prediction after Start does not wait for the import.
    """
    global _IMPORTS_STARTED
    if _IMPORTS_STARTED:
        return
    _IMPORTS_STARTED = True
    import threading

    def _load() -> None:
        import sklearn.ensemble  # noqa: F401
        import sklearn.tree  # noqa: F401

    threading.Thread(target=_load, daemon=True, name="labelfx-import-sklearn").start()


@dataclass(frozen=True)
class ForestParams:
    """Typed forest parameters parsed from ``method_params`` (see :data:`FOREST_DEFAULTS`)."""

    live: bool
    settings: ForestSettings
    sigmas: tuple[float, ...]
    kinds: tuple[str, ...]

    @classmethod
    def parse(cls, params: dict[str, Any], seed: int = 0) -> ForestParams:
        try:
            p = FOREST_PARAMS.resolve(params, "method 'forest'")
        except ParamError as exc:
            raise ConfigError(str(exc)) from None

        def floats(v: Any) -> tuple[float, ...]:
            items = v.split(",") if isinstance(v, str) else list(v)
            try:
                return tuple(float(s) for s in items if str(s).strip())
            except ValueError:
                raise ConfigError(f"forest parameter sigmas must be numbers separated by commas, got {v!r}") from None

        def integer(name: str) -> int:
            v = p[name]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v:
                raise ConfigError(f"forest parameter {name} must be an integer, got {v!r}")
            return int(v)

        kinds = p["features"].split(",") if isinstance(p["features"], str) else list(p["features"])
        try:
            settings = ForestSettings(
                kind=str(p["kind"]), n_trees=integer("n_trees"), max_samples=integer("max_samples"),
                min_samples_leaf=integer("min_samples_leaf"),
                max_depth=integer("max_depth") or None, seed=int(seed),
            )
        except ForestError as exc:
            raise ConfigError(str(exc)) from None
        return cls(bool(p["live"]), settings, floats(p["sigmas"]), tuple(k.strip() for k in kinds if k.strip()))


def live_filter_bank(method: str, method_params: dict[str, Any], spatial_dims: int) -> FilterBank | None:
    """The filter bank a live ``forest`` or ``auto`` run would use (None: another method or bad settings).

    The panel computes these features ahead of Start (``forest.tiles.prefetch_features``).
    """
    if method not in ("forest", "auto"):
        return None
    params = {k: v for k, v in method_params.items() if k in FOREST_DEFAULTS and k != "live"}
    try:
        parsed = ForestParams.parse(params)
        return FilterBank(parsed.sigmas, parsed.kinds, spatial_dims=spatial_dims)
    except (ConfigError, ValueError):
        return None  # the settings are refused at Start, with the message there


def forest_validation(
    forest: PixelForest, split: ValidationSplit, cache: FeatureCache, class_names: Sequence[str], multilabel: bool,
) -> dict[str, Any]:
    """Loss, Dice and accuracy of the forest on the held-out pixels (definitions of ``evaluate_split``)."""
    k = len(class_names)
    inter, psum, tsum = np.zeros(k), np.zeros(k), np.zeros(k)
    loss_sum = correct = n = 0.0
    for w in split.windows:
        item = split.source_items[w.item_index]
        spatial = item.image.shape[1:]
        # only the held-out pixels' bounding box (a block or two), not the network's whole window
        if not w.mask.any():
            continue
        idx = np.nonzero(w.mask)
        lo = [max(0, s + int(i.min())) for s, i in zip(w.start, idx)]
        hi = [min(d, s + int(i.max()) + 1) for s, i, d in zip(w.start, idx, spatial)]
        if any(b <= a for a, b in zip(lo, hi)):
            continue
        region = tuple(slice(a, b) for a, b in zip(lo, hi))
        local = tuple(slice(r.start - s, r.stop - s) for r, s in zip(region, w.start))
        mask = w.mask[local]
        # the window's own features (with halo), not whole cached tiles: windows are small and spread
        # over many images, so tiles would cost several times more than they serve
        probs = predict_region_probabilities(forest, item.image, region, bank=cache.bank)
        if multilabel:
            t = item.target[(slice(None), *region)]
            known = (t != MULTILABEL_IGNORE) & mask[None]
            y = t == 1
            p = np.clip(probs, 1e-6, 1 - 1e-6)
            loss_sum += float(-(np.where(y, np.log(p), np.log(1 - p)))[known].sum())
            pred = probs > 0.5
            correct += float(((pred == y) & known).sum())
            n += float(known.sum())
            axes = tuple(range(1, probs.ndim))
            inter += (pred & y & known).sum(axes)
            psum += (pred & known).sum(axes)
            tsum += (y & known).sum(axes)
        else:
            t = item.target[region]
            known = (t != IGNORE_INDEX) & mask
            safe = np.where(known, t, 0)
            picked = np.take_along_axis(probs, safe[None], 0)[0]
            loss_sum += float(-np.log(np.clip(picked[known], 1e-6, 1.0)).sum())
            pred = probs.argmax(0)
            correct += float(((pred == safe) & known).sum())
            n += float(known.sum())
            for c in range(k):
                pc, tc = (pred == c) & known, (safe == c) & known
                inter[c] += (pc & tc).sum()
                psum[c] += pc.sum()
                tsum[c] += tc.sum()
    denom = psum + tsum
    dice_values = np.where(denom > 0, 2 * inter / np.maximum(denom, 1), np.nan)
    first = 0 if multilabel else 1
    fg = [float(v) for v in dice_values[first:] if not math.isnan(v)]
    return {
        "val_loss": loss_sum / max(n, 1.0),
        "dice": {name: (None if math.isnan(v) else float(v)) for name, v in zip(class_names, dice_values)},
        "dice_mean": float(np.mean(fg)) if fg else None,
        "accuracy": correct / max(n, 1.0),
        "n_pixels": int(n),
    }


class ForestTrainer:
    """Fits a :class:`~napari_labelfx.forest.PixelForest` on training items; same interface as ``Trainer``.

    Parameters are those of :class:`~napari_labelfx.engine.Trainer`; ``config.method`` is ``"forest"``
    and ``config.method_params`` holds the :data:`FOREST_DEFAULTS` keys. ``iterations``, ``lr`` and the
    other network settings are not used; ``val_fraction`` holds out annotated blocks for the score.
    """

    method_name = "forest"

    def __init__(self, config: TrainConfig | dict, items: Sequence[TrainingItem], class_names: Sequence[str],
                 multilabel: bool = False, control: TrainerControl | None = None) -> None:
        self.config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        self.class_names = [str(c) for c in class_names]
        self.multilabel = bool(multilabel)
        self.num_classes = len(self.class_names)
        if self.num_classes < (1 if self.multilabel else 2):
            raise ConfigError(f"the forest needs a background class and one more class; got {self.class_names}")
        self.params = ForestParams.parse(dict(self.config.method_params), self.config.seed)
        self.control = control if control is not None else TrainerControl()
        warm_up_imports()
        self.items = check_items(items, self.num_classes, self.multilabel, self.config.spatial)
        nd = self.items[0].image.ndim - 1
        self.bank = FilterBank(self.params.sigmas, self.params.kinds, spatial_dims=nd)
        self.cache = FeatureCache(self.bank)
        self.forest: PixelForest | None = None
        extra = self.items[0].extra if isinstance(self.items[0].extra, dict) else {}
        self.normalisation = dict(extra.get("normalisation") or DEFAULT_NORMALISATION)
        self.history: list[dict] = []
        self.iteration = 0  # fits done
        self.result: TrainResult | None = None
        self.validation: dict[str, Any] | None = None
        self.split: ValidationSplit | None = None
        self.fit_seconds = 0.0
        self._pending: list[TrainingItem] | None = None
        self._preview_request: tuple[int, tuple[slice, ...] | None] = (0, None)
        self._preview_new = False
        self._started = False
        self._digests: dict[int, str] = {}
        self.quick = False  # the current forest is a quick one (live mode refines it when idle)

    # -- the trainer interface -------------------------------------------------------------------------
    def set_items(self, items: Sequence[TrainingItem]) -> None:
        """Newer annotations: the forest is refitted on them before the next preview (thread-safe)."""
        self._pending = list(items)

    def request_preview(self, image_index: int, region: tuple[slice, ...] | None = None) -> None:
        """Show ``region`` of item ``image_index`` from now on (thread-safe)."""
        self._preview_request = (int(image_index), None if region is None else tuple(region))
        self._preview_new = True

    def predict_region(self, image_index: int, region: tuple[slice, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Labels and confidence of the current forest on a region of an item."""
        probs = self.region_probabilities(image_index, region)
        return probabilities_to_labels(probs, self.multilabel)

    def region_probabilities(self, image_index: int, region: tuple[slice, ...] | None = None,
                             step: int = 1) -> np.ndarray:
        """Probabilities (K, *region) of the current forest on a region of an item (cached features); with
        ``step`` > 1, of every ``step``-th pixel per axis only (see ``predict_region_probabilities``)."""
        if self.forest is None:
            raise ForestError("the forest is not trained yet")
        item, region = self._resolve_region(image_index, region)
        if image_index not in self._digests:
            self._digests[image_index] = image_digest(item.image)
        return predict_region_probabilities(self.forest, item.image, region, self.cache,
                                            digest=self._digests[image_index], step=step)

    def run(self, progress: Any = None) -> TrainResult:
        """Fit once (live mode is for ``updates()`` consumers); raise ``TrainingFailed`` on failure."""
        from .trainer import TrainingFailed

        # a batch run (CLI, eval) fits once: live refits need somebody painting and pressing Stop
        self.params = replace(self.params, live=False)
        for upd in self.updates():
            if isinstance(upd, Progress) and progress is not None:
                progress.update(1)
            elif isinstance(upd, Failed):
                raise TrainingFailed(upd.reason, upd)
        assert self.result is not None
        return self.result

    def updates(self) -> Iterator[Update]:
        """STARTED, PROGRESS + VALIDATION + PREVIEW + CHECKPOINT per fit, then FINISHED (or FAILED)."""
        if self._started:
            raise RuntimeError("updates() runs once; create a new trainer to train again")
        self._started = True
        try:
            yield from self._run()
        except Exception as exc:  # noqa: BLE001 - every failure must reach the person as a message
            self.result = TrainResult(None, None, self.history, "failed", self.iteration)
            yield failed_update(exc, self.iteration, 1)

    # -- internals -----------------------------------------------------------------------------------
    @property
    def quick_differs(self) -> bool:
        """Whether a quick fit (:data:`QUICK_TREES`) is cheaper than the configured forest."""
        s = self.params.settings
        return s.n_trees > QUICK_TREES or s.max_samples > QUICK_SAMPLES

    def _fit(self, items: list[TrainingItem], validate: bool = True, quick: bool = False,
             split: ValidationSplit | None = None) -> list[Update]:
        """Fit on ``items``; ``quick`` uses fewer trees and pixels (a first answer, refined later).

        ``split``: hold out exactly these pixels (the default path scores forest and network on the
        same ones) instead of the forest's own split of ``items``.
        """
        cfg = self.config
        t0 = time.perf_counter()
        if split is None:
            split = split_validation(items, cfg.val_fraction, cfg.patch_size, cfg.spatial, self.multilabel,
                                     block=cfg.val_block, seed=cfg.seed)
        rng = np.random.default_rng([cfg.seed, self.iteration])
        settings = self.params.settings
        if quick:
            settings = replace(settings, n_trees=min(settings.n_trees, QUICK_TREES),
                               max_samples=min(settings.max_samples, QUICK_SAMPLES))
        x, y = sample_training_pixels(split.train_items, self.cache, self.num_classes, self.multilabel,
                                      settings.max_samples, rng)
        t_feat = time.perf_counter() - t0
        forest = PixelForest(self.num_classes, self.multilabel, settings).fit(x, y)
        self.forest, self.split, self.items = forest, split, items
        self.quick = quick
        self._digests = {}
        self.iteration += 1
        self.fit_seconds = time.perf_counter() - t0
        out: list[Update] = []
        fits_per_s = 1.0 / max(self.fit_seconds, 1e-9)
        record = {"kind": "train", "iteration": self.iteration, "loss": float("nan"), "lr": 0.0,
                  "its_per_s": fits_per_s, "fit_s": self.fit_seconds,
                  "feature_s": t_feat, "n_samples": int(x.shape[0]), "quick": quick}
        self.history.append(record)
        out.append(Progress(
            self.iteration, self.iteration, loss=float("nan"), losses={}, lr=0.0, its_per_s=fits_per_s,
            epoch=self.iteration, elapsed_s=self.fit_seconds, eta_s=0.0, fit_s=self.fit_seconds,
            n_samples=int(x.shape[0]), source="forest", quick=quick,
        ))
        if validate:
            out += self._validate()
        return out

    def _validate(self) -> list[Update]:
        """Score the current forest on its held-out blocks (a VALIDATION update, or none)."""
        out: list[Update] = []
        split, forest = self.split, self.forest
        if split is not None and forest is not None and split.enabled:
            metrics = forest_validation(forest, split, self.cache, self.class_names, self.multilabel)
            self.validation = metrics
            self.history.append({"kind": "val", "iteration": self.iteration, "val_loss": metrics["val_loss"],
                                 "dice_mean": metrics["dice_mean"], "accuracy": metrics["accuracy"]})
            out.append(Validation.from_metrics(self.iteration, self.iteration, metrics, best=True,
                                               best_val_loss=metrics["val_loss"], source="forest"))
        else:
            self.validation = None
        return out

    def _validate_and_save(self, out_dir: Path | None) -> Iterator[Update]:
        """Held-out score of the current forest, then its model folder (``out_dir/best``)."""
        yield from self._validate()
        if out_dir is not None:
            self.save(out_dir / "best")
            yield Checkpoint(self.iteration, self.iteration, path=str(out_dir / "best"), which="best",
                             val_loss=None if self.validation is None else self.validation["val_loss"])

    def save(self, folder: str | Path) -> Path:
        """Write the current forest as a model folder."""
        if self.forest is None:
            raise ForestError("the forest is not trained yet")
        return save_forest(folder, self.forest, self.bank, int(self.items[0].image.shape[0]), {
            "class_names": list(self.class_names), "multilabel": self.multilabel, "method": "forest",
            "train_config": self.config.to_dict(), "normalisation": self.normalisation,
            "history": list(self.history), "iteration": self.iteration,
            "val_loss": None if self.validation is None else self.validation["val_loss"],
            "validation": self.validation,
        })

    def _preview(self) -> Preview:
        self._preview_new = False
        index, region = self._preview_request
        try:
            item, region = self._resolve_region(index, region)
        except RegionError:
            index, (item, region) = 0, self._resolve_region(0, None)
        labels, confidence = self.predict_region(index, region)
        return Preview(self.iteration, self.iteration, image_index=index,
                       region=tuple((s.start, s.stop) for s in region), labels=labels, confidence=confidence,
                       name=item.name, source="forest")

    def _resolve_region(self, image_index: int, region: tuple | None) -> tuple[TrainingItem, tuple[slice, ...]]:
        return resolve_region(self.items, image_index, region, self.multilabel)

    def _run(self) -> Iterator[Update]:
        t_start = time.perf_counter()
        out_dir = None if self.config.output_dir is None else Path(self.config.output_dir)
        yield Started(0, 1, device="cpu", method="forest", start_iteration=0, amp=False, n_items=len(self.items),
                      features=self.bank.n_features(self.items[0].image.shape[0]), live=self.params.live)
        if self.params.live:
            # the features of the painted tiles (and of the view) may already be computing: the
            # panel starts them when the image is chosen (see forest.tiles.prefetch_features)
            self.cache = shared_cache(self.bank)
        # live: a quick forest answers first and is refined in the loop below
        refine = self.params.live and self.quick_differs
        try:
            # the prediction first, the held-out score after it: the person sees something sooner
            yield from self._fit(self.items, validate=False, quick=refine)
        except (ForestError, ValueError) as exc:
            if not self.params.live:
                raise
            # live: the first strokes may hold one class only; wait for the person to paint more
            yield Log(0, 1, message=f"{exc}: paint more, the forest fits as soon as it can", level="warning")
        if self.forest is not None and (self.config.preview_every_s > 0 or self.params.live):
            yield self._preview()
        if self.forest is not None and not self.quick:
            yield from self._validate_and_save(out_dir)
        reason = "done"
        while self.params.live and not self.control.should_stop:
            pending, self._pending = self._pending, None
            if pending is not None:
                try:
                    checked = check_items(pending, self.num_classes, self.multilabel, self.config.spatial)
                except ValueError as exc:
                    yield Log(self.iteration, self.iteration, message=f"new annotations not used: {exc}",
                              level="warning")
                    continue
                try:
                    yield from self._fit(checked, validate=False, quick=self.quick_differs)
                except (ForestError, ValueError) as exc:  # e.g. the person erased one class
                    yield Log(self.iteration, self.iteration, message=f"forest not refitted: {exc}", level="warning")
                    continue
                yield self._preview()
                if not self.quick:
                    yield from self._validate_and_save(out_dir)
                continue  # newer strokes first; the quick forest is refined when none wait
            if self.quick and self.forest is not None:
                # nobody is waiting for a first answer: the full forest on the same strokes
                yield from self._fit(self.items, validate=False)
                yield self._preview()
                yield from self._validate_and_save(out_dir)
                continue
            if self._preview_new and self.forest is not None:
                yield self._preview()
                continue
            self.control.wait_while_paused(LIVE_POLL_S) if self.control.is_paused else time.sleep(LIVE_POLL_S)
        if self.quick and self.forest is not None:
            # stopped before the refinement: the model that is kept is the full forest
            yield from self._fit(self.items, validate=False)
            yield from self._validate_and_save(out_dir)
        if self.params.live:
            reason = "stopped"
        best = None if out_dir is None or self.forest is None else out_dir / "best"
        self.result = TrainResult(best, best, self.history, reason, self.iteration,
                                  None if self.validation is None else self.validation["val_loss"])
        yield Finished(
            self.iteration, self.iteration, best_path=None if best is None else str(best),
            last_path=None if best is None else str(best), reason=reason, best_val_loss=self.result.best_val_loss,
            seconds=time.perf_counter() - t_start, history=list(self.history),
        )
