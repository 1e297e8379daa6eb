"""Registry of training methods: ``@register_method`` on a :class:`Method` subclass."""
from __future__ import annotations

from typing import TypeVar

from .base import Method, MethodError

_M = TypeVar("_M", bound=type)
_METHODS: dict[str, type[Method]] = {}


class UnknownMethodError(MethodError):
    """No method with this name is registered."""


def register_method(cls: _M) -> _M:
    """Class decorator registering a :class:`Method` subclass under ``cls.name``."""
    if not isinstance(cls, type) or not issubclass(cls, Method):
        raise TypeError(f"register_method expects a Method subclass, got {cls!r}")
    if not cls.name:
        raise MethodError(f"{cls.__name__} has no name")
    existing = _METHODS.get(cls.name)
    if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
        raise MethodError(f"a method named {cls.name!r} is already registered ({existing.__qualname__})")
    _METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    """The method class registered as ``name``."""
    try:
        return _METHODS[name]
    except KeyError:
        raise UnknownMethodError(f"unknown training method {name!r}; available: {available_methods()}") from None


def available_methods() -> list[str]:
    """Names of the registered methods."""
    return sorted(_METHODS)


def create_method(name: str, params: dict | None = None) -> Method:
    """Instantiate the method ``name`` with parameters (unknown parameters raise ``MethodError``)."""
    return get_method(name)(params)
