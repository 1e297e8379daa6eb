"""Prediction of volumes larger than one machine: blocks on dask.distributed workers, written to Zarr.

:func:`predict_distributed` splits a Zarr/OME-Zarr (or lazily read TIFF) image into blocks and predicts
them on the workers of a dask cluster (a local one with ``workers=N``, or an existing one at
``scheduler=ADDRESS``), each worker loading the model once. The windows of the single-process
predictor's global grid are kept: each window is predicted once, by the block holding its start, and
its weighted probabilities spilling into the next blocks are handed over as small "pieces" (see
``_block_plan``), so the blend, and the result, equal the single-process prediction (labels equal,
probabilities within float rounding).

The run writes into ``.<output name>.partial`` beside the output: the Zarr arrays, one marker file per
finished block, and the pieces on their way between blocks. A cancelled or crashed run started again
with the same settings skips the finished blocks; the output appears at its path, complete, only at
the end. Tasks have retries, and a worker killed mid-run only costs its blocks being predicted again
elsewhere (dask recomputes them). Memory per worker is set by the block: its input with one window
of halo, one accumulator, one batch of windows.

With ``objects=True`` the output holds one id per object, merged across blocks (``_block_objects``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pickle
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from napari_labelfx.inference._block_plan import BlockPlan, Index, Region, align_block, default_block
from napari_labelfx.inference._runtime import TileForward, accumulator_device, pad_to_roi, report_progress
from napari_labelfx.inference.errors import InferenceError
from napari_labelfx.inference.labels import labels_dtype, probabilities_to_labels
from napari_labelfx.inference.sliding_window import iter_tile_batches
from napari_labelfx.io.zarr_io import COMPLETE_ATTR, LABELS_ATTR

#: Name of the run folder beside the output: ``.<name>.partial``.
PARTIAL_SUFFIX = ".partial"
#: Version of the run folder's layout (a folder of another version is started afresh).
STATE_VERSION = 1


class Cancelled(Exception):
    """Raised by a progress callback to stop a run; the finished blocks are kept for the next run."""


# -- what the workers receive ------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRef:
    """A model folder, loaded once per worker (``stamp`` changes when its files do)."""

    path: str
    stamp: str
    device: str = "auto"


@dataclass(frozen=True)
class PathSource:
    """An image file or Zarr store, opened lazily on each worker (once per worker)."""

    path: str

    def open(self, pred: Any) -> Any:
        from napari_labelfx.io.reader import read_image

        img = read_image(self.path, eager_limit=0)
        data = img.data[0] if img.multiscale else img.data
        return pred.to_channels_first(data, img.axes)


@dataclass(frozen=True)
class ArraySource:
    """An array (dask, zarr, numpy) with axis letters; travels to the workers with the job."""

    array: Any
    axes: str
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def open(self, pred: Any) -> Any:
        return pred.to_channels_first(self.array, self.axes)


@dataclass
class Job:
    """Everything a block task needs (picklable; the model travels separately)."""

    plan: BlockPlan
    source: PathSource | ArraySource
    normalisation: tuple[np.ndarray, np.ndarray] | None
    num_classes: int
    multilabel: bool
    threshold: float
    tta: bool
    amp: bool
    batch_size: int
    slicewise: bool
    folder: str  # the run folder
    labels_path: str  # the class-label array (level 0)
    confidence_path: str | None
    threads: int | None
    device: str

    @property
    def stored_classes(self) -> int:
        """Accumulator channels: K - 1 for softmax outputs (the last is 1 - the others), as the streamer."""
        return self.num_classes - 1 if (not self.multilabel and self.num_classes > 1) else self.num_classes

    def marker(self, stage: str, idx: Index) -> Path:
        return Path(self.folder) / "done" / f"{stage}-{self.plan.name(idx)}"

    def piece_path(self, src: Index, e: Index) -> Path:
        return Path(self.folder) / "pieces" / f"{self.plan.name(src)}_{''.join(map(str, e))}.npy"


# -- worker-side state -------------------------------------------------------------------------------
#: Per worker process: loaded predictors and opened inputs (a few entries; the oldest go first).
_CACHE: dict[Any, Any] = {}
_CACHE_SIZE = 4
#: How many times this process loaded a model folder (tests check "once per worker").
LOAD_COUNT = {"models": 0, "forward_blocks": 0}


def _cached(key: Any, make: Callable[[], Any]) -> Any:
    if key in _CACHE:
        value = _CACHE.pop(key)
    else:
        value = make()
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = value  # most recent last
    return value


def _worker_device(device: str) -> str:
    """Spread the workers of one machine over its GPUs (worker ``n`` -> GPU ``n mod count``)."""
    if device not in ("auto", "cuda") or not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return device
    try:
        from distributed import get_worker

        name = get_worker().name
        index = int(name) if str(name).isdigit() else int(hashlib.sha1(str(name).encode()).hexdigest(), 16)
    except Exception:  # noqa: BLE001 - not on a worker
        return device
    return f"cuda:{index % torch.cuda.device_count()}"


def _load_predictor(ref: ModelRef) -> Any:
    from napari_labelfx.inference.predictor import Predictor

    LOAD_COUNT["models"] += 1
    return Predictor.from_folder(ref.path, device=_worker_device(ref.device))


def _predictor(model: Any) -> Any:
    if isinstance(model, ModelRef):
        return _cached(("model", model), lambda: _load_predictor(model))
    return model  # a predictor object, sent to each worker once (scattered)


def _image(job: Job, pred: Any) -> Any:
    key = ("input", job.source if isinstance(job.source, PathSource) else job.source.token, id(pred))
    return _cached(key, lambda: job.source.open(pred))


def _read(array: Any, region: Region) -> np.ndarray:
    """The channels-first region of a (lazy) array as numpy; dask arrays are computed in this task."""
    part = array[(slice(None), *(slice(lo, hi) for lo, hi in region))]
    if hasattr(part, "compute"):
        part = part.compute(scheduler="sync")
    return np.asarray(part)


def _set_threads(threads: int | None) -> None:
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(int(threads))


def _save_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` atomically (a retried or duplicated task rewrites the same bytes)."""
    # no mkdir: a folder that is gone belongs to a job that was replaced, and this write must fail
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def open_for_writing(path: str) -> Any:
    """A Zarr array opened to write blocks, writing empty chunks too (a missing chunk then means damage)."""
    arr = zarr.open_array(path, mode="r+")
    with_config = getattr(arr, "with_config", None)
    return with_config({"write_empty_chunks": True}) if with_config is not None else arr


