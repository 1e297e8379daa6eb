"""Errors of the inference package."""
from __future__ import annotations


class InferenceError(ValueError):
    """Inference cannot run on this input (wrong shape, channels, ROI, ...); the message says why."""
