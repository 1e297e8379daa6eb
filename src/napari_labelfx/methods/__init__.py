"""Training methods, one module each, behind :class:`~napari_labelfx.methods.base.Method`.

Adding a method: write ``methods/<name>.py`` with a ``Method`` subclass decorated with
``@register_method`` and import it below.
"""
from . import losses
from .base import Method, MethodContext, MethodError
from .registry import UnknownMethodError, available_methods, create_method, get_method, register_method

# built-in methods register themselves on import
from . import scribble, supervised  # noqa: E402,F401  isort: skip
from . import rpg, fixmatch  # noqa: E402,F401  isort: skip
from . import adele, sissi  # noqa: E402,F401  isort: skip
from . import dii_dcr  # noqa: E402,F401  isort: skip
from . import chexseg, mlds  # noqa: E402,F401  isort: skip
from . import stain_aglr  # noqa: E402,F401  isort: skip

__all__ = [
    "Method",
    "MethodContext",
    "MethodError",
    "UnknownMethodError",
    "available_methods",
    "create_method",
    "get_method",
    "losses",
    "register_method",
]