class _SliceForward:
    """A 2D model on windows ``(B, C, 1, Y, X)`` of a volume: squeeze Z, predict, put Z back."""

    def __init__(self, forward: TileForward) -> None:
        self.forward = forward

    def __call__(self, tiles: np.ndarray) -> torch.Tensor:
        return self.forward(tiles[:, :, 0]).unsqueeze(2)


# -- the two block tasks -----------------------------------------------------------------------------
def forward_block(job: Job, model: Any, idx: Index) -> np.ndarray | None:
    """Predict the windows block ``idx`` owns; save the pieces for the blocks after it, return its own part.

    The accumulator covers the block and its spill-over; windows are added in the global grid's order
    with the single-process Blender's weights.
    """
    from napari_labelfx.inference._runtime import eval_mode
    from napari_labelfx.inference.streaming import _Normaliser

    plan = job.plan
    read = plan.read_region(idx)
    if read is None:
        return None
    _set_threads(job.threads)
    LOAD_COUNT["forward_blocks"] += 1
    pred = _predictor(model)
    image = _image(job, pred)
    raw = pad_to_roi(_read(image, read), plan.roi)
    owned = plan.owned_starts(idx)
    origin = tuple(lo for lo, _ in read)
    starts = [tuple(s - o for s, o in zip(start, origin)) for start in _product(owned)]
    extent = plan.extent(idx)
    block_lo = tuple(lo for lo, _ in plan.region(idx))
    ext_shape = tuple(hi - lo for lo, hi in extent)
    device = pred.device
    acc_dev = accumulator_device(device, 4 * job.stored_classes * math.prod(ext_shape))
    weights = torch.from_numpy(plan.weights()).to(acc_dev)
    acc = torch.zeros((job.stored_classes, *ext_shape), dtype=torch.float32, device=acc_dev)
    with torch.inference_mode(), eval_mode(pred.model):
        forward: Any = TileForward(pred.model, device, 2 if job.slicewise else plan.ndim, job.multilabel,
                                   job.tta, job.amp)
        if job.slicewise:
            forward = _SliceForward(forward)
        prepare = _Normaliser(job.normalisation)
        for batch, probs in iter_tile_batches(forward, raw, starts, plan.roi, job.batch_size, prepare):
            if probs.shape[1] != job.num_classes:
                raise InferenceError(f"the model returned {probs.shape[1]} classes, expected {job.num_classes}")
            probs = probs.to(acc_dev)
            if job.stored_classes < job.num_classes:
                probs = probs[:, :-1]
            for rel, p in zip(batch, probs):
                start = tuple(r + o for r, o in zip(rel, origin))
                stop = tuple(min(s + r, hi) for s, r, (_, hi) in zip(start, plan.roi, extent))
                inside = tuple(slice(s - lo, e - lo) for s, e, lo in zip(start, stop, block_lo))
                crop = tuple(slice(0, e - s) for s, e in zip(start, stop))
                acc[(slice(None), *inside)].addcmul_(p[(slice(None), *crop)], weights[crop])
    acc_np = acc.cpu().numpy()
    for e in plan.offsets():
        region = plan.piece_region(idx, e)
        if region is not None:
            piece = acc_np[(slice(None), *(slice(lo - b, hi - b) for (lo, hi), b in zip(region, block_lo)))]
            _save_npy(job.piece_path(idx, e), np.ascontiguousarray(piece))
    own = acc_np[(slice(None), *(slice(0, n) for n in plan.block_shape(idx)))]
    return np.ascontiguousarray(own)


