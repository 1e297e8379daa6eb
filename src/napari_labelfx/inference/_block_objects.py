"""Objects (one id per object) over a volume predicted in blocks: split per block, merged across borders.

After the class labels of every block are written, four passes run on the cluster:

1. **size**: per block, the areas of the foreground's connected components that do not touch another
   block; their median gives the typical object size, hence ``min_size`` and ``min_distance`` exactly
   as :func:`~napari_labelfx.inference.objects.objects_from_labels` derives them (unless given).
2. **split**: per block, the objects of the block grown by a halo (about 1.5 object diameters), so an
   object cut by a border is seen whole; the block keeps its own part, numbered 1..n, and saves the
   ids its halo gives the first few pixels of each block after it (a thin "band").
3. **match**: per block, its ids in each band against the band saved by the block before it: two ids
   covering mostly the same band pixels are the same object (an edge of a merge graph).
4. **relabel**: the client joins the graph's components (union-find) and numbers them 1..N over the
   whole volume; each block rewrites its ids.

Every block is finished with markers in the run folder, so a restarted run skips passes 2 and 4 for
blocks that have them.
"""
from __future__ import annotations

import contextlib
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from scipy import ndimage as ndi

from napari_labelfx.inference._block_plan import BlockPlan, Index, Region
from napari_labelfx.inference.errors import InferenceError
from napari_labelfx.inference.objects import MIN_OBJECT_SIZE, objects_from_labels

#: Two ids are one object when they share at least this fraction of the smaller one's band pixels.
MATCH_FRACTION = 0.5
#: Width (pixels) of the band past each border where neighbouring blocks' ids are compared.
BAND = 4


@dataclass
class ObjectJob:
    """What the object tasks need (picklable)."""

    plan: BlockPlan
    labels_path: str
    scratch_path: str  # provisional per-block ids (int32, 1..n per block)
    out_path: str
    folder: str
    classes: list[int] | None
    multilabel: bool
    split: str
    min_size: int = 0
    min_distance: int = 0
    halo: int = 0
    band: int = BAND

    def marker(self, stage: str, idx: Index) -> Path:
        return Path(self.folder) / "done" / f"{stage}-{self.plan.name(idx)}"

    def band_path(self, src: Index, e: Index) -> Path:
        return Path(self.folder) / "bands" / f"{self.plan.name(src)}_{''.join(map(str, e))}.npy"


def _class_labels(job: ObjectJob, region: Region) -> np.ndarray:
    """Class indices (0 = background) of a region; multi-label: the first positive class."""
    arr = zarr.open_array(job.labels_path, mode="r")
    sl = tuple(slice(lo, hi) for lo, hi in region)
    if job.multilabel:
        lab = np.asarray(arr[(slice(None), *sl)])
        return np.argmax(np.concatenate([np.zeros_like(lab[:1]), lab], 0), 0).astype(np.int32)
    return np.asarray(arr[sl])


def _foreground(job: ObjectJob, labels: np.ndarray) -> np.ndarray:
    if job.classes is not None:
        return np.isin(labels, np.asarray(job.classes, labels.dtype))
    return labels > 0


def _grow(plan: BlockPlan, idx: Index, halo: int) -> Region:
    return tuple((max(0, lo - halo), min(s, hi + halo)) for (lo, hi), s in zip(plan.region(idx), plan.spatial))


# -- 1: sizes ---------------------------------------------------------------------------------------------
def block_sizes(job: ObjectJob, idx: Index) -> tuple[np.ndarray, np.ndarray]:
    """Areas of the block's foreground components: (those not touching another block, all of them)."""
    plan = job.plan
    region = plan.region(idx)
    fg = _foreground(job, _class_labels(job, region))
    comp, n = ndi.label(fg, structure=np.ones((3,) * fg.ndim, bool))
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    areas = np.bincount(comp.ravel())
    cut = np.zeros(areas.size, bool)
    for axis, (lo, hi) in enumerate(region):
        if lo > 0:
            cut[np.take(comp, 0, axis=axis)] = True
        if hi < plan.spatial[axis]:
            cut[np.take(comp, -1, axis=axis)] = True
    ids = np.arange(1, areas.size)
    return areas[ids[~cut[1:]]].astype(np.int64), areas[1:].astype(np.int64)


