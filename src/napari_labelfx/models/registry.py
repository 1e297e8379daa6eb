"""Registry of model architectures: ``@register_model("name")`` and ``build_model(cfg)``."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from napari_labelfx.models.config import ModelConfig, ModelConfigError

ModelFactory = Callable[[ModelConfig], nn.Module]
_F = TypeVar("_F", bound=ModelFactory)

_REGISTRY: dict[str, ModelFactory] = {}


class UnknownModelError(ModelConfigError):
    """The configuration names an architecture nobody registered."""


def register_model(name: str) -> Callable[[_F], _F]:
    """Decorator registering a model class or factory taking a :class:`ModelConfig`.

    Examples
    --------
    >>> @register_model("tiny")          # doctest: +SKIP
    ... class Tiny(nn.Module):
    ...     def __init__(self, cfg: ModelConfig): ...
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_model: name must be a non-empty string, got {name!r}")

    def decorator(factory: _F) -> _F:
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not factory:
            raise ValueError(f"register_model: a model named {name!r} is already registered ({existing!r})")
        _REGISTRY[name] = factory
        return factory

    return decorator


def available_models() -> list[str]:
    """Names accepted by ``ModelConfig(name=...)``."""
    return sorted(_REGISTRY)


def build_model(cfg: ModelConfig | dict[str, Any]) -> nn.Module:
    """Instantiate the architecture named by ``cfg.name``; the module gets ``model.config = cfg``."""
    if isinstance(cfg, dict):
        cfg = ModelConfig.from_dict(cfg)
    if not isinstance(cfg, ModelConfig):
        raise ModelConfigError(f"build_model expects a ModelConfig or dict, got {type(cfg).__name__}")
    factory = _REGISTRY.get(cfg.name)
    if factory is None:
        raise UnknownModelError(f"unknown model {cfg.name!r}; registered models: {available_models()}")
    model = factory(cfg)
    model.config = cfg
    return model