def _product(owned: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    from napari_labelfx.inference._block_plan import iter_window_starts

    return list(iter_window_starts(owned))


def token(_: Any) -> bool:
    """A tiny result that orders a task after another without moving the other's data."""
    return True


def blend_block(job: Job, idx: Index, own: np.ndarray | None) -> np.ndarray:
    """Probabilities ``(K, *block)`` of a block: its own windows plus the pieces of the blocks before it,
    divided by the global weight sums (the Blender's ``result``)."""
    plan = job.plan
    shape = plan.block_shape(idx)
    acc = own.copy() if own is not None else np.zeros((job.stored_classes, *shape), np.float32)
    lo = tuple(a for a, _ in plan.region(idx))
    for src, e, region in plan.incoming(idx):
        piece = np.load(job.piece_path(src, e))
        acc[(slice(None), *(slice(a - b, c - b) for (a, c), b in zip(region, lo)))] += piece
    block = torch.from_numpy(acc)
    nd = plan.ndim
    for axis, inv in enumerate(plan.inverse_weights(idx)):
        view = [1] * (nd + 1)
        view[axis + 1] = -1
        block = block.mul_(torch.from_numpy(inv).view(view))
    if job.stored_classes < job.num_classes:
        block = torch.cat([block, (1.0 - block.sum(dim=0, keepdim=True)).clamp_(min=0.0)], dim=0)
    return np.ascontiguousarray(block.numpy(), dtype=np.float32)


def finish_block(job: Job, idx: Index, own: np.ndarray | None, *after: Any) -> str:
    """Blend block ``idx``, write its labels (and confidence), mark it done, drop the pieces it used."""
    marker = job.marker("predict", idx)
    if marker.exists():  # a retried task whose first run got this far
        return marker.name
    probs = blend_block(job, idx, own)
    labels, confidence = probabilities_to_labels(probs, job.multilabel, job.threshold)
    region = tuple(slice(lo, hi) for lo, hi in job.plan.region(idx))
    out = open_for_writing(job.labels_path)
    out[(slice(None), *region) if job.multilabel else region] = labels
    if job.confidence_path is not None:
        open_for_writing(job.confidence_path)[region] = confidence
    marker.touch()
    for src, e, _ in job.plan.incoming(idx):
        with contextlib.suppress(FileNotFoundError):
            job.piece_path(src, e).unlink()
    return marker.name


# -- clusters -----------------------------------------------------------------------------------------
def machine_workers() -> int:
    """Workers for "a local cluster sized to the machine": one per GPU, else one per two CPU cores."""
    if torch.cuda.is_available():
        return max(1, torch.cuda.device_count())
    return max(1, (os.cpu_count() or 1) // 2)


#: Modules the fork server imports once, so that each worker process starts in a moment instead of
#: importing torch itself (seconds each, and more when several start at once).
_WORKER_PRELOAD = ["torch", "zarr", "scipy.ndimage", "napari_labelfx.inference.distributed",
                   "napari_labelfx.inference.predictor"]


def use_forkserver() -> bool:
    """Start local worker processes from a fork server that has torch and this package imported.

    Sets dask's ``distributed.worker.multiprocessing-method`` to ``forkserver`` for this process (a
    restarted worker starts the same way); a no-op where the platform has no fork server (Windows).
    """
    import multiprocessing

    import dask

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"})
    from distributed.utils import get_mp_context

    ctx = get_mp_context()  # distributed's own preload list first (numpy, ...), then ours
    preload = list(getattr(ctx, "_forkserver_preload", None) or [])
    try:
        from multiprocessing import forkserver

        preload = list(forkserver._forkserver._preload_modules)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - private attribute: fall back to ours only
        pass
    ctx.set_forkserver_preload(list(dict.fromkeys(preload + _WORKER_PRELOAD)))
    return True


def local_cluster(workers: int, processes: bool = True, memory_limit: str | int = "auto") -> Any:
    """A LocalCluster on 127.0.0.1: ``workers`` workers with one task thread each, no dashboard."""
    from distributed import LocalCluster

    if workers < 1:
        raise InferenceError(f"--workers must be at least 1, got {workers}")
    if processes:
        use_forkserver()
    # threads talk in-process (no socket at all); processes over TCP on the loopback interface only
    net = {"host": "127.0.0.1"} if processes else {}
    with warnings.catch_warnings():
        # the scheduler's small HTTP server (health, metrics; on 127.0.0.1) moves off a busy port 8787
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        return LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=processes,
                            dashboard_address=None, memory_limit=memory_limit if processes else 0, **net)


@contextlib.contextmanager
def _client_for(client: Any, scheduler: str | None, workers: int | None, processes: bool) -> Any:
    """The client to use, and whether its cluster is ours (closed at the end)."""
    if client is not None:
        yield client
        return
    from distributed import Client

    if scheduler:
        try:
            c = Client(scheduler, timeout="30s")
        except OSError as exc:
            raise InferenceError(f"cannot reach the dask scheduler at {scheduler}: {exc}") from None
        try:
            yield c
        finally:
            c.close()
        return
    cluster = local_cluster(workers or machine_workers(), processes=processes)
    c = Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


# -- the run folder -----------------------------------------------------------------------------------
def partial_folder(output: str | os.PathLike) -> Path:
    """``.<name>.partial`` beside the output: where a run writes until it is complete."""
    out = Path(output)
    return out.parent / f".{out.name}{PARTIAL_SUFFIX}"


def run_folder(output: str | os.PathLike) -> Path | None:
    """The folder of the unfinished run for ``output`` (arrays, ``done/`` markers), or None."""
    top = partial_folder(output)
    state = _read_state(top)
    return top / str(state["epoch"]) if state and "epoch" in state else None


def _model_stamp(path: Path) -> str:
    """Changes when the files of a model folder do (names, sizes, modification times)."""
    items = []
    for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if p.is_file():
            st = p.stat()
            items.append((str(p.relative_to(path) if path.is_dir() else p.name), st.st_size, st.st_mtime_ns))
    return hashlib.sha1(repr(items).encode()).hexdigest()


def _object_stamp(pred: Any) -> str:
    """A fingerprint of an in-memory predictor's weights (and forest)."""
    h = hashlib.sha1()
    for k, v in pred.model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    forest = getattr(pred, "forest", None)
    if forest is not None:
        h.update(pickle.dumps(forest))
    return h.hexdigest()


def _read_state(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "job.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _array_attrs(axes: str, scale: list[float], unit: str | None, settings: dict[str, Any],
                 labels: bool) -> dict[str, Any]:
    attrs: dict[str, Any] = {"axes": axes, "scale": scale, "unit": unit, "labelfx": settings}
    if labels:
        attrs[LABELS_ATTR] = True
    return attrs


def _create_output(path: Path, shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...], axes: str,
                   attrs: dict[str, Any], pyramid: bool) -> str:
    """Create the level-0 array (inside an OME-Zarr group ``path`` when ``pyramid``); return its path."""
    kwargs = dict(shape=shape, dtype=dtype, chunks=chunks, fill_value=0,
                  dimension_names=[a.lower() for a in axes], config={"write_empty_chunks": True})
    if not pyramid:
        zarr.create_array(store=str(path), attributes=attrs, zarr_format=3, **kwargs)
        return str(path)
    group = zarr.open_group(str(path), mode="w", zarr_format=3, attributes=attrs)
    group.create_array("0", **kwargs)
    return str(path / "0")


