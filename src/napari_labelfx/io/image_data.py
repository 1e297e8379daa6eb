"""`ImageData`: what every reader returns (lazy where the file is large)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .axes import grid_axes

#: Files whose uncompressed level 0 is smaller than this are read into memory at once.
EAGER_LIMIT_BYTES = 64 * 2**20


@dataclass
class ImageData:
    """An image, volume or multiscale pyramid with its axes and voxel size.

    Attributes
    ----------
    data : numpy or dask array in canonical axis order, or a list of them (levels, largest first)
        when ``multiscale``.
    axes : letters from "TZCYX" in that order, plus a trailing "S" for RGB(A) samples, e.g. "ZCYX".
    scale : one value per axis of ``axes`` other than C and S (T, Z, Y, X as present), in µm when
        the file gives a known length unit (see ``unit``), else pixel units (1.0).
    dtype : element type.
    multiscale : True when ``data`` is a list of levels.
    name : display name (file stem).
    metadata : extra facts: ``path``, ``format``, ``unit``, ``labels`` (file says it holds labels),
        ``channel_names`` where known, and any metadata our writer stored.
    chunks : storage chunk shape of level 0 in the order of ``axes`` (whole shape when unchunked).
    """

    data: Any
    axes: str
    scale: tuple[float, ...]
    dtype: np.dtype
    multiscale: bool
    name: str
    metadata: dict[str, Any] = field(default_factory=dict)
    chunks: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        self.dtype = np.dtype(self.dtype)
        self.scale = tuple(float(s) for s in self.scale)
        if len(self.scale) != len(grid_axes(self.axes)):
            raise ValueError(f"scale {self.scale} does not match the grid axes of {self.axes!r}")
        if len(self.shape) != len(self.axes):
            raise ValueError(f"shape {self.shape} does not match axes {self.axes!r}")

    @property
    def levels(self) -> list[Any]:
        """All resolution levels (one element when not multiscale)."""
        return list(self.data) if self.multiscale else [self.data]

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of level 0."""
        return tuple(int(s) for s in self.levels[0].shape)

    @property
    def nbytes(self) -> int:
        """Uncompressed size of level 0 in bytes."""
        return math.prod(self.shape) * self.dtype.itemsize  # Python ints: no int64 overflow

    @property
    def lazy(self) -> bool:
        """True when the pixels stay on disk until indexed (dask arrays)."""
        return not isinstance(self.levels[0], np.ndarray)

    @property
    def rgb(self) -> bool:
        """True when the last axis holds RGB(A) samples."""
        return self.axes.endswith("S")

    @property
    def channel_axis(self) -> int | None:
        """Index of the channel axis "C", or None."""
        return self.axes.index("C") if "C" in self.axes else None

    @property
    def spatial_scale(self) -> tuple[float, ...]:
        """Scale of the Z, Y, X axes only (those present), in that order."""
        grid = grid_axes(self.axes)
        return tuple(s for a, s in zip(grid, self.scale) if a in "ZYX")

    @property
    def is_labels(self) -> bool:
        """True when the file's metadata says it holds a label image."""
        return bool(self.metadata.get("labels", False))