def sizes_from_areas(area: float, ndim: int) -> tuple[float, int, int]:
    """(diameter, min_size, min_distance) from the median object area, as ``objects_from_labels``."""
    if ndim == 3:
        diameter = float(2.0 * (3.0 * area / (4.0 * np.pi)) ** (1.0 / 3.0))
        volume = (np.pi / 6.0) * diameter**3
    else:
        diameter = float(2.0 * np.sqrt(area / np.pi))
        volume = np.pi * diameter**2 / 4.0
    return diameter, max(MIN_OBJECT_SIZE, int(0.1 * volume)), max(int(diameter / 4), 2)


# -- 2: split ---------------------------------------------------------------------------------------------
def band_region(plan: BlockPlan, src: Index, e: Index, width: int) -> Region | None:
    """The first ``width`` pixels of block ``src + e`` past each border it shares with ``src``."""
    dest = tuple(i + d for i, d in zip(src, e))
    if not plan.valid(dest):
        return None
    out = []
    for d, (lo, hi) in zip(e, plan.region(dest)):
        out.append((lo, min(hi, lo + width)) if d else (lo, hi))
    return tuple(out)


def split_block(job: ObjectJob, idx: Index) -> int:
    """Objects of the block grown by the halo; write the block's own part (ids 1..n) and the bands."""
    marker = job.marker("split", idx)
    with contextlib.suppress(OSError, ValueError):
        return int(json.loads(marker.read_text())["n"])
    plan = job.plan
    grown = _grow(plan, idx, job.halo)
    labels = _class_labels(job, grown)
    ids = objects_from_labels(labels, classes=job.classes, split=job.split, min_size=job.min_size,
                              min_distance=job.min_distance) if labels.any() else np.zeros(labels.shape, np.int32)
    region = plan.region(idx)
    own_sl = tuple(slice(lo - g, hi - g) for (lo, hi), (g, _) in zip(region, grown))
    own = ids[own_sl]
    present = np.unique(own)
    present = present[present > 0]
    lut = np.zeros(int(ids.max(initial=0)) + 1, np.int32)  # halo-only objects map to 0: their block keeps them
    lut[present] = np.arange(1, present.size + 1, dtype=np.int32)
    zarr.open_array(job.scratch_path, mode="r+")[tuple(slice(lo, hi) for lo, hi in region)] = lut[own]
    for e in plan.offsets():
        band = band_region(plan, idx, e, job.band)
        if band is None:
            continue
        part = lut[ids[tuple(slice(lo - g, hi - g) for (lo, hi), (g, _) in zip(band, grown))]]
        path = job.band_path(idx, e)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, part)
        tmp.replace(path)
    marker.write_text(json.dumps({"n": int(present.size)}))
    return int(present.size)


# -- 3: match ---------------------------------------------------------------------------------------------
def match_block(job: ObjectJob, idx: Index) -> np.ndarray:
    """Rows ``(source block, source id, this block's id)`` of ids that are one object across a border."""
    plan = job.plan
    scratch = zarr.open_array(job.scratch_path, mode="r")
    rows = []
    for e in plan.offsets():
        src = tuple(i - d for i, d in zip(idx, e))
        if not plan.valid(src):
            continue
        band = band_region(plan, src, e, job.band)
        theirs = np.load(job.band_path(src, e)).ravel().astype(np.int64)
        mine = np.asarray(scratch[tuple(slice(lo, hi) for lo, hi in band)]).ravel().astype(np.int64)
        both = (theirs > 0) & (mine > 0)
        if not both.any():
            continue
        pairs, counts = np.unique(np.stack([theirs[both], mine[both]]), axis=1, return_counts=True)
        area_theirs = np.bincount(theirs, minlength=int(pairs[0].max()) + 1)
        area_mine = np.bincount(mine, minlength=int(pairs[1].max()) + 1)
        keep = counts >= MATCH_FRACTION * np.minimum(area_theirs[pairs[0]], area_mine[pairs[1]])
        lin = plan.linear(src)
        for a, b in zip(pairs[0][keep], pairs[1][keep]):
            rows.append((lin, int(a), int(b)))
    return np.asarray(rows, np.int64).reshape(-1, 3)