# -- pyramid ------------------------------------------------------------------------------------------
def pyramid_levels(shape: Sequence[int], axes: str, levels: int | bool) -> int:
    """Levels below 0: each halves Y and X; ``True`` = until the larger of Y, X is at most 512."""
    if levels is True:
        y, x = shape[axes.index("Y")], shape[axes.index("X")]
        n = 0
        while max(y, x) > 512:
            y, x, n = -(-y // 2), -(-x // 2), n + 1
        return n
    return max(0, int(levels or 0))


def _build_pyramid(group_path: Path, axes: str, n_levels: int, scale: list[float], unit: str | None,
                   name: str) -> None:
    """Levels 1..n of an OME-Zarr group from level 0 (every other Y, X pixel: right for labels too)."""
    import dask.array as da

    group = zarr.open_group(str(group_path), mode="r+")
    base = group["0"]
    yx = [axes.index("Y"), axes.index("X")]
    datasets = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": list(scale)}]}]
    prev = base
    for level in range(1, n_levels + 1):
        step = tuple(slice(None, None, 2) if i in yx else slice(None) for i in range(len(axes)))
        src = da.from_zarr(prev)[step]
        chunks = tuple(min(c, s) for c, s in zip(base.chunks, src.shape))
        arr = group.create_array(str(level), shape=src.shape, dtype=base.dtype, chunks=chunks, fill_value=0,
                                 dimension_names=[a.lower() for a in axes], overwrite=True,
                                 config={"write_empty_chunks": True})
        da.store(src.rechunk(chunks), arr, lock=False)
        arr.attrs[COMPLETE_ATTR] = True
        level_scale = [s * (2**level if i in yx else 1) for i, s in enumerate(scale)]
        datasets.append({"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": level_scale}]})
        prev = arr
    ngff_unit = {"um": "micrometer", "µm": "micrometer", "nm": "nanometer", "mm": "millimeter"}.get(unit or "", None)
    axes_meta = []
    for a in axes:
        entry: dict[str, Any] = {"name": a.lower(), "type": "channel" if a == "C" else "space"}
        if a != "C" and ngff_unit:
            entry["unit"] = ngff_unit
        axes_meta.append(entry)
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"name": name, "axes": axes_meta, "datasets": datasets}]}


# -- the run ------------------------------------------------------------------------------------------
def _resolve_model(model: Any, device: str) -> tuple[Any, Any, str]:
    """(client-side predictor, what the workers get, fingerprint)."""
    if isinstance(model, (str, os.PathLike)):
        from napari_labelfx.inference.predictor import Predictor

        # a labelfx-made bioimage.io package is unpacked into a model folder by the caller (the CLI and
        # the panel: export sits above inference)
        folder = Path(model).resolve()
        if not any((folder / sub / "config.json").is_file() for sub in ("", "best", "last")):
            raise InferenceError(f"{model}: distributed prediction needs a labelfx model folder (with config.json); "
                                 "a bioimage.io package not made by labelfx runs through its own pipeline: "
                                 "predict it without --workers/--scheduler")
        pred = Predictor.from_folder(folder, device="cpu")
        ref = ModelRef(str(folder), _model_stamp(folder), device)
        return pred, ref, ref.stamp
    if not hasattr(model, "to_channels_first") or not hasattr(model, "model"):
        raise InferenceError(f"distributed prediction needs a model folder or a labelfx Predictor, got "
                             f"{type(model).__name__} (bioimage.io packages: predict without --workers)")
    return model, model, _object_stamp(model)


