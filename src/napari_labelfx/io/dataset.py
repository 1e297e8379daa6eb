"""Dataset folders: images, full masks and their task, read lazily (``labelfx eval``, ``labelfx train --dataset``,
SISSI's clean source, benchmarks).

Layout (see ``docs/evaluation.md``)::

    <set>/images/<stem>.png|.tif|.tiff|.jpg   2D grey, 2D RGB(A), or a 3D ZYX volume (.tif)
    <set>/masks/<stem>.tif|.tiff|.png         the annotation, same stem
    <set>/meta.json                           {"task": "instance|semantic|multilabel", "classes": [...]}
    <set>/labels.csv                          optional image-level labels: first column the stem

Mask encodings by ``task``: ``instance`` uint instance ids (0 = background); ``semantic`` class index
per pixel (0 = background, ``classes[0]`` names it); ``multilabel`` ``(K, *spatial)`` 0/1 channels, one
per entry of ``classes`` (no background entry), which may overlap.

Listing is lazy: opening a folder reads ``meta.json``, ``labels.csv`` and the file names only; pixels
are read by :meth:`EvalDataset.load`.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TASKS = ("instance", "semantic", "multilabel")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
MASK_SUFFIXES = (".tif", ".tiff", ".png")


class DatasetError(ValueError):
    """A dataset folder is malformed; the message names the file and the problem."""


@dataclass
class Sample:
    """One image of a dataset with its mask, as arrays.

    Attributes
    ----------
    stem : file stem shared by image and mask.
    image : raw pixels, channels first ``(C, *spatial)`` in the file's dtype.
    mask : the mask as encoded by the task (instance ids, class indices, or ``(K, *spatial)``).
    raw : the image exactly as stored (e.g. ``(Y, X, 3)`` for RGB), for channel-last tools.
    labels : this image's row of ``labels.csv`` (column -> value), empty when none.
    """

    stem: str
    image: np.ndarray
    mask: np.ndarray
    raw: np.ndarray
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape[1:])


def read_array(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG/JPEG (Pillow) or TIFF (tifffile) file into a numpy array.

    Palette images are expanded to RGB; an alpha channel is dropped (it carries no signal here).
    """
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as im:
                if im.mode == "P":
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                arr = np.asarray(im)
                if im.mode in ("RGBA", "LA"):
                    arr = arr[..., :-1]
                    if arr.shape[-1] == 1:
                        arr = arr[..., 0]
                if arr.dtype == bool:
                    arr = arr.astype(np.uint8)
    except Exception as exc:  # any decoder error becomes a clear message about this file
        raise DatasetError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    return np.asarray(arr)


def _find_by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file() or p.suffix.lower() not in suffixes:
            continue
        stem = p.name[: -len(p.suffix)]
        if stem in found:
            raise DatasetError(f"{folder}: two files share the stem {stem!r} ({found[stem].name}, {p.name})")
        found[stem] = p
    return found


