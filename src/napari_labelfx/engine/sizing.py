"""Training sizes that suit the machine: 3D patches, batch and network small enough for a CPU.

A 3D step costs the patch's voxel count times the network's width; a 128^3 patch that is fine on a
GPU takes tens of seconds per step on two CPU cores (the Train panel then sat at 0 % for minutes).
On a CPU the 3D patch, batch and network are cut down so that a step takes seconds, not minutes.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: Fewest iterations before a 3D preview is shown: an untrained network's prediction is noise that
#: floods the slice and says nothing.
MIN_PREVIEW_ITERATIONS_3D = 10


def device_kind(device: str) -> str:
    """``"cuda"``, ``"mps"`` or ``"cpu"``: what ``device`` (``"auto"`` or a name) resolves to here."""
    if device not in ("auto", "", None):
        return str(device).split(":")[0]
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def sized_3d(edge: int, batch_size: int, device: str, volume_shape: Sequence[int] | None = None,
             preset: str = "small") -> dict[str, Any]:
    """3D training sizes for a patch ``edge`` setting (the 2D patch edge of the presets).

    Returns ``{"patch_size": (Z, Y, X), "batch_size": int, "model": dict of overrides}``. On a GPU the
    patch is (edge/2, edge, edge); elsewhere it is about (edge/8, edge/2, edge/2), at most 2 patches
    a step and the ``preset`` network at half width. Each size is capped by the volume's.
    """
    edge = max(16, int(edge))
    if device_kind(device) == "cuda":
        patch = [max(16, edge // 2), edge, edge]
        out: dict[str, Any] = {"batch_size": int(batch_size), "model": {}}
    else:
        patch = [min(32, max(8, edge // 8)), min(96, max(32, edge // 2)), min(96, max(32, edge // 2))]
        from ..models.config import PRESETS

        width = int(PRESETS.get(preset, PRESETS["small"])["width"])
        out = {"batch_size": max(1, min(int(batch_size), 2)), "model": {"width": max(4, width // 2)}}
    if volume_shape is not None and len(volume_shape) == 3:
        # multiples of 8 (the small network's downsampling) no larger than the volume
        patch = [max(8, min(p, (int(s) // 8) * 8 or 8)) for p, s in zip(patch, volume_shape)]
    out["patch_size"] = tuple(patch)
    return out
