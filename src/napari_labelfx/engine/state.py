"""Training state beside a checkpoint (iteration, optimizer, method, extra networks, RNGs) for resume.

Stored as ``training_state.pt`` with ``torch.save`` of tensors and builtins only, so it loads with
``torch.load(weights_only=True)``: nothing is unpickled.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from ..io.atomic import atomic_path

STATE_FILE = "training_state.pt"
STATE_FORMAT = 1


class ResumeError(ValueError):
    """A model folder cannot be resumed from (the message names the folder and the problem)."""


def save_training_state(folder: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``folder/training_state.pt`` atomically; returns its path."""
    path = Path(folder) / STATE_FILE
    with atomic_path(path) as tmp:
        torch.save({"format": STATE_FORMAT, **state}, tmp)
    return path


def load_training_state(folder: str | os.PathLike) -> dict[str, Any] | None:
    """Read ``folder/training_state.pt`` with ``weights_only=True``; None when there is none."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ResumeError(f"{path}: refusing to unpickle Python objects from a training state ({exc})") from exc
    except Exception as exc:  # corrupt or truncated archive
        raise ResumeError(f"{path}: cannot read the training state: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or "iteration" not in state:
        raise ResumeError(f"{path}: not a labelfx training state (format {STATE_FORMAT})")
    return state
