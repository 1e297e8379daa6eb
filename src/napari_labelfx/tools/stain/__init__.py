"""Stain normalization for H&E histology: Macenko, Reinhard, Vahadane (Qt-free).

All normalizers take 8-bit RGB ``(H, W, 3)`` images and share one interface::

    norm = MacenkoNormalizer()            # built-in H&E reference, or .fit(reference_rgb)
    out = norm.normalize(rgb)             # uint8 (H, W, 3)
    out = norm.normalize_tiled(big_rgb)   # whole slides: statistics once, then tile by tile

Macenko and Vahadane also give the stain separation (``separate`` -> H and E concentration maps,
``stain_images`` -> H-only and E-only renderings). See ``docs/domain_tools.md``.
"""
from ._common import StainError, StainInputError, StainNormalizer, check_rgb
from ._matrix import HE_REF, MAX_C_REF, StainEstimate, StainMatrixNormalizer
from .lab import lab_to_rgb, rgb_to_lab
from .macenko import MacenkoNormalizer
from .reinhard import LabStats, ReinhardNormalizer
from .vahadane import VahadaneNormalizer, learn_stain_dictionary, nonneg_lasso_2

__all__ = [
    "HE_REF",
    "MAX_C_REF",
    "LabStats",
    "MacenkoNormalizer",
    "ReinhardNormalizer",
    "StainError",
    "StainEstimate",
    "StainInputError",
    "StainMatrixNormalizer",
    "StainNormalizer",
    "VahadaneNormalizer",
    "check_rgb",
    "lab_to_rgb",
    "learn_stain_dictionary",
    "nonneg_lasso_2",
    "rgb_to_lab",
    "make_normalizer",
]


def make_normalizer(method: str, **kwargs) -> StainNormalizer:
    """Build a normalizer by name: ``"macenko"``, ``"reinhard"`` or ``"vahadane"`` (for CLI/GUI menus)."""
    table = {"macenko": MacenkoNormalizer, "reinhard": ReinhardNormalizer, "vahadane": VahadaneNormalizer}
    key = str(method).strip().lower()
    if key not in table:
        raise StainError(f"unknown stain normalization {method!r}; choose one of {sorted(table)}")
    return table[key](**kwargs)
