"""The default path: the pixel forest at once, a network behind it, and the better one shown.

1. The forest is fitted on the person's labels (held-out blocks excluded) in seconds and its
   prediction is shown at once.
2. The working scale of the network comes from the objects' size (from full masks, or from the
   forest's prediction when only scribbles exist), so a patch holds whole objects with context.
3. Where the person painted nothing, the forest's confident predictions become the network's targets
   (pseudo-labels); held-out pixels stay unknown to both learners.
4. The network trains in the background. Both are scored on the same held-out annotated pixels; the
   previews, "Predict" and the model folder ``best`` follow whichever scores higher (Dice), and every
   update says which one it is (``data["source"]``).
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..annotations.kinds import IGNORE_INDEX, MULTILABEL_IGNORE, LabelKind, TrainingItem
from ..core.params import Param, ParamError
from ..data.checks import known_mask
from ..data.split import ValidationSplit, count_painted, split_by_item, split_validation
from ..inference.labels import probabilities_to_labels
from .config import ConfigError, TrainConfig
from .control import TrainerControl
from .forest_trainer import FOREST_DEFAULTS, FOREST_PARAMS, ForestTrainer, forest_validation
from .trainer import Trainer, TrainResult, failed_update
from .updates import Checkpoint, Failed, Finished, Log, Progress, Started, Update, UpdateKind, Validation
from .validation import evaluate_split

#: Parameters of ``method="auto"``: the forest's (see ``FOREST_PARAMS``) and the network's.
AUTO_PARAMS = FOREST_PARAMS.without("live").with_changes("sigmas", important=False).with_changes(
    "n_trees", important=False).extend(
    Param("network", "text", "supervised", "the network method behind the forest (`scribble` for partial CE)",
          important=True),
    Param("scale", "float", "auto", "working scale of the network", min=0.05, max=1, choices=("auto",),
          important=True),
    Param("target_diameter", "float", 48.0, "object diameter in pixels that `scale=auto` aims at", min=0,
          min_open=True),
    Param("min_scale", "float", 0.25, "floor of `scale=auto`", min=0.05, max=1),
    Param("pseudo_labels", "bool", True, "forest labels for unpainted pixels", important=True),
    Param("pseudo_threshold", "float", 0.8, "forest confidence above which an unpainted pixel takes its label",
          min=0.5, max=1),
    Param("pseudo_max_pixels", "int", 6_000_000,
          "pixels of images pseudo-labelled (the rest keep their painted pixels only)", min=0),
    Param("compare_block", "int", 0, "edge of the held-out blocks both learners are scored on "
          "(0: the engine's `val_block`)", min=0),
    Param("compare_images", "int", 5, "hold out whole painted images for the comparison once at least this "
          "many are painted (blocks inside the images below it; 0: always blocks)", min=0),
    Param("tie_margin", "float", 0.0, "the network is shown once its held-out Dice is at least the forest's "
          "minus this (0: once it is higher)", min=0, max=1),
)
AUTO_DEFAULTS: dict[str, Any] = AUTO_PARAMS.defaults()
AUTO_IMPORTANT: tuple[str, ...] = AUTO_PARAMS.important()
#: Images whose forest prediction gives the objects' size when only sparse labels were painted.
SCALE_ITEMS = 4
#: Working scales are rounded to multiples of this (fewer distinct model shapes, readable configs).
SCALE_STEP = 0.125


def object_diameter(masks: Sequence[np.ndarray], min_area: int = 16) -> float | None:
    """Equivalent diameter (pixels) of the typical connected foreground object of boolean masks."""
    from scipy import ndimage as ndi

    areas: list[int] = []
    for m in masks:
        lab, n = ndi.label(m)
        if n:
            counts = np.bincount(lab.ravel())[1:]
            areas.extend(int(a) for a in counts if a >= min_area)
    if not areas:
        return None
    # the size of the object a typical foreground pixel belongs to (an area-weighted median): a few
    # large objects are not outvoted by many small fragments of a rough prediction
    sizes = np.sort(np.asarray(areas, np.float64))
    cumulative = np.cumsum(sizes)
    area = float(sizes[np.searchsorted(cumulative, 0.5 * cumulative[-1])])
    nd = masks[0].ndim
    return 2 * math.sqrt(area / math.pi) if nd == 2 else 2 * (3 * area / (4 * math.pi)) ** (1 / 3)


def working_scale(diameter: float | None, target: float, min_scale: float) -> float:
    """Scale that brings objects of ``diameter`` pixels to about ``target`` pixels (never above 1)."""
    if diameter is None or diameter <= 0:
        return 1.0
    s = min(1.0, max(min_scale, target / diameter))
    return max(min_scale, round(s / SCALE_STEP) * SCALE_STEP)


class AutoTrainer:
    """Forest first, network behind it (see the module docstring); the interface of ``Trainer``."""

    method_name = "auto"

    def __init__(self, config: TrainConfig | dict, items: Sequence[TrainingItem], class_names: Sequence[str],
                 multilabel: bool = False, control: TrainerControl | None = None) -> None:
        self.config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        try:
            params = AUTO_PARAMS.resolve(self.config.method_params, "method 'auto'")
        except ParamError as exc:
            raise ConfigError(str(exc)) from None
        self.params = params
        if params["network"] in ("auto", "forest"):
            raise ConfigError(f"auto parameter network must be a network method, got {params['network']!r}")
        self.control = control if control is not None else TrainerControl()
        self.class_names = [str(c) for c in class_names]
        self.multilabel = bool(multilabel)
        out = None if self.config.output_dir is None else Path(self.config.output_dir)
        self.out_dir = out
        forest_params = {k: v for k, v in params.items() if k in FOREST_DEFAULTS}
        forest_cfg = replace(self.config, method="forest", method_params=forest_params,
                             output_dir=None if out is None else str(out / "forest"))
        self.forest = ForestTrainer(forest_cfg, items, class_names, multilabel, control=self.control)
        self.net: Trainer | None = None
        self.net_split: ValidationSplit | None = None
        self.scale = 1.0
        self.diameter: float | None = None
        self.forest_val: dict[str, Any] | None = None
        self.net_val: dict[str, Any] | None = None
        self.best_net_state: dict[str, torch.Tensor] | None = None
        self.best_net_iteration = 0
        self.winner = "forest"
        #: forest refits so that it never trained on the pixels it is scored on
        self.forest_refits = 0
        self.history: list[dict] = []
        self.result: TrainResult | None = None
        self._pending: list[TrainingItem] | None = None
        self._preview_request: tuple[int, tuple[slice, ...] | None] = (0, None)
        self._started = False
        self._t_start = time.perf_counter()
        #: someone watches (the panel): a quick forest first, features from the shared cache
        self._interactive = True

    # -- the trainer interface -------------------------------------------------------------------------
    @property
    def iteration(self) -> int:
        return 0 if self.net is None else self.net.iteration

    def set_items(self, items: Sequence[TrainingItem]) -> None:
        """Newer annotations: the forest is refitted and the network's targets renewed (thread-safe)."""
        self._pending = list(items)

    def request_preview(self, image_index: int, region: tuple[slice, ...] | None = None) -> None:
        """Show ``region`` of item ``image_index`` from now on (thread-safe)."""
        self._preview_request = (int(image_index), None if region is None else tuple(region))
        self.forest.request_preview(image_index, region)
        if self.net is not None:
            self.net.request_preview(image_index, region)

    def predict_region(self, image_index: int, region: tuple[slice, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Labels and confidence of the current winner on a region of an item."""
        if self.winner == "network" and self.net is not None:
            return self.net.predict_region(image_index, region)
        return self.forest.predict_region(image_index, region)

    def run(self, progress: Any = None) -> TrainResult:
        """Train to the end; raise ``TrainingFailed`` on failure."""
        from .trainer import TrainingFailed

        self._interactive = False  # a batch run: nobody waits for a quick first forest
        last = 0
        for upd in self.updates():
            if upd.kind == UpdateKind.PROGRESS and progress is not None and upd.source == "network":
                progress.update(upd.iteration - last)
                last = upd.iteration
            elif isinstance(upd, Failed):
                raise TrainingFailed(upd.reason, upd)
        assert self.result is not None
        return self.result

    def updates(self) -> Iterator[Update]:
        """STARTED, the forest's fit and preview, then the network's updates with comparisons, FINISHED."""
        if self._started:
            raise RuntimeError("updates() runs once; create a new trainer to train again")
        self._started = True
        try:
            yield from self._run()
        except Exception as exc:  # noqa: BLE001 - every failure must reach the person as a message
            self.result = TrainResult(None, None, self.history, "failed", self.iteration)
            yield failed_update(exc, self.iteration, self.config.iterations)

    def snapshot(self, folder: str | Path | None = None) -> dict[str, Any]:
        """The comparison now; with ``folder``, the best network so far is written there (benchmarks)."""
        if self.net is not None and self.net_split is not None and not self.net_split.enabled:
            self._evaluate_network()  # keeps the current weights
        info = {"winner": self.winner, "forest_dice": (self.forest_val or {}).get("dice_mean"),
                "network_dice": (self.net_val or {}).get("dice_mean"), "network_iteration": self.best_net_iteration,
                "iterations": self.iteration, "seconds": time.perf_counter() - self._t_start}
        if folder is not None and self.net is not None and self.best_net_state is not None:
            self._save_network(Path(folder))
            info["network_path"] = str(folder)
        return info

    # -- internals -----------------------------------------------------------------------------------
    def _log(self, message: str, level: str = "info") -> Update:
        return Log(self.iteration, self.config.iterations, message=message, level=level)

    def _estimate_scale(self, items: Sequence[TrainingItem]) -> float:
        if self.params["scale"] != "auto":
            return float(self.params["scale"])
        masks = []
        for it in items:
            if it.target is None or it.kind not in (LabelKind.STRONG, LabelKind.NOISY, "strong", "noisy"):
                continue
            t = it.target
            masks.append((t[1:] == 1).any(0) if self.multilabel else (t > 0))
        if not masks:  # sparse labels only: the objects the forest sees (on a few images, every 2nd pixel)
            for p in self._forest_probabilities(items, step=2, max_items=SCALE_ITEMS).values():
                labels, _ = probabilities_to_labels(p, self.multilabel)
                masks.append(labels[1:].any(0) if self.multilabel else labels > 0)
        self.diameter = object_diameter(masks) if masks else None
        return working_scale(self.diameter, float(self.params["target_diameter"]), float(self.params["min_scale"]))

    def _forest_probabilities(self, items: Sequence[TrainingItem], step: int = 1,
                              max_items: int | None = None) -> dict[int, np.ndarray]:
        """Forest probabilities of whole items that have unknown pixels (within the pixel budget).

        With ``step`` > 1 the forest classifies every ``step``-th pixel per axis and each answer fills its
        ``step``-wide block: pseudo-labels for a network at scale ``1/step``, which sees no finer detail.
        The trees then see a ``step**d``-th of the pixels; the filter features are still computed at full
        resolution (79 s against 101-108 s on derm_ph2's 13 images at step 4, 2 loaded cores).
        """
        out: dict[int, np.ndarray] = {}
        budget = int(self.params["pseudo_max_pixels"])
        for i, it in enumerate(items):
            if max_items is not None and len(out) >= max_items:
                break
            if it.target is None or known_mask(it.target, self.multilabel).all():
                continue
            spatial = it.image.shape[1:]
            n = int(np.prod(spatial))
            if n > budget:
                continue
            budget -= n
            whole = tuple(slice(0, d) for d in spatial)
            if step == 1:
                out[i] = self.forest.region_probabilities(i, whole)
                continue
            coarse = self.forest.region_probabilities(i, whole, step=step)
            for axis in range(1, coarse.ndim):
                coarse = np.repeat(coarse, step, axis=axis)
            out[i] = np.ascontiguousarray(coarse[(slice(None), *whole)])
        return out

    def _pseudo_step(self) -> int:
        """Pixel step of the forest's pseudo-labels: the network's working scale, as a whole step."""
        return max(1, int(np.floor(1.0 / self.scale + 1e-6)))

    def _network_items(self, split: ValidationSplit, probs: dict[int, np.ndarray]) -> list[TrainingItem]:
        """The split's training items with confident forest labels where nobody painted (not held out)."""
        if not self.params["pseudo_labels"]:
            return list(split.train_items)
        tau = float(self.params["pseudo_threshold"])
        items = []
        for i, (train, source) in enumerate(zip(split.train_items, split.source_items)):
            p = probs.get(i)
            if p is None or train.target is None or i in split.held_items:
                items.append(train)
                continue
            free = ~known_mask(source.target, self.multilabel)  # never painted: not held out either
            target = train.target.copy()
            if self.multilabel:
                confident = (p >= tau) | (p <= 1 - tau)
                fill = free[None] & confident & (target == MULTILABEL_IGNORE)
                target[fill] = (p >= 0.5).astype(target.dtype)[fill]
            else:
                labels = p.argmax(0)
                confident = p.max(0) >= tau
                fill = free & confident & (target == IGNORE_INDEX)
                target[fill] = labels[fill]
            items.append(replace(train, target=target))
        return items

    def _prepare_network(self, items: Sequence[TrainingItem]) -> tuple[TrainConfig, list[TrainingItem], dict]:
        self.scale = self._estimate_scale(items)
        cfg = self.config
        nd = items[0].image.ndim - 1 if cfg.spatial == "3d" else 2
        patch = tuple(int(round(p / self.scale)) for p in cfg.patch_size)
        self.net_split = self._comparison_split(items, patch)
        self._refit_forest_without(self.net_split)
        # after the refit: pseudo-labels from a forest that saw held-out strokes would carry them into
        # the network, which is then scored on them
        probs = self._forest_probabilities(items, self._pseudo_step()) if self.params["pseudo_labels"] else {}
        # both learners are scored on the same held-out pixels, which neither trained on
        self.forest_val = forest_validation(self.forest.forest, self.net_split, self.forest.cache,
                                            self.class_names, self.multilabel) if self.net_split.enabled else None
        self._fit_forest_on_everything(items)
        net_items = self._network_items(self.net_split, probs)
        model = dict(cfg.model)
        if self.scale != 1.0:
            model["input_scale"] = self.scale
        budget = cfg.time_budget_s
        if budget is not None:  # the budget covers the forest too: the network gets what is left
            budget = max(1.0, budget - (time.perf_counter() - self._t_start))
        net_cfg = replace(cfg, method=str(self.params["network"]), method_params={}, val_fraction=0.0,
                          time_budget_s=budget,
                          patch_size=patch if len(patch) == nd else cfg.patch_size, model=model,
                          output_dir=None if self.out_dir is None else str(self.out_dir / "network"))
        info = {"scale": self.scale, "diameter": self.diameter, "patch_size": list(net_cfg.patch_size),
                "pseudo_labelled_items": len(probs)}
        return net_cfg, net_items, info

    def _refit_forest_without(self, split: ValidationSplit) -> bool:
        """Refit the forest without ``split``'s held-out pixels when it trained on some of them.

        The network's split has larger windows (its patch at the working scale) and so keeps other
        held-out blocks than the forest's own split: scored on them, the forest would be scored partly
        on its training pixels (a quarter of them on synthetic nuclei at scale 0.5), and shown when the
        network is better.
        """
        own = self.forest.split
        if not split.enabled or own is None or not _trained_on_held_out(own, split, self.multilabel):
            return False
        self.forest._fit(list(self.forest.items), validate=False, split=split)
        self.forest_refits += 1
        return True

    def _fit_forest_on_everything(self, items: Sequence[TrainingItem]) -> None:
        """Once scored, refit the forest on every painted pixel, held-out ones included: the forest shown,
        saved and used by Predict is the one the person would get from the forest alone (holding out a
        share of sparse strokes cost it up to 0.05 test Dice)."""
        if self.net_split is None or not self.net_split.enabled:
            return  # nothing was held out: the forest already saw everything
        cfg = self.config
        whole = split_validation(list(items), 0.0, cfg.patch_size, cfg.spatial, self.multilabel)
        self.forest._fit(list(items), validate=False, split=whole)
        self.forest_refits += 1

    def _comparison_split(self, items: Sequence[TrainingItem], patch: Sequence[int]) -> ValidationSplit:
        """The held-out pixels both learners are scored on: whole images once ``compare_images`` are
        painted (what Predict on another image will meet), else blocks inside the painted images."""
        cfg = self.config
        least = self.params["compare_images"]
        if isinstance(least, bool) or not isinstance(least, int) or least < 0:
            raise ConfigError(f"auto parameter compare_images must be an integer >= 0, got {least!r}")
        if least and cfg.val_fraction > 0 and count_painted(items, self.multilabel) >= max(least, 2):
            return split_by_item(items, cfg.val_fraction, patch, cfg.spatial, self.multilabel, seed=cfg.seed)
        return split_validation(items, cfg.val_fraction, patch, cfg.spatial, self.multilabel,
                                block=self._compare_block(), seed=cfg.seed)

    def _compare_block(self) -> int:
        """Edge of the held-out blocks both learners are scored on (larger: farther from training strokes)."""
        block = self.params["compare_block"]
        if isinstance(block, bool) or not isinstance(block, int) or (block != 0 and block < 4):
            raise ConfigError(f"auto parameter compare_block must be 0 (val_block) or >= 4 pixels, got {block!r}")
        return block or self.config.val_block

    def _evaluate_network(self) -> Validation | None:
        assert self.net is not None and self.net_split is not None
        if not self.net_split.enabled:
            # nothing held out to compare on: keep the network as trained; the forest stays shown
            # until the network has finished
            self.best_net_iteration = self.net.iteration
            self.best_net_state = {k: v.detach().to("cpu", copy=True) for k, v in self.net.model.state_dict().items()}
            return None
        cfg = self.net.config
        metrics = evaluate_split(self.net.model, self.net_split, self.class_names, self.multilabel,
                                 self.net.device, cfg.batch_size, self.net.amp)
        improved = self.net_val is None or _better(metrics, self.net_val)
        if improved:
            self.net_val = metrics
            self.best_net_iteration = self.net.iteration
            self.best_net_state = {k: v.detach().to("cpu", copy=True) for k, v in self.net.model.state_dict().items()}
        before = self.winner
        if self.forest_val is None or (self.net_val is not None and _shows_network(
                self.net_val, self.forest_val, float(self.params["tie_margin"]))):
            self.winner = "network"
        else:
            self.winner = "forest"
        record = {"kind": "val", "iteration": self.net.iteration, "val_loss": metrics["val_loss"],
                  "dice_mean": metrics["dice_mean"], "forest_dice": (self.forest_val or {}).get("dice_mean"),
                  "winner": self.winner, "seconds": time.perf_counter() - self._t_start}
        self.history.append(record)
        return Validation.from_metrics(self.net.iteration, cfg.iterations, metrics, best=improved,
                                       best_val_loss=self.net_val["val_loss"], source="network",
                                       forest=self.forest_val, winner=self.winner, changed=before != self.winner)

    def _save_network(self, folder: Path) -> Path:
        from ..models.checkpoint import save_model

        assert self.net is not None
        model = self.net.model
        current = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        try:
            if self.best_net_state is not None:
                model.load_state_dict(self.best_net_state)
            save_model(folder, model, {
                "class_names": list(self.class_names), "multilabel": self.multilabel,
                "train_config": self.net.config.to_dict(), "method": self.net.method.name,
                "normalisation": self.net.normalisation, "history": list(self.net.history),
                "iteration": self.best_net_iteration,
                "val_loss": None if self.net_val is None else self.net_val["val_loss"],
                "auto": {"scale": self.scale, "diameter": self.diameter},
            })
        finally:
            model.load_state_dict(current)
        return folder

    def _forest_preview(self) -> Update:
        upd = self.forest._preview()
        return replace(upd, iteration=self.iteration, total=self.config.iterations, source="forest")

    def _apply_pending(self) -> Iterator[Update]:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        from ..data.checks import check_items

        try:
            checked = check_items(pending, len(self.class_names) if not self.multilabel else len(self.class_names),
                                  self.multilabel, self.config.spatial)
            split = None
            if self.net is not None:  # the forest holds out the pixels both learners are scored on
                split = self._comparison_split(checked, self.net.config.patch_size)
            for upd in self.forest._fit(checked, validate=False, split=split):
                yield replace(upd, iteration=self.iteration, total=self.config.iterations, source="forest")
        except ValueError as exc:
            yield self._log(f"new annotations not used: {exc}", "warning")
            return
        if self.net is not None and split is not None:
            probs = self._forest_probabilities(checked, self._pseudo_step()) if self.params["pseudo_labels"] else {}
            self.net_split = split
            self.forest_val = forest_validation(self.forest.forest, self.net_split, self.forest.cache,
                                                self.class_names, self.multilabel) if self.net_split.enabled else None
            self._fit_forest_on_everything(checked)
            self.net.set_items(self._network_items(self.net_split, probs))
            self.net_val = None  # new held-out pixels: the network's old scores do not compare
        if self.winner == "forest":
            yield self._forest_preview()

    def _run(self) -> Iterator[Update]:
        cfg = self.config
        yield Started(0, cfg.iterations, device="cpu", method="auto", start_iteration=0, amp=False,
                      n_items=len(self.forest.items), validation=cfg.val_fraction > 0)
        yield from self._forest_phase()
        net_cfg, net_items, info = self._prepare_network(self.forest.items)
        if self.forest_refits:
            yield self._forest_preview()  # the forest refitted (see _fit_forest_on_everything)
        if self.out_dir is not None:
            self.forest.save(self.out_dir / "forest")
            yield Checkpoint(0, cfg.iterations, path=str(self.out_dir / "forest"), which="forest", val_loss=None)
        yield self._log(
            f"forest ready in {self.forest.fit_seconds:.1f} s (held-out Dice "
            f"{_fmt((self.forest_val or {}).get('dice_mean'))}); network training at scale {self.scale:g} "
            f"with {net_cfg.patch_size} patches"
            + (f", pseudo-labels from the forest on {info['pseudo_labelled_items']} image(s)"
               if info["pseudo_labelled_items"] else "")
        )
        self.net = Trainer(net_cfg, net_items, self.class_names, multilabel=self.multilabel, control=self.control)
        index, region = self._preview_request
        self.net.request_preview(index, region)
        self.net._preview_new = False  # the forest's preview is showing; the network's come on schedule
        outcome: dict[str, Any] = {}
        yield from self._network_phase(outcome)
        if outcome.get("failed"):
            return
        yield from self._finish(outcome.get("reason", "done"))

    def _forest_phase(self) -> Iterator[Update]:
        """The forest: a quick one first when a person waits, then the full one, shown and saved."""
        cfg = self.config
        if self._interactive:
            from ..forest.tiles import shared_cache

            self.forest.cache = shared_cache(self.forest.bank)  # features the panel prefetched
            if self.forest.quick_differs:  # a first answer within about a second, refined at once
                for upd in self.forest._fit(self.forest.items, validate=False, quick=True):
                    yield replace(upd, iteration=0, total=cfg.iterations, source="forest")
                yield self._forest_preview()
        # scored later, on the network's held-out split (the same pixels for both learners)
        for upd in self.forest._fit(self.forest.items, validate=False):
            yield replace(upd, iteration=0, total=cfg.iterations, source="forest")
        yield self._forest_preview()

    def _network_phase(self, outcome: dict[str, Any]) -> Iterator[Update]:
        """The network's updates, relabelled by source, with comparisons every ``val_every`` steps;
        ``outcome`` gets the finish reason, or ``failed``."""
        assert self.net is not None
        last_eval = 0
        for upd in self.net.updates():
            yield from self._apply_pending()
            kind = upd.kind
            if kind == UpdateKind.STARTED:
                continue
            if isinstance(upd, Finished):
                outcome["reason"] = upd.reason
                return
            if kind == UpdateKind.FAILED:
                self.result = TrainResult(None, None, self.history, "failed", self.iteration)
                outcome["failed"] = True
                yield upd
                return
            if kind == UpdateKind.CHECKPOINT:
                continue  # the network's own last/ folders; the chosen model is written at the end
            if kind == UpdateKind.PREVIEW:
                yield replace(upd, source="network") if self.winner == "network" else self._forest_preview()
                continue
            if isinstance(upd, Progress):
                yield replace(upd, source="network", winner=self.winner)
                if upd.iteration - last_eval >= self.config.val_every:
                    last_eval = upd.iteration
                    yield from self._compare()
                continue
            yield upd

    def _compare(self) -> Iterator[Update]:
        """Score the network against the forest; say so when the shown learner changes."""
        assert self.net is not None
        val = self._evaluate_network()
        if val is None:
            return
        yield val
        if val.changed:
            yield self._log(f"now showing the {self.winner} (held-out Dice: network "
                            f"{_fmt((self.net_val or {}).get('dice_mean'))}, forest "
                            f"{_fmt((self.forest_val or {}).get('dice_mean'))})")
            if self.winner == "network":
                self.net.request_preview(*self._preview_request)

    def _finish(self, reason: str) -> Iterator[Update]:
        """The last comparison, the chosen model folder (``best``) and the FINISHED update."""
        cfg = self.config
        assert self.net is not None
        val = self._evaluate_network()
        if val is not None:
            yield val
        if self.net_split is not None and not self.net_split.enabled:
            self.winner = "network"  # nothing held out to compare on: the network, as trained
        best = None
        if self.out_dir is not None:
            net_dir = self._save_network(self.out_dir / "network" / "best")
            best = net_dir if self.winner == "network" else self.out_dir / "forest"
            choice = {"winner": self.winner, "best": str(best), "forest": self.forest_val, "network": self.net_val,
                      "network_iteration": self.best_net_iteration, "scale": self.scale, "diameter": self.diameter}
            (self.out_dir / "choice.json").write_text(json.dumps(choice, indent=2, default=float) + "\n")
            yield Checkpoint(self.iteration, cfg.iterations, path=str(best), which="best", val_loss=None,
                             source=self.winner)
        if self.winner == "network" and self.best_net_state is not None:
            self.net.model.load_state_dict(self.best_net_state)
        self.result = TrainResult(best, best, self.history, reason, self.iteration,
                                  None if self.net_val is None else self.net_val["val_loss"])
        yield Finished(
            self.iteration, cfg.iterations, best_path=None if best is None else str(best),
            last_path=None if best is None else str(best), reason=reason, best_val_loss=self.result.best_val_loss,
            winner=self.winner, seconds=time.perf_counter() - self._t_start, history=list(self.history),
        )

def _trained_on_held_out(trained: ValidationSplit, scored: ValidationSplit, multilabel: bool) -> bool:
    """Whether a learner fitted on ``trained``'s training pixels saw any pixel ``scored`` holds out."""
    for fit_item, score_src, score_train in zip(trained.train_items, scored.source_items, scored.train_items):
        if score_src.target is None or fit_item.target is None:
            continue
        held = known_mask(score_src.target, multilabel) & ~known_mask(score_train.target, multilabel)
        if (held & known_mask(fit_item.target, multilabel)).any():
            return True
    return False


def _better(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True when validation ``a`` beats ``b``: higher mean Dice, then lower loss."""
    da, db = a.get("dice_mean"), b.get("dice_mean")
    if da is not None and db is not None and da != db:
        return da > db
    return a["val_loss"] < b["val_loss"]


def _shows_network(net: dict[str, Any], forest: dict[str, Any], margin: float) -> bool:
    """Whether the network is shown: its held-out Dice at least the forest's minus ``margin``.

    A margin above 0 gives near ties to the network. It was tried when the forest's held-out score
    was inflated by pixels it had trained on (see ``_refit_forest_without``); with that fixed, the
    default is 0 until the benchmarks say otherwise (docs/benchmarks.md).
    """
    dn, df = net.get("dice_mean"), forest.get("dice_mean")
    if dn is None or df is None:
        return _better(net, forest)
    if margin > 0:
        return dn >= df - margin
    return _better(net, forest)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"
