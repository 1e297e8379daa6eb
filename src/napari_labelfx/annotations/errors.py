"""Errors raised for bad annotations, images, class tables and project folders.

Every error is a :class:`ValueError` subclass so callers (widgets, CLI) can catch one type and show
its message; each message names the layer, image or file concerned and says what is wrong.
"""
from __future__ import annotations

from collections.abc import Iterable


class AnnotationError(ValueError):
    """Base class: an annotation, image or class table cannot be used as given."""


class ClassTableError(AnnotationError):
    """The class table is inconsistent (duplicate name/value, unknown class, bad colour)."""


class ShapeMismatchError(AnnotationError):
    """A label or shapes layer does not match the spatial shape of its image."""


class LabelValueError(AnnotationError):
    """A layer holds values the class table cannot interpret (e.g. scribble values with no class)."""


class ImageError(AnnotationError):
    """An image has an unsupported dtype, NaN/inf values, or the wrong dimensionality for its axes."""


class EmptyAnnotationError(AnnotationError):
    """A training request has no annotated pixel (and no image-level tag) anywhere."""


class ShapesError(AnnotationError):
    """A shape cannot be rasterised (unsupported type, wrong dimensionality, tilted in Z)."""


class ProjectError(AnnotationError):
    """An annotation project folder is missing, unreadable, or inconsistent with its images."""


def format_values(values: Iterable[int], limit: int = 10) -> str:
    """Format label values for a message: ``"3, 7, 9"`` or ``"3, 7, ... (25 values)"``.

    Messages list the offending values so a person can find them, but a noisy layer may have
    thousands, so only the first ``limit`` are shown.
    """
    vals = sorted(int(v) for v in values)
    if len(vals) <= limit:
        return ", ".join(str(v) for v in vals)
    return ", ".join(str(v) for v in vals[:limit]) + f", ... ({len(vals)} values)"
