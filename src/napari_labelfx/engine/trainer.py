"""The training loop: synchronous, driven by a picklable :class:`TrainConfig`, emitting ``Update``s.

``Trainer.updates()`` is a generator: each ``next()`` runs training until the next message
(progress, validation, preview, checkpoint, ...). A GUI runs it in a background process (see
``engine/runner.py``) and a CLI in the foreground (``Trainer.run``). Between steps the trainer
checks its :class:`TrainerControl` (pause/resume/stop) and applies new annotations
(``set_items``) and preview requests (``request_preview``), which may come from another thread.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
import traceback
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..annotations.kinds import TrainingItem
from ..core.device import amp_supported, autocast_context, select_device
from ..core.results import MethodResult
from ..data.augment import AugmentConfig, Augmenter
from ..data.checks import check_items
from ..data.errors import TrainingDataError
from ..data.sampling import PatchSampler
from ..data.split import ValidationSplit, split_validation
from ..methods import MethodContext, create_method
from .config import ConfigError, TrainConfig
from .control import TrainerControl
from .distributed import DistributedRun, check_config, current
from .optim import AdamW, lr_factor
from .preview import RegionError, predict_region, resolve_region
from .run_state import LossWindow, PreviewSchedule, RunState
from .state import ResumeError, load_training_state, save_training_state
from .updates import (
    Checkpoint,
    Failed,
    Finished,
    Log,
    Paused,
    Preview,
    Progress,
    Result,
    Resumed,
    Started,
    Update,
    Validation,
)
from .validation import evaluate_split

__all__ = ["TrainConfig", "TrainResult", "Trainer", "TrainerControl", "TrainingFailed", "describe_failure"]

log = logging.getLogger(__name__)

#: Written into every model folder: how raw images must be normalised before prediction.
DEFAULT_NORMALISATION = {"low": 1.0, "high": 99.8, "robust": True}
#: Floor of the cosine schedule, as a fraction of the base learning rate.
MIN_LR_FACTOR = 0.01
#: Sleep between checks of a paused control (seconds).
PAUSE_POLL_S = 0.05


class TrainingFailed(RuntimeError):
    """Training ended with a FAILED update (raised by :meth:`Trainer.run`); ``reason`` says why."""

    def __init__(self, reason: str, update: Update | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.update = update


@dataclass
class TrainResult:
    """Outcome of a finished run.

    Attributes
    ----------
    best_dir : model folder of the best model (by validation loss; the last model without
        validation), or None without ``output_dir``.
    last_dir : model folder of the last model, or None without ``output_dir``.
    history : PROGRESS and VALIDATION records (dicts with ``kind`` "train" or "val").
    stopped_reason : ``"done"``, ``"stopped"``, ``"early-stopping"`` or ``"failed"``.
    iterations : iterations completed.
    best_val_loss : best validation loss, None without validation.
    """

    best_dir: Path | None
    last_dir: Path | None
    history: list[dict]
    stopped_reason: str
    iterations: int = 0
    best_val_loss: float | None = None


def describe_failure(exc: BaseException, iteration: int | None = None) -> str:
    """A reason a person can act on, for an exception raised while training."""
    text = str(exc).strip() or exc.__class__.__name__
    low = text.lower()
    oom = isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in low
    if oom and ("cuda" in low or "gpu" in low or "mps" in low or isinstance(exc, torch.cuda.OutOfMemoryError)):
        return "out of GPU memory: reduce batch or patch size (or use a smaller model preset)"
    if oom or "can't allocate memory" in low or isinstance(exc, MemoryError):
        return "out of memory: reduce batch or patch size (or use a smaller model preset)"
    if isinstance(exc, (TrainingDataError, ConfigError, ResumeError, TrainingFailed)):
        return text
    where = f" at iteration {iteration}" if iteration is not None else ""
    return f"training failed{where}: {exc.__class__.__name__}: {text}"


def failed_update(exc: BaseException, iteration: int, total: int) -> Update:
    """The FAILED update every trainer ends with when an exception escapes its loop."""
    return Failed(iteration, total, reason=describe_failure(exc, iteration), error_type=exc.__class__.__name__,
                  traceback=traceback.format_exc(limit=20))


def _dir_or_none(path: str | None) -> Path | None:
    return None if path is None else Path(path)


def _same_array(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is b
    return a is b or (a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b))


def _same_items(new: Sequence[TrainingItem], old: Sequence[TrainingItem]) -> bool:
    """True when two item lists hold the same images and annotations."""
    return len(new) == len(old) and all(
        _same_array(n.image, o.image) and _same_array(n.target, o.target)
        and _same_array(n.instances, o.instances) and _same_array(n.tags, o.tags)
        for n, o in zip(new, old)
    )


def _validation_signature(split: ValidationSplit) -> str:
    """Digest of the held-out pixels and their labels (to tell whether validation losses still compare)."""
    h = hashlib.sha1()
    for w in split.windows:
        _, target = split.window_arrays(w)
        h.update(repr((w.item_index, w.start, w.size)).encode())
        h.update(np.packbits(w.mask).tobytes())
        h.update(np.ascontiguousarray(target).tobytes())
    return h.hexdigest()


class Trainer:
    """Train a method's networks on training items and report progress as ``Update`` messages.

    Parameters
    ----------
    config : a :class:`TrainConfig` or its dict form.
    items : training items (images normalised; indices into this list name images in previews).
    class_names : class names; multi-class: background first; multi-label: one per channel.
    multilabel : targets are (K, ...) uint8 with 255 = unknown.
    control : pause/resume/stop switches (a new one when None); also ``trainer.control``.

    Raises
    ------
    ValueError subclasses (ConfigError, TrainingDataError, MethodError, DeviceError, ResumeError, ...)
        for unusable settings or data, with a message naming the setting or item.
    """

    def __init__(
        self,
        config: TrainConfig | dict,
        items: Sequence[TrainingItem],
        class_names: Sequence[str],
        multilabel: bool = False,
        control: TrainerControl | None = None,
    ) -> None:
        self.config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        cfg = self.config
        self.class_names = [str(c) for c in class_names]
        self.multilabel = bool(multilabel)
        self.num_classes = len(self.class_names)
        if len(set(self.class_names)) != self.num_classes:
            raise ConfigError(f"class names must be unique, got {self.class_names}")
        if self.num_classes < (1 if self.multilabel else 2):
            raise ConfigError(
                "multi-class training needs a background class and at least one more class; "
                f"got class names {self.class_names}"
            )
        self.control = control if control is not None else TrainerControl()
        # several processes (torchrun): DDP step, rank-0-only validation and checkpoints (engine/distributed.py)
        self._dist: DistributedRun | None = current()
        if self._dist is not None:
            check_config(cfg, self._dist.world_size)
        self._ddp: nn.Module | None = None
        self.method = create_method(cfg.method, cfg.method_params)
        if self.multilabel and not self.method.supports_multilabel:
            raise ConfigError(f"method {cfg.method!r} does not support multi-label targets")
        self.augment_config = AugmentConfig.from_dict(cfg.augment)
        self.items = check_items(items, self.num_classes, self.multilabel, cfg.spatial)
        self.device = select_device(cfg.device)
        self.amp = cfg.amp and amp_supported(self.device)
        self._resume_config: dict[str, Any] | None = None
        self._resume_state: dict[str, Any] | None = None
        resumed_model = self._load_resume() if cfg.resume_from else None
        self.model_config = self._make_model_config()
        torch.manual_seed(cfg.seed)  # identical initial weights for identical seeds
        self.models: dict[str, nn.Module] = self.method.build_models(self.model_config)
        if self.model_config.input_scale != 1.0 and not self.method.supports_input_scale:
            raise ConfigError(
                f"method {cfg.method!r} reads the network's features, so it cannot run at a working scale "
                f"(model input_scale={self.model_config.input_scale}); use input_scale 1 or scale the images"
            )
        if self.method.inference_model not in self.models:
            raise ConfigError(
                f"method {cfg.method!r} names {self.method.inference_model!r} as its inference network "
                f"but built {sorted(self.models)}"
            )
        if resumed_model is not None:
            self.model.load_state_dict(resumed_model.state_dict())
        for m in self.models.values():
            m.to(self.device)
        extra = self.items[0].extra if isinstance(self.items[0].extra, dict) else {}
        self.normalisation = dict(extra.get("normalisation") or DEFAULT_NORMALISATION)
        self.history: list[dict] = list((self._resume_config or {}).get("history") or [])
        self.iteration = 0
        self.result: TrainResult | None = None
        self._started = False
        self._pending_items: list[TrainingItem] | None = None
        self._preview_request: tuple[int, tuple[slice, ...] | None] = (0, None)
        self._preview_new = False
        self._outbox: list[Update] = []
        self._split_message: str | None = None

    # -- public API ----------------------------------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        """The network used for inference (after training: the best weights by validation loss)."""
        return self.models[self.method.inference_model]

    def set_items(self, items: Sequence[TrainingItem]) -> None:
        """Replace the training items (newer annotations); applied before the next step.

        The items are checked when applied; unusable items become a LOG warning and training goes
        on with the previous ones. Safe to call from another thread.
        """
        self._pending_items = list(items)  # one reference assignment: atomic under the GIL

    def request_preview(self, image_index: int, region: tuple[slice, ...] | None = None) -> None:
        """Preview ``region`` (spatial slices; None = default) of item ``image_index`` from now on.

        A preview of the new region is sent after the current step. Safe to call from another thread.
        """
        self._preview_request = (int(image_index), None if region is None else tuple(region))
        self._preview_new = True

    def predict_region(
        self, image_index: int, region: tuple[slice, ...] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Labels and confidence of the current inference network on a region of an item.

        Call it between steps (from the consumer of :meth:`updates`) or after training.
        """
        item, region = self._resolve_region(image_index, region)
        return predict_region(
            self.model, item, region, self.config.spatial, self.config.patch_size, self.device,
            self.multilabel, self.amp, self.config.batch_size,
        )

    def run(self, progress: Any = None) -> TrainResult:
        """Train to the end, consuming the updates.

        Parameters
        ----------
        progress : optional tqdm-like object: ``update(n)`` with the iterations done and
            ``set_postfix(...)`` with loss and learning rate.

        Raises
        ------
        TrainingFailed
            When training ends with a FAILED update.
        """
        last = 0
        for upd in self.updates():
            if isinstance(upd, Started):
                last = upd.iteration
                if progress is not None and last:
                    progress.update(last)
            elif isinstance(upd, Progress) and progress is not None:
                progress.update(upd.iteration - last)
                last = upd.iteration
                if hasattr(progress, "set_postfix"):
                    progress.set_postfix(loss=f"{upd.loss:.4f}", lr=f"{upd.lr:.2e}")
            elif isinstance(upd, Validation) and progress is not None and hasattr(progress, "set_postfix"):
                progress.set_postfix(val_loss=f"{upd.val_loss:.4f}")
            elif isinstance(upd, Log):
                log.log(logging.WARNING if upd.level == "warning" else logging.INFO, upd.message)
            elif isinstance(upd, Failed):
                raise TrainingFailed(upd.reason, upd)
        assert self.result is not None
        return self.result

    def updates(self) -> Iterator[Update]:
        """Train, yielding :class:`Update` messages; failures become a final FAILED update.

        Order: STARTED, (LOG), then PROGRESS every ``log_every`` iterations, VALIDATION every
        ``val_every``, PREVIEW right after the first PROGRESS and then every ``preview_every_s``
        seconds (or on request), CHECKPOINT when a model folder is written, PAUSED/RESUMED, RESULT
        (method layers), and finally FINISHED or FAILED.
        """
        if self._started:
            raise RuntimeError("Trainer.updates() runs once; create a new Trainer to train again")
        self._started = True
        try:
            yield from self._train()
        except Exception as exc:  # noqa: BLE001 - every failure must reach the person as a message
            log.debug("training failed", exc_info=True)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.result = TrainResult(None, None, self.history, "failed", self.iteration)
            yield failed_update(exc, self.iteration, self.config.iterations)

    # -- setup ---------------------------------------------------------------------------------------
    def _load_resume(self) -> nn.Module:
        from ..models.checkpoint import load_model

        folder = Path(self.config.resume_from)
        if folder.suffix == ".zip":  # a bioimage.io package made by labelfx: its model folder
            from ..export.bioimageio_import import resolve_model

            folder = resolve_model(folder)
        if not folder.is_dir():
            raise ResumeError(f"{folder}: cannot resume: no such model folder")
        model, config = load_model(folder, device="cpu")
        if config.get("method") not in (None, self.config.method):
            raise ResumeError(
                f"{folder}: was trained with method {config.get('method')!r}, cannot resume it with {self.config.method!r}"
            )
        self._resume_config = config
        self._resume_state = load_training_state(folder)
        return model

    def _make_model_config(self) -> Any:
        from ..models import PRESETS, ModelConfig

        cfg = self.config
        data = {
            "spatial_dims": 2 if cfg.spatial == "2d" else 3,
            "in_channels": int(self.items[0].image.shape[0]),
            "num_classes": self.num_classes,
            "multilabel": self.multilabel,
        }
        if self._resume_config is not None:
            mc = ModelConfig.from_dict(self._resume_config["model"])
            wrong = {k: (getattr(mc, k), v) for k, v in data.items() if getattr(mc, k) != v}
            if wrong:
                detail = ", ".join(f"{k}: model {a}, data {b}" for k, (a, b) in wrong.items())
                raise ResumeError(f"{cfg.resume_from}: the saved model does not fit this training data ({detail})")
            return mc
        if cfg.preset not in PRESETS:
            raise ConfigError(f"unknown model preset {cfg.preset!r}; available: {sorted(PRESETS)}")
        for key, value in data.items():
            if key in cfg.model and cfg.model[key] != value:
                raise ConfigError(f"model setting {key}={cfg.model[key]!r} contradicts the training data ({value!r})")
        return ModelConfig.from_dict({**PRESETS[cfg.preset], **cfg.model, **data})

    def _prepare_data(self, items: list[TrainingItem]) -> None:
        """Validation split and sampler for ``items`` (already checked)."""
        cfg = self.config
        split = split_validation(
            items, cfg.val_fraction, cfg.patch_size, cfg.spatial, self.multilabel,
            block=cfg.val_block, seed=cfg.seed,
        )
        sampler = PatchSampler(
            split.train_items, cfg.patch_size, cfg.spatial, self.multilabel, self.num_classes,
            annotated_fraction=cfg.annotated_fraction, rng=self._sampler_rng,
            require_target=self.method.needs_target,
        )
        self.items, self._split, self._sampler = items, split, sampler
        if split.message and split.message != self._split_message:
            self._log(split.message, "warning")  # once, not at every refresh of the annotations
        self._split_message = split.message

    def _log(self, message: str, level: str = "info") -> None:
        self._outbox.append(Log(self.iteration, self.config.iterations, message=message, level=level))

    def _emit_result(self, result: MethodResult) -> None:
        """Queue a RESULT update with a method's result (nothing when it is empty)."""
        if not result:
            return
        self._outbox.append(Result.of(self.iteration, self.config.iterations, result, self.method.name))

    def _drain(self) -> Iterator[Update]:
        while self._outbox:
            yield self._outbox.pop(0)

    def _set_training_items(self, items: list[TrainingItem]) -> None:
        """For methods: draw patches from these items (pseudo-labels), keep the validation split."""
        checked = check_items(items, self.num_classes, self.multilabel, self.config.spatial)
        cfg = self.config
        self._sampler = PatchSampler(
            checked, cfg.patch_size, cfg.spatial, self.multilabel, self.num_classes,
            annotated_fraction=cfg.annotated_fraction, rng=self._sampler_rng,
            require_target=self.method.needs_target,
        )
        self._ctx.items = checked

    def _predict_probs(self, image: np.ndarray) -> np.ndarray:
        from .preview import predict_probabilities

        model = self.model
        was = model.training
        model.eval()
        try:
            with torch.inference_mode():
                return predict_probabilities(model, image, self.device, self.multilabel, self.config.patch_size,
                                             self.amp, self.config.batch_size)
        finally:
            model.train(was)

    # -- the loop ------------------------------------------------------------------------------------
    def _train(self) -> Iterator[Update]:
        """Between steps: control and new annotations; then a step, reports, validation and previews."""
        run = self._start_run()
        yield from self._announce_start(run)
        total = self.config.iterations
        reason = "done"
        while self.iteration < total:
            stop = self._stop_reason(run)
            if stop is not None:
                reason = stop
                break
            if self.control.is_paused:
                yield from self._pause(run)
                continue
            yield from self._take_new_items(run)
            yield from self._optimisation_step(run)
            progress = self._progress(run)
            if progress is not None:
                yield progress
            if (yield from self._validate(run)):
                reason = "early-stopping"
                break
            yield from self._scheduled_preview(run)
        if self._dist is not None:  # DDP syncs buffers (BatchNorm statistics) before each step: once more
            self._dist.sync_buffers(self.models)
        yield from self._finish(run, reason)

    def _start_run(self) -> RunState:
        """Seeds, data, optimiser and method context; the resumed state when there is one."""
        cfg = self.config
        t_start = self._t_start = time.perf_counter()
        dist = self._dist
        # each rank draws its own patches, augmentations and method randomness; rank 0 as one process
        self._sampler_rng = np.random.default_rng(dist.seed([cfg.seed, 1]) if dist else [cfg.seed, 1])
        augmenter = Augmenter(self.augment_config, 2 if cfg.spatial == "2d" else 3,
                              np.random.default_rng(dist.seed([cfg.seed, 2]) if dist else [cfg.seed, 2]))
        torch.manual_seed(dist.torch_seed(cfg.seed + 1) if dist else cfg.seed + 1)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed patch size: let cuDNN pick fast kernels
        self._prepare_data(self.items)
        groups = self.method.parameter_groups(self.models, cfg.weight_decay)
        optimizer = AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self._ctx = ctx = MethodContext(
            iteration=0, total_iterations=cfg.iterations, num_classes=self.num_classes, multilabel=self.multilabel,
            class_names=list(self.class_names), device=self.device, models=self.models,
            epoch_length=self._sampler.epoch_length(cfg.batch_size), items=self._split.train_items,
            log=self._log, predict=self._predict_probs, set_training_items=self._set_training_items,
            emit_result=self._emit_result,
        )
        if self._resume_state is not None:
            # the best model is chosen within this run: its validation set may differ from the last run's
            self._restore_state(self._resume_state, optimizer, scaler, augmenter)
        elif self._resume_config is not None:
            self.iteration = int(self._resume_config.get("iteration", 0))
            self._log("no training_state.pt in the model folder: resuming the weights with a fresh optimizer", "warning")
        ctx.iteration = self.iteration
        ctx.epoch = self.iteration // ctx.epoch_length
        if dist is not None:  # after the resume: DDP starts every rank from rank 0's weights
            self._ddp = dist.wrap(self.method, self.models, ctx)
        return RunState(optimizer=optimizer, scaler=scaler, augmenter=augmenter, ctx=ctx,
                        out_dir=None if dist and not dist.is_main else _dir_or_none(cfg.output_dir), t_start=t_start,
                        window=LossWindow(t_start), preview=PreviewSchedule.start(cfg.preview_every_s))

    def _announce_start(self, run: RunState) -> Iterator[Update]:
        total = self.config.iterations
        yield Started(
            self.iteration, total, device=str(self.device), method=self.method.name,
            start_iteration=self.iteration, amp=self.amp, model=self.model_config.to_dict(),
            n_items=len(self.items), n_train_pixels=self._split.n_train_pixels,
            n_val_pixels=self._split.n_val_pixels, validation=self._split.enabled,
            epoch_length=run.ctx.epoch_length,
        )
        self.method.on_start(run.ctx)
        yield from self._drain()
        if self.iteration >= total:
            self._log(f"the model already has {self.iteration} iterations (>= {total}): nothing to train", "warning")
            yield from self._drain()
        # training time and the preview timer start here, after the start-up work
        run.window.t_start = run.preview.last = time.perf_counter()

    def _stop_reason(self, run: RunState) -> str | None:
        """``"stopped"`` (control) or ``"time-budget"`` when the run must end before the next step."""
        if self.control.should_stop:
            return "stopped"
        budget = self.config.time_budget_s
        if budget is not None and time.perf_counter() - run.t_start >= budget:
            return "time-budget"
        return None

    def _pause(self, run: RunState) -> Iterator[Update]:
        """Wait while paused; previews asked for meanwhile are still made."""
        total = self.config.iterations
        t_pause = time.perf_counter()
        yield Paused(self.iteration, total)
        while self.control.is_paused and not self.control.should_stop:
            self.control.wait_while_paused(PAUSE_POLL_S)
            if self._preview_new:  # the person looks elsewhere while paused: show it
                upd = self._safe_preview()
                yield from [upd] if upd is not None else self._drain()
                run.preview.last = time.perf_counter()
        # paused time is neither training time nor time the person waits for training
        run.window.exclude(time.perf_counter() - t_pause, waited=False)
        run.paused_s += time.perf_counter() - t_pause
        if not self.control.should_stop:
            yield Resumed(self.iteration, total)

    def _take_new_items(self, run: RunState) -> Iterator[Update]:
        """Swap in annotations sent with ``set_items`` since the last step."""
        pending, self._pending_items = self._pending_items, None
        if pending is None:
            return
        old_signature = _validation_signature(self._split)
        if self._apply_items(pending) and _validation_signature(self._split) != old_signature:
            run.best.reset()
        yield from self._drain()

    def _optimisation_step(self, run: RunState) -> Iterator[Update]:
        """One step, then the method's per-iteration, pseudo-label and end-of-epoch hooks."""
        ctx = run.ctx
        run.lr = self._set_lr(run.optimizer, self.iteration)
        loss, terms = self._step(run.augmenter, run.optimizer, run.scaler, ctx)
        self.iteration += 1
        ctx.iteration = self.iteration
        run.window.add(loss, terms)
        self.method.on_iteration(ctx)
        every = self.method.pseudo_label_every
        if every > 0 and self.iteration % every == 0:
            self.method.pseudo_label_step(ctx)
        if self.iteration % ctx.epoch_length == 0:
            ctx.epoch += 1
            self.method.on_epoch_end(ctx)
            self._emit_result(self.method.result_layers())
        yield from self._drain()

    def _progress(self, run: RunState) -> Update | None:
        """A PROGRESS update every ``log_every`` iterations and at the last one; a non-finite loss fails."""
        cfg = self.config
        if not (self.iteration % cfg.log_every == 0 or self.iteration == cfg.iterations):
            return None
        now = time.perf_counter()
        mean_loss, losses, its = run.window.close(now)
        wall = run.window.wall_its_per_s
        share = run.preview_s / max(now - run.t_start - run.paused_s, 1e-9)
        if self._dist is not None:  # the loss of the whole (all ranks') batch
            mean_loss = self._dist.mean(mean_loss)
        if not math.isfinite(mean_loss):
            raise TrainingFailed(
                f"the loss became {mean_loss} at iteration {self.iteration}: lower the learning rate "
                "or check that the images are normalised"
            )
        lr = run.lr
        self.history.append({"kind": "train", "iteration": self.iteration, "loss": mean_loss, "lr": lr,
                             "its_per_s": its, **{f"loss_{k}": v for k, v in losses.items()}})
        run.progress_sent = True
        return Progress(
            self.iteration, cfg.iterations, loss=mean_loss, losses=losses, lr=lr, its_per_s=its, epoch=run.ctx.epoch,
            # what the person sees advance (previews and validation included): the panel shows this
            wall_its_per_s=wall, preview_share=share,
            elapsed_s=now - run.t_start, eta_s=(cfg.iterations - self.iteration) / max(wall, 1e-9),
        )

    def _validate(self, run: RunState) -> Generator[Update, None, bool]:
        """Validation and checkpoints every ``val_every`` iterations; returns True to stop early."""
        cfg = self.config
        total = cfg.iterations
        due = self.iteration % cfg.val_every == 0 or self.iteration == total
        if not self._split.enabled:  # no validation set: the last model is still saved now and then
            if run.out_dir is not None and self.iteration % cfg.val_every == 0 and self.iteration < total:
                yield self._save(run, "last", None)
            return False
        if not due:
            return False
        if self._dist is not None and not self._dist.is_main:
            return self._dist.agree(False)  # rank 0 validates and decides about early stopping
        t_val = time.perf_counter()
        metrics = evaluate_split(self.model, self._split, self.class_names, self.multilabel,
                                 self.device, cfg.batch_size, self.amp)
        improved = run.best.record(metrics["val_loss"], self.models)
        self.history.append({"kind": "val", "iteration": self.iteration, "val_loss": metrics["val_loss"],
                             "dice_mean": metrics["dice_mean"], "accuracy": metrics["accuracy"]})
        yield Validation.from_metrics(self.iteration, total, metrics, best=improved, best_val_loss=run.best.best_val)
        if improved and run.out_dir is not None:
            yield self._save(run, "best", run.best.last_val)
        if run.out_dir is not None and self.iteration < total:
            yield self._save(run, "last", run.best.last_val)
        run.window.exclude(time.perf_counter() - t_val)  # validation time is not training throughput
        bad = run.best.bad_validations
        stop = bool(cfg.early_stopping and bad >= cfg.early_stopping)
        if self._dist is not None:
            stop = self._dist.agree(stop)
        if stop:
            self._log(f"validation loss did not improve for {bad} validations: stopping early")
            yield from self._drain()
        return stop

    def _scheduled_preview(self, run: RunState) -> Iterator[Update]:
        """A preview when one was requested or the schedule says one is due (rank 0 only)."""
        if self._dist is not None and not self._dist.is_main:
            return
        if not (self._preview_new or run.preview.due(time.perf_counter(), run.progress_sent)):
            return
        t_prev = time.perf_counter()
        upd = self._safe_preview()
        t_done = time.perf_counter()
        run.preview.done(t_prev, t_done)
        run.window.exclude(t_done - t_prev)
        run.preview_s += t_done - t_prev
        if upd is not None:
            yield upd
        yield from self._drain()

    def _save(self, run: RunState, which: str, val_loss: float | None) -> Update:
        assert run.out_dir is not None
        return self._checkpoint(run.out_dir / which, which, run.optimizer, run.scaler, run.augmenter, val_loss,
                                run.best.best_val)

    def _finish(self, run: RunState, reason: str) -> Iterator[Update]:
        """The last model is saved, then the best one becomes the inference network; FINISHED."""
        last_dir = best_dir = None
        if run.out_dir is not None:
            yield self._save(run, "last", run.best.last_val)
            last_dir = best_dir = run.out_dir / "last"
            if run.best.state is not None and (run.out_dir / "best").is_dir():
                best_dir = run.out_dir / "best"
        run.best.restore(self.models)
        self._emit_result(self.method.result_layers())
        yield from self._drain()
        self.result = TrainResult(best_dir, last_dir, self.history, reason, self.iteration, run.best.best_or_none)
        yield Finished(
            self.iteration, self.config.iterations,
            best_path=None if best_dir is None else str(best_dir),
            last_path=None if last_dir is None else str(last_dir),
            reason=reason, best_val_loss=self.result.best_val_loss,
            seconds=time.perf_counter() - run.t_start, history=list(self.history),
        )

    def _step(self, augmenter: Augmenter, optimizer: AdamW, scaler: Any,
              ctx: MethodContext) -> tuple[torch.Tensor, dict[str, Any]]:
        batch_np = self._sampler.sample(self.config.batch_size)
        batch = {k: torch.from_numpy(v).to(self.device, non_blocking=True) for k, v in batch_np.items()}
        batch = augmenter(batch)
        batch["geometry"] = torch.from_numpy(batch["geometry"]).to(self.device)
        for m in self.models.values():
            m.train()
        with autocast_context(self.device, self.amp):
            if self._ddp is not None:  # forward and loss in one DDP module: gradients averaged in backward
                loss, terms = self._ddp(batch)
            else:
                outputs = self.method.forward(self.models, batch, ctx)
                loss, terms = self.method.loss(batch, outputs, ctx)
        optimizer.zero_grad(set_to_none=True)
        if self.amp:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return loss.detach().float(), terms

    def _set_lr(self, optimizer: AdamW, iteration: int) -> float:
        """Linear warm-up, then cosine decay to ``MIN_LR_FACTOR`` of the base rate."""
        cfg = self.config
        if cfg.time_budget_s is not None:
            # a wall-clock budget: the cosine follows the elapsed share of the budget after warm-up
            elapsed = time.perf_counter() - getattr(self, "_t_start", time.perf_counter())
            share = min(1.0, elapsed / cfg.time_budget_s)
            virtual = cfg.warmup + int(share * max(1, cfg.iterations - cfg.warmup))
            factor = lr_factor(max(iteration, virtual) if iteration >= cfg.warmup else iteration,
                               cfg.iterations, cfg.warmup, MIN_LR_FACTOR)
        else:
            factor = lr_factor(iteration, cfg.iterations, cfg.warmup, MIN_LR_FACTOR)
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"] * factor
        return cfg.lr * factor

    def _apply_items(self, items: list[TrainingItem]) -> bool:
        """Swap in new annotations; False when they are unchanged or unusable (then with a warning)."""
        try:
            checked = check_items(items, self.num_classes, self.multilabel, self.config.spatial)
            if _same_items(checked, self.items):  # the GUI sends at every refresh, changed or not
                return False
            if checked[0].image.shape[0] != self.items[0].image.shape[0]:
                raise TrainingDataError(
                    f"the new images have {checked[0].image.shape[0]} channels, the model was built for "
                    f"{self.items[0].image.shape[0]}"
                )
            self._prepare_data(checked)
        except TrainingDataError as exc:
            self._log(f"new annotations not used: {exc}", "warning")
            return False
        self._ctx.items = self._split.train_items
        self._ctx.epoch_length = self._sampler.epoch_length(self.config.batch_size)
        self._log(f"training on updated annotations ({self._split.n_train_pixels} annotated pixels, "
                  f"{self._split.n_val_pixels} held out for validation)")
        return True

    # -- previews ------------------------------------------------------------------------------------
    def _resolve_region(self, image_index: int, region: tuple | None) -> tuple[TrainingItem, tuple[slice, ...]]:
        return resolve_region(self.items, image_index, region, self.multilabel)

    def _safe_preview(self) -> Update | None:
        """A PREVIEW update, or None with a LOG warning: a failed preview must not end training."""
        try:
            return self._preview_update()
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory on a large region
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self._log(f"preview failed: {describe_failure(exc)}", "warning")
            return None

    def _preview_update(self) -> Update:
        self._preview_new = False
        index, region = self._preview_request
        try:
            item, region = self._resolve_region(index, region)
        except RegionError as exc:  # a stale request (e.g. after new items): fall back to the default
            self._log(f"{exc}; showing image 0 instead", "warning")
            index, (item, region) = 0, self._resolve_region(0, None)
        labels, confidence = predict_region(
            self.model, item, region, self.config.spatial, self.config.patch_size, self.device,
            self.multilabel, self.amp, self.config.batch_size,
        )
        return Preview(self.iteration, self.config.iterations, image_index=index,
                       region=tuple((s.start, s.stop) for s in region), labels=labels, confidence=confidence,
                       name=item.name)

    # -- checkpoints ---------------------------------------------------------------------------------
    def _checkpoint(self, folder: Path, which: str, optimizer: AdamW, scaler: Any, augmenter: Augmenter,
                    val_loss: float | None, best_val: float) -> Update:
        """Write a model folder (weights, config.json, training_state.pt) for ``which`` = best/last."""
        from ..models.checkpoint import save_model

        extra = {
            "class_names": list(self.class_names),
            "multilabel": self.multilabel,
            "train_config": self.config.to_dict(),
            "method": self.method.name,
            "normalisation": self.normalisation,
            "history": list(self.history),
            "iteration": self.iteration,
            "val_loss": val_loss,
        }
        save_model(folder, self.model, extra)
        others = {n: m.state_dict() for n, m in self.models.items() if n != self.method.inference_model}
        save_training_state(folder, {
            "iteration": self.iteration,
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if self.amp else {},
            "method": self.method.state_dict(),
            "models": others,
            "best_val_loss": float(best_val),
            "rng": {"sampler": self._sampler_rng.bit_generator.state,
                    "augment": augmenter.rng.bit_generator.state,
                    "torch": torch.get_rng_state()},
        })
        return Checkpoint(self.iteration, self.config.iterations, path=str(folder), which=which, val_loss=val_loss)

    def _restore_state(self, state: dict[str, Any], optimizer: AdamW, scaler: Any,
                       augmenter: Augmenter) -> None:
        """Load a saved training state (iteration, optimizer, method, other networks, random streams)."""
        self.iteration = int(state["iteration"])
        for name, sd in (state.get("models") or {}).items():
            if name in self.models:
                self.models[name].load_state_dict(sd)
        try:
            optimizer.load_state_dict(state["optimizer"])
            # the schedule follows this run's learning rate (groups keep their ratios to it)
            saved_lr = float(((self._resume_config or {}).get("train_config") or {}).get("lr", self.config.lr))
            for g in optimizer.param_groups:
                g["initial_lr"] = g.get("initial_lr", saved_lr) * self.config.lr / saved_lr
        except (ValueError, KeyError, RuntimeError, IndexError) as exc:
            self._log(f"optimizer state not restored ({exc}); continuing with a fresh optimizer", "warning")
        if self.amp and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        self.method.load_state_dict(state.get("method") or {})
        # other ranks keep their own random streams: rank 0's would make them draw rank 0's patches
        rng = (state.get("rng") or {}) if self._dist is None or self._dist.is_main else {}
        try:
            if "sampler" in rng:
                self._sampler_rng.bit_generator.state = rng["sampler"]
            if "augment" in rng:
                augmenter.rng.bit_generator.state = rng["augment"]
            if "torch" in rng:
                torch.set_rng_state(rng["torch"])
        except (ValueError, TypeError, RuntimeError):
            pass  # a different numpy/torch: continue with fresh random streams
        self._log(f"resumed from {self.config.resume_from} at iteration {self.iteration}")
