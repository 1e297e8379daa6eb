"""Device selection (CUDA, then Apple MPS, then CPU) and mixed precision on CUDA."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class DeviceError(ValueError):
    """The requested device does not exist on this machine or is not understood."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def select_device(pref: str | torch.device = "auto") -> torch.device:
    """Pick the compute device.

    Parameters
    ----------
    pref : ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a
        ``torch.device``.

    Raises
    ------
    DeviceError
        When an explicit choice is unavailable or unknown.
    """
    if isinstance(pref, torch.device):
        pref = str(pref)
    if not isinstance(pref, str):
        raise DeviceError(f"device must be a string such as 'auto', 'cpu', 'cuda' or 'mps', got {pref!r}")
    choice = pref.strip().lower()
    if choice in ("", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(choice)
    except (RuntimeError, ValueError):
        raise DeviceError(f"unknown device {pref!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {pref!r} was requested but CUDA is not available "
                "(no NVIDIA GPU, or a CPU-only build of PyTorch); use 'auto' or 'cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {pref!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
        return dev
    if dev.type == "mps":
        if not _mps_available():
            raise DeviceError(f"device {pref!r} was requested but Apple MPS is not available; use 'auto' or 'cpu'")
        return dev
    raise DeviceError(f"unsupported device {pref!r}: use 'auto', 'cpu', 'cuda' or 'mps'")


def amp_supported(device: torch.device) -> bool:
    """Mixed precision is used on CUDA only (float16 with a gradient scaler)."""
    return torch.device(device).type == "cuda"


@contextlib.contextmanager
def autocast_context(device: torch.device | str, enabled: bool = True) -> Iterator[None]:
    """``torch.autocast`` in float16 on CUDA when ``enabled``; a no-op elsewhere."""
    device = torch.device(device)
    if enabled and amp_supported(device):
        with torch.autocast(device_type="cuda", dtype=torch.float16):
            yield
    else:
        yield