def global_ids(plan: BlockPlan, counts: dict[Index, int], matches: dict[Index, np.ndarray]) -> tuple[np.ndarray, int]:
    """Union-find over the matches: (lookup provisional -> final id, number of objects).

    Provisional ids are ``offset[block] + local id``; final ids run 1..N in the order of each object's
    first provisional id (block order, then the block's own numbering).
    """
    blocks = plan.blocks()
    offsets = np.zeros(len(blocks) + 1, np.int64)
    for i, b in enumerate(blocks):
        offsets[i + 1] = offsets[i] + counts[b]
    total = int(offsets[-1])
    parent = np.arange(total + 1, dtype=np.int64)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = int(parent[root])
        while parent[x] != root:  # path compression
            parent[x], x = root, int(parent[x])
        return root

    for dest, rows in matches.items():
        base = offsets[plan.linear(dest)]
        for lin, a, b in rows:
            ra, rb = find(int(offsets[lin] + a)), find(int(base + b))
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)  # the smaller id is the root: order-independent result
    lut = np.zeros(total + 1, np.int64)
    final: dict[int, int] = {}
    for g in range(1, total + 1):
        r = find(g)
        if r not in final:
            final[r] = len(final) + 1
        lut[g] = final[r]
    if len(final) >= 2**31:
        raise InferenceError(f"{len(final)} objects do not fit int32 ids")
    lut = lut.astype(np.int32)
    return np.concatenate([offsets[:-1], lut]).astype(np.int64), len(final)


# -- 4: relabel -------------------------------------------------------------------------------------------
def relabel_block(job: ObjectJob, idx: Index, table: np.ndarray) -> bool:
    """Write the block's final ids (``table`` = block offsets, then the provisional -> final lookup)."""
    marker = job.marker("relabel", idx)
    if marker.exists():
        return True
    plan = job.plan
    n_blocks = len(plan.blocks())
    offset, lut = int(table[plan.linear(idx)]), table[n_blocks:]
    region = tuple(slice(lo, hi) for lo, hi in plan.region(idx))
    local = np.asarray(zarr.open_array(job.scratch_path, mode="r")[region]).astype(np.int64)
    ids = np.where(local > 0, lut[np.where(local > 0, local + offset, 0)], 0).astype(np.int32)
    from napari_labelfx.inference.distributed import open_for_writing

    open_for_writing(job.out_path)[region] = ids
    marker.touch()
    return True


