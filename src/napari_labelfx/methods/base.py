"""The interface every training method implements, and the context the trainer hands it.

A method is one small class: its defaults, the networks it needs (``build_models``), how it runs
them on a batch (``forward``), its loss, and optional hooks the training loop calls at fixed points:

* ``on_start(ctx)`` once before the first step,
* ``on_iteration(ctx)`` after every optimizer step (e.g. an EMA teacher update),
* ``pseudo_label_step(ctx)`` every ``pseudo_label_every`` iterations (0 = never),
* ``on_epoch_end(ctx)`` every ``ctx.epoch_length`` iterations (e.g. relabelling the training set),
* ``result_layers()`` at the end (and after each epoch): a :class:`~napari_labelfx.core.results.MethodResult`
  (layers to show, plot markers and curves, a status message).

New methods (deep supervision on ``out.decoder``, reference-guided pseudo-labels on
``out.features``, dual networks, mean teachers, ...) are one module each, registered with
:func:`napari_labelfx.methods.register_method`; the loop does not change.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..annotations.kinds import TrainingItem
from ..core.params import Param, ParamError, ParamSpec
from ..core.results import MethodResult

__all__ = ["Method", "MethodContext", "MethodError", "Param", "ParamSpec"]


class MethodError(ValueError):
    """A method name or parameter is unknown or invalid."""


def _noop_log(message: str, level: str = "info") -> None:
    return None


@dataclass
class MethodContext:
    """What a method may read (and a few things it may do) during training.

    Attributes
    ----------
    iteration : iterations completed so far.
    total_iterations : the training length.
    num_classes : output channels of the networks.
    multilabel : sigmoid per class instead of softmax.
    class_names : names of the classes (index order).
    device : where the networks and batches live.
    models : the networks built by the method (name -> module).
    epoch : completed epochs (an epoch is ``epoch_length`` iterations).
    epoch_length : iterations per epoch (about one pass over the annotated area).
    items : the current training items (held-out validation pixels already removed).
    log : ``log(message, level="info")`` sends a LOG update to the person.
    predict : ``predict(image (C, *spatial)) -> probabilities (K, *spatial)`` with the inference
        network in eval mode (for pseudo-label steps).
    set_training_items : replace the items patches are drawn from (e.g. with pseudo-labels).
    emit_result : ``emit_result(result: MethodResult)`` sends a RESULT update right away.
    """

    iteration: int
    total_iterations: int
    num_classes: int
    multilabel: bool
    class_names: list[str]
    device: torch.device
    models: dict[str, nn.Module]
    epoch: int = 0
    epoch_length: int = 1
    items: list[TrainingItem] = field(default_factory=list)
    log: Callable[..., None] = _noop_log
    predict: Callable[[np.ndarray], np.ndarray] | None = None
    set_training_items: Callable[[list[TrainingItem]], None] | None = None
    emit_result: Callable[[MethodResult], None] | None = None

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1] (for ramp-ups)."""
        return min(1.0, self.iteration / max(1, self.total_iterations))


class Method:
    """Base class of training methods (see the module docstring).

    Class attributes
    ----------------
    name : registry name.
    description : one line for menus and ``--help``.
    params_spec : the declared, typed parameters (:class:`~napari_labelfx.core.params.ParamSpec`);
        ``params`` holds them checked and converted, defaults filled in.
    defaults : parameter -> default, derived from ``params_spec`` (a subclass declaring only a
        ``defaults`` dict gets a spec guessed from the default values).
    important : the few parameters the Train panel shows unfolded (``Param.important``).
    inference_model : the key of ``build_models``' dict whose network predicts.
    needs_target : patches are drawn only from items with annotated pixels.
    supports_multilabel : the method handles (K, ...) multi-label targets.
    supports_input_scale : the method reads only the logits, so the network may run at a working
        scale (``ModelConfig.input_scale``); methods reading features or decoder maps must not.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params_spec: ClassVar[ParamSpec] = ParamSpec()
    defaults: ClassVar[dict[str, Any]] = {}
    important: ClassVar[tuple[str, ...]] = ()
    inference_model: ClassVar[str] = "net"
    needs_target: ClassVar[bool] = True
    supports_multilabel: ClassVar[bool] = True
    supports_input_scale: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "params_spec" in own:  # the declaration is the source: defaults and important follow from it
            cls.defaults = cls.params_spec.defaults()
            if "important" not in own:
                cls.important = cls.params_spec.important()
        elif "defaults" in own:  # a method written before specs: types guessed from the defaults
            cls.params_spec = ParamSpec.inferred(cls.defaults, cls.important)

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        try:
            self.params: dict[str, Any] = self.params_spec.resolve(params, f"method {self.name!r}")
        except ParamError as exc:
            raise MethodError(str(exc)) from None

    # -- networks ------------------------------------------------------------------------------------
    @property
    def pseudo_label_every(self) -> int:
        """Iterations between ``pseudo_label_step`` calls (0 = never); from ``params`` when present."""
        return int(self.params.get("pseudo_label_every", 0))

    def build_models(self, model_config: Any) -> dict[str, nn.Module]:
        """Networks of this method, built from the model configuration (default: one UNet)."""
        from ..models import build_model

        return {self.inference_model: build_model(model_config)}

    def parameter_groups(self, models: Mapping[str, nn.Module], weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups: weight decay on conv/linear weights, none on biases and norms."""
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        seen: set[int] = set()
        for model in models.values():
            for p in model.parameters():
                if not p.requires_grad or id(p) in seen:
                    continue
                seen.add(id(p))
                (decay if p.ndim > 1 else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return groups

    def forward(self, models: Mapping[str, nn.Module], batch: dict[str, torch.Tensor], ctx: MethodContext) -> dict[str, Any]:
        """Run the networks on a batch; default: the inference network on ``batch["image"]``."""
        return {self.inference_model: models[self.inference_model](batch["image"])}

    def loss(
        self, batch: dict[str, torch.Tensor], outputs: dict[str, Any], ctx: MethodContext
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        """Total loss and its named terms (floats or 0-d tensors; tensors avoid a GPU sync).

        ``batch`` holds tensors on ``ctx.device``: ``image`` (B, C, *patch), ``target``, optional
        ``instances``, ``tags``/``has_tags``, ``item_index``, ``origin`` and ``geometry`` (the
        augmentation applied to each sample).
        """
        raise NotImplementedError

    # -- hooks ---------------------------------------------------------------------------------------
    def on_start(self, ctx: MethodContext) -> None:
        """Called once before the first step."""

    def on_iteration(self, ctx: MethodContext) -> None:
        """Called after every optimizer step."""

    def pseudo_label_step(self, ctx: MethodContext) -> None:
        """Called every ``pseudo_label_every`` iterations (when > 0)."""

    def on_epoch_end(self, ctx: MethodContext) -> None:
        """Called every ``ctx.epoch_length`` iterations."""

    def result_layers(self) -> MethodResult:
        """Method-specific results to show (layers, plot markers and curves, a message); empty by default."""
        return MethodResult()

    # -- resume --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Method state to checkpoint (tensors and builtins only: loadable with ``weights_only``)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
