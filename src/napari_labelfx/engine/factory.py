"""One entry point for every kind of training: networks, the pixel forest and the default path.

``make_trainer`` picks the trainer for ``config.method``: ``"forest"`` gives a
:class:`~napari_labelfx.engine.forest_trainer.ForestTrainer`, ``"auto"`` the default path
(:class:`~napari_labelfx.engine.auto_trainer.AutoTrainer`: forest at once, network behind it) and every
registered network method a :class:`~napari_labelfx.engine.trainer.Trainer`. All three share the
interface the GUI, the CLI and ``labelfx eval`` use: ``updates()``, ``run()``, ``set_items()``,
``request_preview()``, ``control`` and ``result``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..annotations.kinds import TrainingItem
from ..core.params import ParamSpec
from .config import TrainConfig
from .control import TrainerControl

#: Training kinds that are not network methods of the registry.
SPECIAL_METHODS: tuple[str, ...] = ("auto", "forest")


def make_trainer(config: TrainConfig | dict, items: Sequence[TrainingItem], class_names: Sequence[str],
                 multilabel: bool = False, control: TrainerControl | None = None) -> Any:
    """The trainer for ``config.method`` (see the module docstring)."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    if cfg.method == "forest":
        from .forest_trainer import ForestTrainer

        return ForestTrainer(cfg, items, class_names, multilabel=multilabel, control=control)
    if cfg.method == "auto":
        from .auto_trainer import AutoTrainer

        return AutoTrainer(cfg, items, class_names, multilabel=multilabel, control=control)
    from .trainer import Trainer

    return Trainer(cfg, items, class_names, multilabel=multilabel, control=control)


def training_methods() -> list[str]:
    """Every name ``TrainConfig.method`` accepts: the default path, the forest, then network methods."""
    from ..methods import available_methods

    return [*SPECIAL_METHODS, *available_methods()]


def method_spec(name: str) -> tuple[ParamSpec, str]:
    """(declared parameters, one-line description) of a training method (``UnknownMethodError`` if none)."""
    if name == "forest":
        from .forest_trainer import FOREST_PARAMS

        return FOREST_PARAMS, "random forest on filter features (ilastik-style), live"
    if name == "auto":
        from .auto_trainer import AUTO_PARAMS

        return AUTO_PARAMS, "forest at once, a network behind it; shows the better one"
    from ..methods import get_method

    cls = get_method(name)
    return cls.params_spec, cls.description


def check_method_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` checked against the method's declaration (one-line ``ParamError``), converted; only those given.

    The one check ``labelfx train/eval --param`` and config files go through before any data is read.
    """
    spec, _ = method_spec(name)
    return spec.check(params, f"method {name!r}")


def method_defaults(name: str) -> tuple[dict[str, Any], tuple[str, ...], str]:
    """(parameter defaults, the important ones, one-line description) of a training method."""
    spec, description = method_spec(name)
    return spec.defaults(), spec.important(), description