def _resolve_input(image: Any, axes: str | None, pred: Any) -> tuple[Any, PathSource | ArraySource, str, Any]:
    """(channels-first lazy image, source for the workers, fingerprint, ImageData or None)."""
    if isinstance(image, (str, os.PathLike)):
        from napari_labelfx.io.reader import read_image

        path = Path(image).resolve()
        img = read_image(path, eager_limit=0)
        data = img.data[0] if img.multiscale else img.data
        chw = pred.to_channels_first(data, img.axes)
        return chw, PathSource(str(path)), f"{path}|{img.axes}|{tuple(data.shape)}|{img.dtype}", img
    if axes is None:
        raise InferenceError("an array input needs its axis letters (axes=...)")
    chw = pred.to_channels_first(image, axes)
    source = ArraySource(image, axes)
    return chw, source, f"array|{axes}|{tuple(image.shape)}|{getattr(image, 'dtype', '')}|{source.token}", None


def _is_own_output(path: Path) -> bool:
    """A Zarr array or OME-Zarr group that this module wrote (replaceable without ``overwrite``)."""
    from napari_labelfx.io.safety import is_own_zarr

    if is_own_zarr(path):
        return True
    try:
        doc = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
        entries = {p.name for p in path.iterdir()}
    except (OSError, ValueError):
        return False
    attrs = doc.get("attributes") if isinstance(doc, dict) else None
    return (isinstance(attrs, dict) and "labelfx" in attrs and doc.get("node_type") == "group"
            and all(e == "zarr.json" or e.isdigit() for e in entries))


def _check_output(path: Path, inputs: Sequence[Any], overwrite: bool, what: str) -> None:
    from napari_labelfx.io.safety import check_destination

    if path.suffix.lower() != ".zarr":
        raise InferenceError(f"{path}: distributed prediction writes Zarr; give the {what} a .zarr path")
    check_destination(path, inputs=[p for p in inputs if p is not None],
                      overwrite=overwrite or _is_own_output(path), what=what)


