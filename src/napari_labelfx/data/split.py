"""Hold out annotated pixels for validation, in spatial blocks, so they never enter training.

Each item's pixel grid is cut into blocks (``block`` pixels per axis; cubes in volumes, so
neighbouring slices cannot leak into each other). Every block gets a fixed seeded random number; an
annotated block is held out when its number is below ``val_fraction``. Because the numbers depend only
on the seed, the item and the block, the split is stable when annotations are added during training:
new strokes inside a held-out block go to validation, all others to training.

Held-out pixels are grouped into windows of the training patch size (one forward pass each) with each
pixel scored in exactly one window. At most ``max_windows`` windows are kept so a validation pass stays
cheap; the blocks of dropped windows go back to training.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..annotations.kinds import IGNORE_INDEX, MULTILABEL_IGNORE, TrainingItem
from .checks import known_mask
from .crop import crop_pad

#: Items with fewer annotated blocks than this keep all their pixels for training.
MIN_BLOCKS_PER_ITEM = 4


@dataclass
class ValWindow:
    """One validation window.

    Attributes
    ----------
    item_index : the item (caller's list) it belongs to.
    start : window start in the item's spatial coordinates (may be negative: padded).
    size : window size; ``(1, Y, X)`` for slices of volumes in 2D mode.
    mask : bool array of shape ``size``, the held-out annotated pixels scored in this window.
    on_slice : the window is one slice of a volume, seen by a 2D model.
    """

    item_index: int
    start: tuple[int, ...]
    size: tuple[int, ...]
    mask: np.ndarray
    on_slice: bool = False

    @property
    def model_size(self) -> tuple[int, ...]:
        """Spatial size the model sees (drops the slice axis of 2D windows on volumes)."""
        return tuple(self.size[1:]) if self.on_slice else tuple(self.size)


@dataclass
class ValidationSplit:
    """Result of :func:`split_validation`.

    Attributes
    ----------
    train_items : the items with held-out pixels set to unknown in ``target`` (0 in ``instances``).
    windows : validation windows (empty when there is no validation).
    source_items : the items as given (their targets provide the validation labels).
    n_train_pixels, n_val_pixels : annotated pixels left for training / held out.
    message : why there is no validation although it was asked for, else None.
    """

    train_items: list[TrainingItem]
    windows: list[ValWindow]
    source_items: list[TrainingItem]
    n_train_pixels: int
    n_val_pixels: int
    message: str | None = None
    multilabel: bool = False
    #: items held out whole (:func:`split_by_item`); empty for block splits
    held_items: tuple[int, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.windows)

    def window_arrays(self, window: ValWindow) -> tuple[np.ndarray, np.ndarray]:
        """Image (C, *win) and target of a window; target pixels outside ``window.mask`` are unknown.

        Windows of slices (size ``(1, Y, X)`` on a volume) come back as 2D arrays.
        """
        item = self.source_items[window.item_index]
        image = crop_pad(item.image, window.start, window.size, 0.0)
        fill = MULTILABEL_IGNORE if self.multilabel else IGNORE_INDEX
        target = np.array(crop_pad(item.target, window.start, window.size, fill))
        if self.multilabel:
            target[:, ~window.mask] = MULTILABEL_IGNORE
        else:
            target[~window.mask] = IGNORE_INDEX
        if window.on_slice:
            image = image[:, 0]
            target = target[:, 0] if self.multilabel else target[0]
        return np.ascontiguousarray(image), target


def _block_any(mask: np.ndarray, unit: Sequence[int]) -> np.ndarray:
    """Any-reduction of a boolean mask over a grid of units (last units may be partial)."""
    grid = [-(-d // u) for d, u in zip(mask.shape, unit)]
    pad = [(0, g * u - d) for g, u, d in zip(grid, unit, mask.shape)]
    m = np.pad(mask, pad) if any(p[1] for p in pad) else mask
    shape = []
    for g, u in zip(grid, unit):
        shape += [g, u]
    return m.reshape(shape).any(axis=tuple(range(1, 2 * len(unit), 2)))


def _choose_val_blocks(block_known: np.ndarray, fraction: float, seed: int, item_index: int) -> np.ndarray:
    """Held-out blocks: annotated blocks whose fixed random number is below ``fraction``."""
    u = np.random.default_rng([seed, item_index]).random(block_known.shape)
    n_known = int(block_known.sum())
    if n_known < MIN_BLOCKS_PER_ITEM:
        return np.zeros_like(block_known)
    val = block_known & (u < fraction)
    if not val.any():  # few blocks and an unlucky draw: still hold out one
        flat = np.where(block_known, u, np.inf)
        val.flat[int(np.argmin(flat))] = True
    if int(val.sum()) == n_known:  # never hold out everything: keep the last one for training
        flat = np.where(val, u, -np.inf)
        val.flat[int(np.argmax(flat))] = False
    return val


def split_validation(
    items: Sequence[TrainingItem],
    val_fraction: float,
    patch_size: Sequence[int],
    mode: str = "2d",
    multilabel: bool = False,
    block: int = 32,
    seed: int = 0,
    max_windows: int = 64,
    min_val_pixels: int = 64,
) -> ValidationSplit:
    """Split annotated pixels into training and validation (see module docstring).

    Parameters
    ----------
    items : checked training items (unlabelled items are passed through).
    val_fraction : expected share of annotated blocks held out; 0 disables validation.
    patch_size : training patch size (window size of validation passes).
    mode : ``"2d"`` (windows are 2D; on volumes one slice each) or ``"3d"``.
    multilabel : targets are (K, ...) uint8 with 255 = unknown.
    block : block edge in pixels (reduced to the patch size when larger).
    seed : seed of the block pattern.
    max_windows : most validation windows kept.
    min_val_pixels : fewer held-out pixels than this disables validation (with a message).

    Returns
    -------
    ValidationSplit
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    items = list(items)
    total_known = sum(int(known_mask(it.target, multilabel).sum()) for it in items if it.target is not None)
    no_val = ValidationSplit(items, [], items, total_known, 0, None, multilabel)
    if val_fraction == 0.0:
        return no_val
    patch = tuple(int(p) for p in patch_size)
    candidates: list[tuple[ValWindow, np.ndarray]] = []  # (window, mask of units it covers)
    for i, item in enumerate(items):
        if item.target is None:
            continue
        spatial = item.target.shape[1:] if multilabel else item.target.shape
        known = known_mask(item.target, multilabel)
        slices = mode == "2d" and len(spatial) == 3
        win = (1, *patch) if slices else patch
        b_yx = max(1, min(block, *patch[-2:]))
        b_z = block if slices else max(1, min(block, patch[0])) if len(spatial) == 3 else None
        block_shape = (b_yx, b_yx) if len(spatial) == 2 else (b_z, b_yx, b_yx)
        val_blocks = _choose_val_blocks(_block_any(known, block_shape), val_fraction, seed, i)
        if not val_blocks.any():
            continue
        unit = (1, b_yx, b_yx) if slices else block_shape
        unit_known = _block_any(known, unit)
        # val-ness of each unit is that of its block (units are blocks, or one slice of a block)
        unit_val = val_blocks
        if slices:
            unit_val = np.repeat(val_blocks, b_z, axis=0)[: spatial[0]]
        unit_val = unit_val & unit_known
        covered = np.zeros_like(unit_val)
        for u_idx in np.argwhere(unit_val):
            if covered[tuple(u_idx)]:
                continue
            start = []
            for k, u, w, d in zip(u_idx, unit, win, spatial):
                centre = k * u + min(u, d - k * u) // 2
                if d >= w:
                    start.append(int(min(max(centre - w // 2, 0), d - w)))
                else:
                    start.append(int((d - w) // 2))
            inside = []
            for axis, (u, w, d, s) in enumerate(zip(unit, win, spatial, start)):
                k = np.arange(unit_val.shape[axis])
                lo, hi = k * u, np.minimum((k + 1) * u, d)
                inside.append((lo >= s) & (hi <= s + w))
            sub = np.ix_(*inside)
            take = np.zeros_like(unit_val)
            take[sub] = unit_val[sub] & ~covered[sub]
            covered |= take
            # pixel mask of the window: annotated pixels (inside the image) whose unit it took
            idx = [np.clip(s + np.arange(w), 0, d - 1) // u for s, w, u, d in zip(start, win, unit, spatial)]
            mask = take[np.ix_(*idx)] & crop_pad(known, start, win, False)
            if mask.any():
                candidates.append((ValWindow(i, tuple(start), tuple(win), mask, slices), take))
    if len(candidates) > max_windows:
        keep = np.sort(np.random.default_rng([seed, 7919]).choice(len(candidates), max_windows, replace=False))
        candidates = [candidates[k] for k in keep]
    windows = [w for w, _ in candidates]
    n_val = int(sum(int(w.mask.sum()) for w in windows))
    if n_val < min_val_pixels:
        no_val.message = (
            f"too few annotated pixels to hold out for validation ({total_known} annotated, "
            f"{n_val} would be held out); training on all of them without validation "
            "(the last model is kept as the best)"
        )
        return no_val
    train_items = []
    for i, item in enumerate(items):
        own = [w for w in windows if w.item_index == i]
        if not own:
            train_items.append(item)
            continue
        spatial = item.image.shape[1:]
        held = np.zeros(spatial, dtype=bool)
        for w in own:
            dst, src = [], []
            for s, z, d in zip(w.start, w.size, spatial):
                lo, hi = max(s, 0), min(s + z, d)
                dst.append(slice(lo, hi))
                src.append(slice(lo - s, hi - s))
            held[tuple(dst)] |= w.mask[tuple(src)]
        target = item.target.copy()
        if multilabel:
            target[:, held] = MULTILABEL_IGNORE
        else:
            target[held] = IGNORE_INDEX
        instances = item.instances
        if instances is not None:
            instances = instances.copy()
            instances[held] = 0
        train_items.append(replace(item, target=target, instances=instances))
    return ValidationSplit(train_items, windows, items, total_known - n_val, n_val, None, multilabel)


def _painted(items: Sequence[TrainingItem], multilabel: bool) -> list[int]:
    """Indices of items with at least one annotated pixel."""
    return [i for i, it in enumerate(items) if it.target is not None and known_mask(it.target, multilabel).any()]


def count_painted(items: Sequence[TrainingItem], multilabel: bool = False) -> int:
    """Number of items with at least one annotated pixel."""
    return len(_painted(items, multilabel))


def split_by_item(
    items: Sequence[TrainingItem],
    val_fraction: float,
    patch_size: Sequence[int],
    mode: str = "2d",
    multilabel: bool = False,
    seed: int = 0,
    max_windows: int = 64,
) -> ValidationSplit:
    """Hold out whole annotated items (images or volumes) instead of blocks inside each item.

    Held-out blocks sit next to training strokes of the same image, which share its staining,
    illumination and objects; a score on them says little about other images, where a pixel
    classifier that memorises each image's look falls behind. Holding out whole images measures
    what Predict on a new image will give.

    ``max(1, round(val_fraction * n))`` of the ``n`` annotated items are held out, those with the
    lowest fixed random numbers (seeded by item index, so adding strokes does not reshuffle them);
    at least one annotated item always stays for training. Every annotated pixel of a held-out item
    leaves training, even when the window cap keeps only part of them for scoring.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    items = list(items)
    painted = _painted(items, multilabel)
    total_known = sum(int(known_mask(items[i].target, multilabel).sum()) for i in painted)
    if len(painted) < 2:
        return ValidationSplit(items, [], items, total_known, 0,
                               "fewer than two annotated images: none can be held out whole", multilabel)
    n_held = min(max(1, round(val_fraction * len(painted))), len(painted) - 1)
    rank = sorted(painted, key=lambda i: float(np.random.default_rng([seed, i, 31]).random()))
    held = tuple(sorted(rank[:n_held]))
    patch = tuple(int(p) for p in patch_size)
    windows: list[ValWindow] = []
    for i in held:
        known = known_mask(items[i].target, multilabel)
        windows += _tile_windows(i, known, patch, mode == "2d" and known.ndim == 3)
    if len(windows) > max_windows:
        keep = np.sort(np.random.default_rng([seed, 7919]).choice(len(windows), max_windows, replace=False))
        windows = [windows[k] for k in keep]
    n_val = int(sum(int(w.mask.sum()) for w in windows))
    n_out = sum(int(known_mask(items[i].target, multilabel).sum()) for i in held)
    train_items = []
    for i, item in enumerate(items):
        if i not in held:
            train_items.append(item)
            continue
        target = np.full_like(item.target, MULTILABEL_IGNORE if multilabel else IGNORE_INDEX)
        instances = None if item.instances is None else np.zeros_like(item.instances)
        train_items.append(replace(item, target=target, instances=instances))
    return ValidationSplit(train_items, windows, items, total_known - n_out, n_val, None, multilabel, held)


def _tile_windows(item_index: int, known: np.ndarray, patch: tuple[int, ...], slices: bool) -> list[ValWindow]:
    """Windows of the patch size over the bounding box of ``known``, each annotated pixel scored in exactly
    one window; on volumes in 2D mode, one slice per window.

    Windows stay inside the image where it is at least a window wide (the last one per axis is moved
    back, overlapping its neighbour, whose pixels it does not score again): padding would change the
    predictions near the border.
    """
    win = (1, *patch) if slices else patch
    spatial = known.shape
    coords = np.nonzero(known)
    lo = [int(c.min()) for c in coords]
    hi = [int(c.max()) + 1 for c in coords]
    axes = []
    for a, b, w, d in zip(lo, hi, win, spatial):
        starts = [min(s, d - w) if d >= w else (d - w) // 2 for s in range(a, b, w)]
        axes.append(sorted(set(starts)))
    covered = np.zeros_like(known, dtype=bool)
    out = []
    for corner in np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(win)):
        start = tuple(int(s) for s in corner)
        mask = crop_pad(known, start, win, False) & ~crop_pad(covered, start, win, True)
        if not mask.any():
            continue
        out.append(ValWindow(item_index, start, tuple(win), np.array(mask, dtype=bool), slices))
        inner = tuple(slice(max(s, 0), min(s + w, d)) for s, w, d in zip(start, win, spatial))
        covered[inner] = True
    return out