# -- the client side --------------------------------------------------------------------------------------
def merge_objects(client: Any, plan: BlockPlan, labels_path: str, out_path: str, folder: str | Path, *,
                  classes: Sequence[int] | None = None, multilabel: bool = False, split: str = "watershed",
                  min_size: int | None = None, min_distance: int | None = None, retries: int = 2,
                  ticker: Any = None) -> int:
    """Run the four passes on a finished class-label array; write the ids to ``out_path``; return N.

    ``labels_path`` and ``out_path`` are Zarr arrays whose chunks tile ``plan``'s blocks (the output
    int32, created by the caller); ``folder`` keeps the passes' markers (restart) and scratch data.
    """
    from distributed import as_completed, wait

    folder = Path(folder)
    for sub in ("done", "bands"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    ticker = ticker if ticker is not None else _NoTicker()
    scratch = folder / "split.zarr"
    if not scratch.exists():
        zarr.create_array(store=str(scratch), shape=plan.spatial, dtype=np.int32,
                          chunks=zarr.open_array(out_path, mode="r").chunks, fill_value=0, zarr_format=3)
    ojob = ObjectJob(plan=plan, labels_path=labels_path, scratch_path=str(scratch), out_path=out_path,
                     folder=str(folder), classes=None if classes is None else [int(c) for c in classes],
                     multilabel=multilabel, split=split)
    blocks = plan.blocks()
    sizes_file = folder / "objects.json"
    try:
        sizes = json.loads(sizes_file.read_text())
    except (OSError, ValueError):
        sizes = None
    if sizes is None:
        futures = [client.submit(block_sizes, ojob, b, retries=retries, pure=False) for b in blocks]
        interior, pieces = [], []
        for fut in futures:
            a, b = fut.result()
            interior.append(a)
            pieces.append(b)
        areas = np.concatenate(interior) if sum(a.size for a in interior) else np.concatenate(pieces)
        if areas.size:
            diameter, auto_size, auto_distance = sizes_from_areas(float(np.median(areas)), plan.ndim)
        else:
            diameter, auto_size, auto_distance = 1.0, MIN_OBJECT_SIZE, 2
        halo = min(max(8, math.ceil(1.5 * diameter) + 2), max(plan.block))
        sizes = {"min_size": int(min_size if min_size is not None else auto_size),
                 "min_distance": int(min_distance if min_distance is not None else auto_distance),
                 "halo": int(halo), "diameter": diameter}
        sizes_file.write_text(json.dumps(sizes))
    ojob.min_size, ojob.min_distance, ojob.halo = sizes["min_size"], sizes["min_distance"], sizes["halo"]
    ojob.band = min(BAND, ojob.halo)
    done = {p.name for p in (folder / "done").iterdir()}
    counts: dict[Index, int] = {}
    todo = []
    for b in blocks:
        if f"split-{plan.name(b)}" in done:
            counts[b] = int(json.loads(ojob.marker("split", b).read_text())["n"])
        else:
            todo.append(b)
    ticker.advance(len(blocks) - len(todo))
    futures = {client.submit(split_block, ojob, b, retries=retries, pure=False): b for b in todo}
    for fut in as_completed(list(futures)):
        counts[futures[fut]] = int(fut.result())
        ticker.advance(1)
    match_futures = {client.submit(match_block, ojob, b, retries=retries, pure=False): b for b in blocks}
    matches: dict[Index, np.ndarray] = {}
    for fut in as_completed(list(match_futures)):
        matches[match_futures[fut]] = fut.result()
        ticker.advance(1)
    table, n_objects = global_ids(plan, counts, matches)
    left = [b for b in blocks if f"relabel-{plan.name(b)}" not in done]
    ticker.advance(len(blocks) - len(left))
    if left:
        table_future = client.scatter(table, broadcast=True, hash=False)
        relabels = [client.submit(relabel_block, ojob, b, table_future, retries=retries, pure=False) for b in left]
        for fut in as_completed(relabels):
            fut.result()
            ticker.advance(1)
        wait(relabels)
    return n_objects


class _NoTicker:
    def advance(self, n: int = 1) -> None:
        pass


def objects_blockwise(labels: str | Path, output: str | Path, block: int | Sequence[int], *, client: Any,
                      classes: Sequence[int] | None = None, split: str = "watershed", min_size: int | None = None,
                      min_distance: int | None = None, multilabel: bool = False,
                      folder: str | Path | None = None, overwrite: bool = False) -> int:
    """Object ids of a class-label Zarr array (``(*spatial)`` or multi-label ``(K, *spatial)``) in blocks.

    ``output`` becomes an int32 Zarr array with chunks of one block; ``folder`` (default: beside the
    output) holds the markers and scratch data of the passes, and is removed at the end. Returns N.
    """
    import shutil

    src = zarr.open_array(str(labels), mode="r")
    spatial = tuple(int(s) for s in (src.shape[1:] if multilabel else src.shape))
    blk = (int(block),) * len(spatial) if isinstance(block, (int, np.integer)) else tuple(int(b) for b in block)
    blk = tuple(min(b, s) for b, s in zip(blk, spatial))
    plan = BlockPlan(spatial, (1,) * len(spatial), 0.0, blk)
    output = Path(output)
    from napari_labelfx.inference.distributed import _check_output
    from napari_labelfx.io.zarr_io import COMPLETE_ATTR, LABELS_ATTR

    _check_output(output, [labels], overwrite, "objects")
    folder = Path(folder) if folder is not None else output.parent / f".{output.name}.objects"
    shutil.rmtree(folder, ignore_errors=True)  # this helper always starts afresh (the output is recreated)
    src_attrs = dict(src.attrs)
    axes = "ZYX"[-len(spatial):]
    scale = src_attrs.get("scale")
    scale = list(scale[-len(spatial):]) if isinstance(scale, list) and len(scale) >= len(spatial) else [1.0] * len(spatial)
    out = zarr.create_array(
        store=str(output), shape=spatial, dtype=np.int32, chunks=blk, fill_value=0, zarr_format=3, overwrite=True,
        dimension_names=[a.lower() for a in axes], config={"write_empty_chunks": True},
        attributes={LABELS_ATTR: True, "axes": axes, "scale": scale, "unit": src_attrs.get("unit"),
                    "labelfx": {"kind": "objects", "split": split}})
    n = merge_objects(client, plan, str(labels), str(output), folder, classes=classes, multilabel=multilabel,
                      split=split, min_size=min_size, min_distance=min_distance)
    out.attrs["metadata"] = {"objects": int(n)}
    out.attrs[COMPLETE_ATTR] = True
    shutil.rmtree(folder, ignore_errors=True)
    return n