def predict_distributed(
    model: Any,
    image: Any,
    output: str | os.PathLike,
    *,
    axes: str | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    processes: bool = True,
    threads: int | None = None,
    device: str = "auto",
    roi_size: int | Sequence[int] | None = None,
    tta: bool | None = None,
    block: int | Sequence[int] | None = None,
    chunks: Sequence[int] | None = None,
    confidence: str | os.PathLike | None = None,
    objects: bool = False,
    object_classes: str | Sequence[str] | None = None,
    split: str = "watershed",
    min_size: int | None = None,
    min_distance: int | None = None,
    pyramid: bool | int = False,
    scale: Sequence[float] | None = None,
    unit: str | None = None,
    progress: Any = None,
    overwrite: bool = False,
    retries: int = 2,
) -> dict[str, Any]:
    """Predict ``image`` block by block on a dask cluster into the Zarr ``output``.

    Parameters
    ----------
    model : a model folder (network or pixel forest; loaded once per worker), or a ``Predictor``
        object (sent to each worker once).
    image : an image path (Zarr, OME-Zarr: level 0, TIFF: read lazily) or an array (dask, zarr,
        numpy) with its axis letters in ``axes``.
    output : ``.zarr`` path of the labels (class indices; multi-label ``(K, ...)``; with ``objects``
        one id per object). Written as a plain Zarr v3 array, or an OME-Zarr 0.5 multiscale group
        with ``pyramid`` (True: halve Y and X until 512 pixels; an int: that many levels).
    workers : start a local cluster of this many worker processes (one task thread each, on
        127.0.0.1); None with no ``scheduler``/``client``: :func:`machine_workers`.
    scheduler : address of an existing dask scheduler (``tcp://host:8786``); workers must see the
        input, the model folder and the output's folder at the same paths.
    client : an existing ``distributed.Client`` (used as is, not closed).
    processes : local cluster of processes (default) or threads.
    threads : torch threads per worker; None: the local cluster's cores / workers, an existing
        cluster's setting otherwise.
    device : ``"auto"`` (a worker per GPU when it has several), ``"cpu"``, ``"cuda"``, ...
    roi_size, tta : as the single-process predictor (None: the model folder's).
    block : block size (int, or one per spatial axis), rounded up to whole output chunks and at least
        one window; default about 16 M pixels (4096^2, 64 x 512 x 512).
    chunks : output chunk shape per spatial axis (default as the single-process streamer).
    confidence : also write the confidence (``.zarr``).
    objects : one id per object, merged across blocks; ``object_classes`` names the object classes,
        ``split``/``min_size``/``min_distance`` as :func:`~napari_labelfx.inference.objects_from_labels`.
    progress : tqdm-like (``update(n)``, ``total`` set) or ``callable(done, total)``; raising
        :class:`Cancelled` (or any exception) in it stops the run, keeping finished blocks.
    overwrite : replace an existing output labelfx did not write.
    retries : per task, on errors (a killed worker's tasks are recomputed regardless).

    Returns
    -------
    dict : ``output``, ``shape``, ``blocks``, ``skipped`` (finished by an earlier run), ``computed``,
        ``seconds``, ``workers``, and ``objects`` (count) when asked.
    """
    t0 = time.perf_counter()
    output = Path(output)
    confidence = Path(confidence) if confidence is not None else None
    if split not in ("watershed", "none"):
        raise InferenceError(f"split must be 'watershed' or 'none', got {split!r}")
    pred, model_arg, model_stamp = _resolve_model(model, device)
    chw, source, input_stamp, img = _resolve_input(image, axes, pred)
    inputs = [getattr(source, "path", None), model_arg.path if isinstance(model_arg, ModelRef) else None]
    _check_output(output, inputs, overwrite, "output")
    if confidence is not None:
        if confidence.resolve() == output.resolve():
            raise InferenceError(f"{confidence}: labels and confidence need different paths")
        _check_output(confidence, inputs, overwrite, "confidence")
    classes = None
    if objects:
        from napari_labelfx.inference.objects import object_class_indices

        classes = object_class_indices(pred.class_names, object_classes)  # an unknown name fails before any work
    slicewise, spatial, roi2, roi, out_chunks, blk, plan = _plan_blocks(pred, chw, roi_size, block, chunks)
    spatial_axes = "ZYX" if len(spatial) == 3 else "YX"
    normalisation = pred.normalisation_for(chw)
    multilabel = bool(pred.multilabel)
    k = int(pred.num_classes)
    use_tta = bool(pred.tta if tta is None else tta)
    if scale is None and img is not None and len(img.spatial_scale) == len(spatial):
        scale = img.spatial_scale
    if unit is None and img is not None:
        unit = img.metadata.get("unit")
    scale_list = [float(s) for s in scale] if scale is not None else [1.0] * len(spatial)
    if len(scale_list) != len(spatial):
        raise InferenceError(f"scale {scale_list} needs one value per spatial axis of {spatial}")
    n_levels = pyramid_levels(spatial, spatial_axes, pyramid) if pyramid else 0
    as_group = bool(pyramid)
    settings = {"kind": "objects" if objects else "prediction", "multilabel": multilabel,
                "roi_size": list(roi2), "slicewise": slicewise, "overlap": plan.overlap, "blend": plan.blend,
                "tta": use_tta, "num_classes": k, "model": pred.config.get("model", {}).get("name"),
                "distributed": {"block": list(blk)}}
    if pred.class_names is not None:
        settings["class_names"] = pred.class_names
    fingerprint = {
        "version": STATE_VERSION, "model": model_stamp, "input": input_stamp, "roi": list(roi),
        "overlap": plan.overlap, "blend": plan.blend, "tta": use_tta, "block": list(blk), "chunks": list(out_chunks),
        "normalisation": [np.asarray(v).tolist() for v in normalisation], "threshold": float(pred.threshold),
        "confidence": confidence is not None, "objects": [bool(objects), str(object_classes), split, min_size,
                                                          min_distance],
        "pyramid": n_levels if as_group else None, "scale": scale_list, "unit": unit,
    }
    lead_axes = "C" if multilabel else ""
    label_axes = lead_axes + spatial_axes
    label_scale = ([1.0] if multilabel else []) + scale_list
    top = partial_folder(output)
    folder = _prepare_run_folder(
        top, output, fingerprint, objects=objects, multilabel=multilabel, k=k, spatial=spatial,
        out_chunks=out_chunks, spatial_axes=spatial_axes, scale_list=scale_list, unit=unit, settings=settings,
        as_group=as_group, with_confidence=confidence is not None)
    level0 = "out.zarr/0" if as_group else "out.zarr"
    labels_path = folder / ("labels.zarr" if objects else level0)
    conf_path = (folder / ("confidence.zarr/0" if as_group else "confidence.zarr")) if confidence else None
    job = Job(plan=plan, source=source, normalisation=normalisation, num_classes=k, multilabel=multilabel,
              threshold=float(pred.threshold), tta=use_tta, amp=bool(pred.amp), batch_size=int(pred.batch_size),
              slicewise=slicewise, folder=str(folder), labels_path=str(labels_path),
              confidence_path=str(conf_path) if conf_path else None, threads=threads,
              device=device)
    blocks = plan.blocks()
    done = {p.name for p in (folder / "done").iterdir()}
    todo = [b for b in blocks if f"predict-{plan.name(b)}" not in done]
    summary: dict[str, Any] = {"output": str(output), "shape": list(spatial), "block": list(blk),
                               "blocks": len(blocks), "skipped": len(blocks) - len(todo), "computed": len(todo)}
    steps = len(blocks) * (4 if objects else 1)
    ticker = _Ticker(progress, steps)
    ticker.advance(len(blocks) - len(todo))
    with _client_for(client, scheduler, workers, processes) as c:
        n_workers = len(c.scheduler_info(n_workers=-1)["workers"]) if hasattr(c, "scheduler_info") else 0
        summary["workers"] = n_workers
        if job.threads is None and client is None and scheduler is None:
            job.threads = max(1, (os.cpu_count() or 1) // max(1, n_workers))
        model_for_tasks = model_arg if isinstance(model_arg, ModelRef) else c.scatter(model_arg, broadcast=True,
                                                                                     hash=False)
        _run_blocks(c, job, model_for_tasks, todo, retries, ticker)
        if objects:
            from napari_labelfx.inference._block_objects import merge_objects

            summary["objects"] = merge_objects(
                c, plan, job.labels_path, str(folder / level0), folder, classes=classes, multilabel=multilabel,
                split=split, min_size=min_size, min_distance=min_distance, retries=retries, ticker=ticker)
            with contextlib.suppress(OSError, ValueError):
                summary["object_sizes"] = json.loads((folder / "objects.json").read_text(encoding="utf-8"))
        _finalise(folder, as_group, n_levels, confidence is not None, spatial_axes, label_axes, scale_list,
                  label_scale, unit, output.stem, summary.get("objects"), multilabel and not objects)
    _move_into_place(folder, output, confidence)
    shutil.rmtree(top, ignore_errors=True)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary


def _plan_blocks(pred: Any, chw: Any, roi_size: int | Sequence[int] | None, block: int | Sequence[int] | None,
                 chunks: Sequence[int] | None) -> tuple[bool, tuple[int, ...], tuple[int, ...], tuple[int, ...],
                                                        tuple[int, ...], tuple[int, ...], BlockPlan]:
    """(slicewise, spatial shape, window as asked, window per spatial axis, output chunks, block, plan)."""
    slicewise = bool(pred.is_slicewise(chw))
    spatial = tuple(int(s) for s in chw.shape[1:])
    roi2 = pred.roi_for(spatial) if roi_size is None else (
        (int(roi_size),) * pred.spatial_dims if isinstance(roi_size, (int, np.integer)) else tuple(roi_size))
    roi = (1, *roi2[-2:]) if slicewise else tuple(int(r) for r in roi2)
    if len(roi) != len(spatial):
        raise InferenceError(f"roi_size {roi2} does not fit the image's spatial shape {spatial}")
    spatial_axes = "ZYX" if len(spatial) == 3 else "YX"
    from napari_labelfx.inference.streaming import _default_chunks

    want_block = None if block is None else (
        (int(block),) * len(spatial) if isinstance(block, (int, np.integer)) else tuple(int(b) for b in block))
    if chunks is not None:
        out_chunks = tuple(int(c) for c in chunks)
    else:
        out_chunks = _default_chunks(spatial, spatial_axes)
        if want_block is not None and len(want_block) == len(spatial):
            # blocks smaller than the default chunks: chunks of one block (blocks are whole chunks)
            out_chunks = tuple(min(c, max(b, min(r, s))) for c, b, r, s in zip(out_chunks, want_block, roi, spatial))
    if len(out_chunks) != len(spatial) or any(c < 1 for c in out_chunks):
        raise InferenceError(f"chunks {out_chunks} need one positive size per spatial axis of {spatial}")
    out_chunks = tuple(min(c, s) for c, s in zip(out_chunks, spatial))
    blk = default_block(spatial, out_chunks, roi) if want_block is None else align_block(
        spatial, want_block, out_chunks, roi)
    plan = BlockPlan(spatial, roi, float(pred.overlap), blk, pred.blend)
    return slicewise, spatial, tuple(roi2), roi, out_chunks, blk, plan


def _prepare_run_folder(top: Path, output: Path, fingerprint: dict[str, Any], *, objects: bool, multilabel: bool,
                        k: int, spatial: tuple[int, ...], out_chunks: tuple[int, ...], spatial_axes: str,
                        scale_list: list[float], unit: str | None, settings: dict[str, Any], as_group: bool,
                        with_confidence: bool) -> Path:
    """The folder of this job's run: the unfinished one of the same job, else a new one with empty arrays."""
    state = _read_state(top)
    if top.exists() and (state is None or state.get("fingerprint") != fingerprint
                         or not (top / str(state.get("epoch"))).is_dir()):
        shutil.rmtree(top)  # another job's (or a damaged) run folder: start afresh
        state = None
    lead_axes, lead = ("C", (k,)) if multilabel else ("", ())
    label_axes = lead_axes + spatial_axes
    label_scale = ([1.0] if multilabel else []) + scale_list
    labels_chunks = (1,) * len(lead) + out_chunks
    if state is None:
        # everything of one job lives in a folder of its own name (its "epoch"): a task of a cancelled
        # run still finishing can only write where that run wrote, never into a new job's arrays
        state = {"fingerprint": fingerprint, "output": str(output), "epoch": f"run-{uuid.uuid4().hex[:12]}"}
        folder = top / state["epoch"]
        for sub in ("done", "pieces", "bands"):
            (folder / sub).mkdir(parents=True)
        labels_attrs = _array_attrs(label_axes, label_scale, unit, settings, labels=True)
        if objects:
            _create_output(folder / "labels.zarr", lead + spatial, np.uint8 if multilabel else labels_dtype(k),
                           labels_chunks, label_axes, labels_attrs, pyramid=False)
            _create_output(folder / "out.zarr", spatial, np.int32, out_chunks, spatial_axes,
                           _array_attrs(spatial_axes, scale_list, unit, settings, labels=True), pyramid=as_group)
        else:
            _create_output(folder / "out.zarr", lead + spatial, np.uint8 if multilabel else labels_dtype(k),
                           labels_chunks, label_axes, labels_attrs, pyramid=as_group)
        if with_confidence:
            _create_output(folder / "confidence.zarr", spatial, np.float32, out_chunks, spatial_axes,
                           _array_attrs(spatial_axes, scale_list, unit, settings, labels=False), pyramid=as_group)
        (top / "job.json").write_text(json.dumps(state), encoding="utf-8")
    return top / str(state["epoch"])


class _Ticker:
    """Progress over the run's steps for a tqdm-like object or a ``callable(done, total)``."""

    def __init__(self, progress: Any, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0
        if progress is not None and hasattr(progress, "update") and hasattr(progress, "total"):
            progress.total = total
            if hasattr(progress, "refresh"):
                progress.refresh()

    def advance(self, n: int = 1) -> None:
        if n <= 0:
            return
        self.done += n
        report_progress(self.progress, n, self.done, self.total)


def _run_blocks(client: Any, job: Job, model: Any, todo: list[Index], retries: int, ticker: _Ticker) -> None:
    """Submit forward/finish tasks for the unfinished blocks and wait, reporting each finished block."""
    from distributed import as_completed

    if not todo:
        return
    plan = job.plan
    run = uuid.uuid4().hex[:8]
    pending = set(todo)
    n = len(plan.blocks())
    forwards: dict[Index, Any] = {}
    tokens: dict[Index, Any] = {}
    finishes = []
    # a job naming its input by path is small and travels with each task (it survives any worker loss);
    # an in-memory array is sent to each worker once
    job_arg = job if isinstance(job.source, PathSource) else client.scatter(job, broadcast=True, hash=False)
    try:
        for idx in todo:
            lin = plan.linear(idx)
            # earlier blocks first; a block is finished as soon as it can be (its data then leaves memory)
            forwards[idx] = client.submit(forward_block, job_arg, model, idx, key=f"lfx-{run}-forward-{lin}",
                                          priority=-lin, retries=retries, pure=False)
            tokens[idx] = client.submit(token, forwards[idx], key=f"lfx-{run}-token-{lin}", priority=n - lin + n,
                                        pure=False)
        for idx in todo:
            lin = plan.linear(idx)
            # blocks before it whose pieces are not on disk yet (an earlier run's finished blocks left theirs)
            after = [tokens[src] for src in plan.sources(idx) if src in pending]
            finishes.append(client.submit(finish_block, job_arg, idx, forwards[idx], *after,
                                          key=f"lfx-{run}-finish-{lin}", priority=2 * n - lin + n,
                                          retries=retries, pure=False))
        forwards.clear()
        tokens.clear()
        for fut in as_completed(finishes):
            fut.result()
            fut.release()
            ticker.advance(1)
    except BaseException:
        client.cancel(finishes + list(forwards.values()) + list(tokens.values()))
        # a running task cannot be interrupted: let those finish, so that on return (e.g. a cancel in
        # napari, then Predict again) no task of this run still writes
        _wait_stopped(client, f"lfx-{run}-")
        raise
    finally:
        if job_arg is not job:
            with contextlib.suppress(Exception):
                client.cancel([job_arg])


def _running_keys(prefix: str, dask_worker: Any = None) -> list[str]:
    """Keys of the tasks running on this worker (cancelled ones included) that start with ``prefix``."""
    state = getattr(dask_worker, "state", None)
    running = getattr(state, "all_running_tasks", ()) if state is not None else ()
    return [str(ts.key) for ts in running if str(ts.key).startswith(prefix)]


def _wait_stopped(client: Any, prefix: str, timeout: float = 60.0) -> None:
    """Wait (at most ``timeout`` s) until no worker runs a task whose key starts with ``prefix``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            running = client.run(_running_keys, prefix)
        except Exception:  # noqa: BLE001 - a closing cluster: nothing left to wait for
            return
        if not any(running.values()):
            return
        time.sleep(0.05)


def _finalise(folder: Path, as_group: bool, n_levels: int, with_conf: bool, spatial_axes: str, label_axes: str,
              scale: list[float], label_scale: list[float], unit: str | None, name: str,
              n_objects: int | None, multilabel: bool) -> None:
    """Mark the arrays complete and build their pyramids (inside the run folder)."""
    targets = [("out.zarr", label_axes if multilabel else spatial_axes, label_scale if multilabel else scale)]
    if with_conf:
        targets.append(("confidence.zarr", spatial_axes, scale))
    for sub, axes, sc in targets:
        path = folder / sub
        level0 = zarr.open_array(str(path / "0" if as_group else path), mode="r+")
        if n_objects is not None and sub == "out.zarr":
            level0.attrs["metadata"] = {"objects": int(n_objects)}
        level0.attrs[COMPLETE_ATTR] = True
        if as_group:
            _build_pyramid(path, axes, n_levels, sc, unit, name)
            group = zarr.open_group(str(path), mode="r+")
            if n_objects is not None and sub == "out.zarr":
                group.attrs["metadata"] = {"objects": int(n_objects)}


def _move_into_place(folder: Path, output: Path, confidence: Path | None) -> None:
    """Rename the finished arrays over their destinations and remove the run folder."""
    from napari_labelfx.io.atomic import _replace

    _replace(folder / "out.zarr", output)
    if confidence is not None:
        _replace(folder / "confidence.zarr", confidence)
    shutil.rmtree(folder, ignore_errors=True)


def worker_stats() -> dict[str, int]:
    """This process's counters: model folders loaded, blocks predicted (``client.run(worker_stats)``)."""
    return dict(LOAD_COUNT)


def peak_memory_per_worker(client: Any) -> dict[str, int]:
    """Peak resident memory (bytes) of each worker process so far (``ru_maxrss``)."""

    def _peak() -> int:
        import resource
        import sys

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss if sys.platform == "darwin" else rss * 1024)

    return {str(k): int(v) for k, v in client.run(_peak).items()}
