"""How big a network a config asks for, checked *before* the network is built.

A model folder is a person's file and may be damaged or hostile: a ``config.json`` declaring
``width: 4096, depth: 6`` would allocate terabytes and kill the process (and, in napari, the
person's unsaved annotations with it). The estimate below is an upper bound of the UNet in
``models/unet.py``: two 3x3(x3) convolutions per level, ``width * 2**i`` channels at level i.
"""
from __future__ import annotations

from .config import ModelConfig, ModelConfigError

#: More parameters than any model labelfx trains by orders of magnitude (the "large" preset has ~8M).
MAX_PARAMETERS = 2_000_000_000
#: Edge of the reference tile whose activations are estimated (2D: 256^2, 3D: 64^3).
_TILE = {2: 256, 3: 64}


def estimate_model_bytes(cfg: ModelConfig) -> tuple[int, int]:
    """(parameter count, bytes for weights plus activations of one reference tile), upper bounds."""
    k = 3 ** cfg.spatial_dims
    chans = [cfg.width * 2**i for i in range(cfg.depth + 1)]
    # encoder and decoder: at most ~5 c_i^2 kernel weights per level (in/out convs, skip concat)
    params = k * (cfg.in_channels * chans[0] + sum(5 * c * c for c in chans)) + chans[0] * cfg.num_classes
    voxels = _TILE[cfg.spatial_dims] ** cfg.spatial_dims
    # a handful of float32 feature maps alive per level at a time, each level 2**dims times smaller
    activations = sum(6 * c * voxels // (2 ** (cfg.spatial_dims * i)) for i, c in enumerate(chans)) * 4
    return params, params * 4 + activations


def available_memory() -> int:
    """Bytes of memory available now (physical memory when psutil cannot tell)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # psutil missing or unsupported platform
        import os

        try:
            return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            return 2**34


def check_model_size(cfg: ModelConfig, memory: int | None = None) -> None:
    """Raise `ModelConfigError` when ``cfg`` asks for a network that cannot fit in ``memory`` bytes.

    Parameters
    ----------
    cfg : the model configuration (e.g. from a model folder's config.json).
    memory : bytes the model may use (default: the memory available now).
    """
    params, need = estimate_model_bytes(cfg)
    memory = available_memory() if memory is None else int(memory)
    if params > MAX_PARAMETERS or need > memory:
        raise ModelConfigError(
            f"width {cfg.width} and depth {cfg.depth} ask for about {params / 1e6:,.0f} million parameters "
            f"(~{need / 1e9:,.1f} GB with one tile), more than the {memory / 1e9:,.1f} GB of memory available; "
            "the model config is damaged or not meant for this machine"
        )
