"""Errors raised by the data layer (samplers, splits, augmentations) for unusable training input."""
from __future__ import annotations


class TrainingDataError(ValueError):
    """Training items cannot be used as given; the message names the item and the problem."""


class AugmentationError(ValueError):
    """An augmentation setting is unknown or out of range."""