def _read_labels_csv(path: Path) -> dict[str, dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read image-level labels ({exc})") from exc
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if not rows:
        return {}
    header = [h.strip() for h in rows[0]]
    if len(header) < 2:
        raise DatasetError(f"{path}: needs a header with the image stem and at least one label column")
    out: dict[str, dict[str, str]] = {}
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DatasetError(f"{path}: line {i} has {len(row)} fields, the header has {len(header)}")
        stem = Path(row[0].strip()).stem if Path(row[0].strip()).suffix.lower() in IMAGE_SUFFIXES else row[0].strip()
        out[stem] = {h: v.strip() for h, v in zip(header[1:], row[1:])}
    return out


@dataclass
class EvalDataset:
    """A dataset folder, listed lazily (open with :func:`load_dataset`).

    Attributes
    ----------
    root : the folder.
    task : ``"instance"``, ``"semantic"`` or ``"multilabel"``.
    classes : class names from meta.json.
    meta : the whole meta.json.
    stems : image stems, sorted.
    image_labels : ``labels.csv`` rows by stem (empty without the file).
    """

    root: Path
    task: str
    classes: list[str]
    meta: dict
    stems: list[str]
    image_labels: dict[str, dict[str, str]]
    _images: dict[str, Path] = field(repr=False, default_factory=dict)
    _masks: dict[str, Path] = field(repr=False, default_factory=dict)

    def __len__(self) -> int:
        return len(self.stems)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel"

    @property
    def class_names(self) -> list[str]:
        """Names of the network's output classes: background first for instance and semantic sets.

        Instance sets are trained semantically: background vs. the (single) object class.
        """
        if self.task == "multilabel":
            return list(self.classes)
        if self.task == "instance":
            return list(self.classes[:2]) if len(self.classes) >= 2 else ["background", "object"]
        return list(self.classes)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def image_path(self, stem: str) -> Path:
        return self._images[self._check_stem(stem)]

    def mask_path(self, stem: str) -> Path:
        return self._masks[self._check_stem(stem)]

    def _check_stem(self, stem: str) -> str:
        if stem not in self._images:
            raise DatasetError(f"{self.root}: no image with stem {stem!r}")
        return stem

    def load(self, stem: str) -> Sample:
        """Read one image and its mask, check them, and return channels-first pixels.

        Raises
        ------
        DatasetError
            when the mask's shape does not fit the image, or its values do not fit the task.
        """
        raw = read_array(self.image_path(stem))
        mask = read_array(self.mask_path(stem))
        mpath = self.mask_path(stem)
        if self.task == "multilabel":
            if mask.ndim < 3 or mask.shape[0] != len(self.classes):
                raise DatasetError(
                    f"{mpath}: a multilabel mask must be ({len(self.classes)}, *spatial) for classes "
                    f"{self.classes}, got shape {mask.shape}"
                )
            if mask.size and mask.max() > 1:
                raise DatasetError(f"{mpath}: multilabel masks hold 0/1 per channel, found {int(mask.max())}")
            mask = mask.astype(np.uint8)
            spatial = mask.shape[1:]
        else:
            if mask.ndim not in (2, 3):
                raise DatasetError(f"{mpath}: a {self.task} mask must be 2D or 3D, got shape {mask.shape}")
            if not np.issubdtype(mask.dtype, np.integer) and not np.issubdtype(mask.dtype, np.bool_):
                raise DatasetError(f"{mpath}: {self.task} masks must hold integers, got {mask.dtype}")
            if mask.size and mask.min() < 0:
                raise DatasetError(f"{mpath}: mask values must be >= 0")
            if self.task == "semantic" and mask.size and mask.max() >= len(self.classes):
                raise DatasetError(
                    f"{mpath}: class index {int(mask.max())} but meta.json lists {len(self.classes)} classes"
                )
            spatial = mask.shape
        image = _channels_first(raw, spatial, self.image_path(stem), mpath)
        return Sample(stem, image, mask, raw, dict(self.image_labels.get(stem, {})))

    def __iter__(self):
        return (self.load(s) for s in self.stems)


def _channels_first(raw: np.ndarray, spatial: tuple[int, ...], ipath: Path, mpath: Path) -> np.ndarray:
    """Place channels first, using the mask's spatial shape to tell RGB (Y, X, 3) from ZYX volumes."""
    spatial = tuple(spatial)
    if raw.shape == spatial:
        return raw[None]
    if raw.ndim == len(spatial) + 1:
        if raw.shape[:-1] == spatial and raw.shape[-1] <= 4:
            return np.moveaxis(raw, -1, 0)
        if raw.shape[1:] == spatial:
            return raw
    raise DatasetError(f"{ipath}: image shape {raw.shape} does not match its mask {mpath.name} {spatial}")


def load_dataset(root: str | os.PathLike) -> EvalDataset:
    """Open a dataset folder (lazy: no pixel is read).

    Raises
    ------
    DatasetError
        for a missing folder or meta.json, an unknown task, missing classes, an image without mask,
        or an unreadable labels.csv.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        raise DatasetError(f"{meta_path}: missing (needs at least task and classes)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{meta_path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise DatasetError(f"{meta_path}: must hold a JSON object")
    task = meta.get("task")
    if task not in TASKS:
        raise DatasetError(f"{meta_path}: unknown task {task!r}; expected one of {', '.join(TASKS)}")
    classes = meta.get("classes")
    if classes is None and task == "instance":
        classes = ["background", "object"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise DatasetError(f"{meta_path}: 'classes' must be a list of names")
    if task == "semantic" and len(classes) < 2:
        raise DatasetError(f"{meta_path}: a semantic set needs background and at least one class")
    if task == "multilabel" and len(classes) < 1:
        raise DatasetError(f"{meta_path}: a multilabel set needs at least one class")
    for sub in ("images", "masks"):
        if not (root / sub).is_dir():
            raise DatasetError(f"{root / sub}: folder missing")
    images = _find_by_stem(root / "images", IMAGE_SUFFIXES)
    masks = _find_by_stem(root / "masks", MASK_SUFFIXES)
    if not images:
        raise DatasetError(f"{root / 'images'}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    missing = [s for s in images if s not in masks]
    if missing:
        raise DatasetError(
            f"{root / 'masks'}: no mask for image(s) {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
        )
    labels_name = meta.get("image_labels", "labels.csv")
    labels_path = root / str(labels_name)
    image_labels = _read_labels_csv(labels_path) if labels_path.is_file() else {}
    return EvalDataset(
        root=root,
        task=task,
        classes=list(classes),
        meta=meta,
        stems=sorted(images),
        image_labels=image_labels,
        _images=images,
        _masks={s: masks[s] for s in images},
    )


def rescale_sample(sample: Sample, scale: float) -> Sample:
    """Return ``sample`` resampled by ``scale`` along every spatial axis (1.0 returns it unchanged).

    The image is interpolated linearly with anti-aliasing (dtype kept); masks use nearest neighbour so
    class indices and instance ids stay valid. Used to train and predict at a coarser resolution, e.g.
    a whole 512x512 chest X-ray at 128x128, while scores are still taken at the original size.
    """
    if scale == 1.0:
        return sample
    if not 0.0 < scale <= 4.0:
        raise DatasetError(f"scale must be in (0, 4], got {scale}")
    from skimage.transform import resize

    spatial = sample.spatial_shape
    new = tuple(max(int(round(n * scale)), 1) for n in spatial)

    def _img(arr: np.ndarray, lead: int) -> np.ndarray:
        # ``lead`` axes before the spatial ones (channels first) or after them (channels last: -1)
        shape = (*arr.shape[:lead], *new) if lead >= 0 else (*new, *arr.shape[len(spatial):])
        out = resize(arr.astype(np.float32), shape, order=1, anti_aliasing=scale < 1.0, preserve_range=True)
        if np.issubdtype(arr.dtype, np.integer):
            info = np.iinfo(arr.dtype)
            out = np.clip(np.rint(out), info.min, info.max)
        return out.astype(arr.dtype)

    def _mask(arr: np.ndarray, lead: int) -> np.ndarray:
        shape = (*arr.shape[:lead], *new)
        return resize(arr, shape, order=0, anti_aliasing=False, preserve_range=True).astype(arr.dtype)

    image = _img(sample.image, 1)
    mask = _mask(sample.mask, sample.mask.ndim - len(spatial))
    raw_lead = sample.raw.ndim - len(spatial)
    if sample.raw.shape[:len(spatial)] == spatial:  # channels last (or no channel axis)
        raw = _img(sample.raw, -1) if raw_lead else _img(sample.raw, 0)
    else:
        raw = _img(sample.raw, raw_lead)
    return Sample(sample.stem, image, mask, raw, dict(sample.labels))
