"""Dask wrappers that read from disk chunk by chunk and turn read failures into LabelfxIOError."""
from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import dask.array as da
import numpy as np

from .errors import LabelfxIOError, describe_exception

#: Dask chunks are grown (along the last two grid axes only) up to about this many bytes, so a
#: file with small tiles or strips does not produce a huge task graph; leading axes keep their
#: native chunking, so touching one slice of a stack still reads one slice.
TARGET_CHUNK_BYTES = 8 * 2**20
#: More elements than any real image (a petabyte of bytes): a larger declared shape is damage.
MAX_ELEMENTS = 2**50
#: More storage chunks than any real store; beyond it even listing the chunks would hang.
MAX_CHUNKS = 2**32
#: Dask chunks of one lazy array; beyond it building the task graph alone takes minutes and GBs.
MAX_DASK_CHUNKS = 2**24


def check_plausible_shape(path: Any, shape: Sequence[int], chunks: Sequence[int], dtype: Any) -> None:
    """Refuse a declared shape or chunk grid that cannot be a real image, before any work on it.

    A file of a few bytes can declare 10^63 elements in 1-element chunks; opening it lazily
    would then hang building the task graph or allocate gigabytes for one tile.

    Raises
    ------
    LabelfxIOError : naming ``path``, the shape, the chunks and what is implausible.
    """
    shape = tuple(int(s) for s in shape)
    chunks = tuple(int(c) for c in chunks)
    if any(s < 0 for s in shape) or len(chunks) != len(shape) or any(c < 1 for c in chunks):
        raise LabelfxIOError(path, f"declares an invalid shape {shape} or chunks {chunks}")
    elements = math.prod(shape)  # Python ints: no overflow
    if elements > MAX_ELEMENTS:
        raise LabelfxIOError(path, f"declares shape {shape} ({elements:.3g} elements), more than any real "
                                   "image; the metadata is damaged")
    nchunks = math.prod(-(-s // c) for s, c in zip(shape, chunks))
    if nchunks > MAX_CHUNKS:
        raise LabelfxIOError(path, f"declares shape {shape} in chunks of {chunks} ({nchunks:.3g} chunks), more "
                                   "than any real store; the metadata is damaged")


class GuardedArray:
    """Array-like view on a store (zarr array, ...) whose reads raise LabelfxIOError naming the file."""

    def __init__(self, array: Any, path: str) -> None:
        self._array = array
        self.path = path
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self._array[key])
        except LabelfxIOError:
            raise
        except Exception as exc:  # any decode / missing-data error of the underlying library
            raise LabelfxIOError(self.path, f"cannot read pixel data ({describe_exception(exc)})") from exc


def dask_chunks(
    shape: Sequence[int], native: Sequence[int], itemsize: int, grow_axes: Sequence[int]
) -> tuple[int, ...]:
    """Dask chunk shape: the native chunks, grown by whole multiples along ``grow_axes``.

    Parameters
    ----------
    shape : array shape.
    native : storage chunk shape (same length).
    itemsize : bytes per element.
    grow_axes : axes that may be merged (the in-plane Y, X axes).
    """
    chunks = [max(1, min(int(c), int(s))) for c, s in zip(native, shape)]
    grow = [a for a in grow_axes if 0 <= a < len(shape)]
    while True:
        nbytes = int(np.prod(chunks, dtype=np.int64)) * itemsize
        # the axis whose chunk covers the smallest share of its length grows first
        open_axes = [a for a in grow if chunks[a] < shape[a]]
        if not open_axes or nbytes * 2 > TARGET_CHUNK_BYTES:
            return tuple(chunks)
        a = min(open_axes, key=lambda i: chunks[i] / shape[i])
        chunks[a] = min(shape[a], chunks[a] * 2)


def guarded_dask(array: Any, path: str, native_chunks: Sequence[int], grow_axes: Sequence[int]) -> da.Array:
    """Lazy dask array over ``array`` (zarr-like) with error translation and sensible chunks."""
    guarded = GuardedArray(array, path)
    check_plausible_shape(path, guarded.shape, native_chunks, guarded.dtype)
    chunks = dask_chunks(guarded.shape, native_chunks, guarded.dtype.itemsize, grow_axes)
    n_dask = math.prod(-(-s // c) for s, c in zip(guarded.shape, chunks))
    if n_dask > MAX_DASK_CHUNKS:
        raise LabelfxIOError(path, f"shape {guarded.shape} in chunks of {tuple(native_chunks)} needs {n_dask:.3g} "
                                   "pieces to read lazily, more than labelfx handles; rechunk the store")
    # lock=False: zarr and tifffile stores do their own locking; a unique name because the
    # wrapped store cannot be tokenised by content (and files may change between opens)
    return da.from_array(guarded, chunks=chunks, lock=False, asarray=False, fancy=False,
                         name=f"labelfx-read-{uuid.uuid4().hex}")


def read_eager(read: Callable[[], Any], path: str) -> np.ndarray:
    """Run ``read`` and return a numpy array; any failure becomes a LabelfxIOError for ``path``."""
    try:
        return np.asarray(read())
    except LabelfxIOError:
        raise
    except Exception as exc:
        raise LabelfxIOError(path, f"cannot read pixel data ({describe_exception(exc)})") from exc
