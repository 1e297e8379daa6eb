"""Skin-tone estimation for dermoscopy images: ITA and Fitzpatrick type (Bevan & Atapour-Abarghouei).

Pipeline of :func:`estimate_skin_tone`:

1. Hair removal (optional, on by default): greyscale morphological black-hat with a 17x17 cross
   element, threshold 10, then OpenCV Telea inpainting with radius 1 over the hair mask.
2. Eight 20x20 patches along the border (the lesion is usually central, healthy skin at the edges);
   positions are defined for a 256x256 image and scaled to the image size (:func:`border_patch_boxes`).
3. ITA (individual typology angle) of each patch from its mean CIELAB L and b:
   ``ITA = arctan((L - 50) / b) * 180 / pi`` (arctan, not atan2).
4. The patch with the largest ITA (the lightest skin) is the image's ITA; its Fitzpatrick type is
   I if ITA > 55, II in (41, 55], III in (28, 41], IV in (19, 28], V in (10, 19], VI if <= 10.

CIELAB is D65 from sRGB (see :mod:`napari_labelfx.tools.stain.lab`). The method is known to
over-assign type VI (dark vignetting, shadows); the reported agreement within +-1 type is about 61 %.
"""
from __future__ import annotations

import csv
import io as _io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .stain.lab import rgb_to_lab

#: Upper ITA bounds of types II..VI: ITA > 55 is type I, (41, 55] type II, ..., <= 10 type VI.
FITZPATRICK_ITA_THRESHOLDS: tuple[float, ...] = (55.0, 41.0, 28.0, 19.0, 10.0)
#: Roman numerals of types 1..6.
FITZPATRICK_ROMAN: tuple[str, ...] = ("I", "II", "III", "IV", "V", "VI")
#: Image side the patch layout is defined at.
PATCH_BASE_SIZE = 256
#: Patch side at the base size.
PATCH_SIZE = 20
#: Distance of the four corner patches from the image border at the base size (an assumption: the
#: source says "inset corners"; 32 px keeps them off the dark vignette of most dermoscopes).
CORNER_INSET = 32
#: File types :func:`estimate_folder` reads.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class SkinToneInputError(ValueError):
    """An image given to the skin-tone tools is unusable; the message names it and the problem."""


@dataclass
class SkinToneResult:
    """Skin tone of one image.

    Attributes
    ----------
    ita : ITA of the chosen (lightest) patch, degrees.
    fitzpatrick : Fitzpatrick type 1..6 (I..VI).
    patch_boxes : the eight patches as ``(y0, x0, y1, x1)`` (half-open), in image pixels.
    patch_itas : ITA of each patch, degrees.
    chosen_index : index of the patch that gave ``ita``.
    """

    ita: float
    fitzpatrick: int
    patch_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    patch_itas: list[float] = field(default_factory=list)
    chosen_index: int = 0

    @property
    def fitzpatrick_roman(self) -> str:
        """Type as a Roman numeral (``"I"`` .. ``"VI"``)."""
        return FITZPATRICK_ROMAN[self.fitzpatrick - 1]


def ita(light: Any, b: Any) -> Any:
    """Individual typology angle ``arctan((L - 50) / b) * 180 / pi`` in degrees.

    Parameters
    ----------
    light : CIELAB L (0-100), scalar or array.
    b : CIELAB b, scalar or array of the same shape.

    Returns
    -------
    float or float64 array. ``b = 0`` gives +90 for L > 50, -90 for L < 50 and 0 for L = 50
    (the limit of the arctan), instead of a division error.
    """
    light = np.asarray(light, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = light - 50.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(b == 0, np.sign(num) * np.inf, num / np.where(b == 0, 1.0, b))
    ratio = np.where((b == 0) & (num == 0), 0.0, ratio)
    out = np.degrees(np.arctan(ratio))
    return float(out) if out.ndim == 0 else out


def fitzpatrick_from_ita(value: Any, thresholds: Sequence[float] = FITZPATRICK_ITA_THRESHOLDS) -> Any:
    """Fitzpatrick type (1..6) of an ITA in degrees: I > 55 >= II > 41 >= III > 28 >= IV > 19 >= V > 10 >= VI.

    Parameters
    ----------
    value : ITA, scalar or array.
    thresholds : five decreasing bounds; a value equal to a bound gets the darker type.

    Returns
    -------
    int or int64 array.
    """
    t = np.asarray(thresholds, dtype=np.float64)
    if t.shape != (5,) or np.any(np.diff(t) >= 0):
        raise ValueError(f"thresholds must be five strictly decreasing numbers, got {thresholds!r}")
    v = np.asarray(value, dtype=np.float64)
    if np.any(np.isnan(v)):
        raise ValueError("ITA is NaN; cannot assign a Fitzpatrick type")
    types = 1 + (v[..., None] <= t).sum(axis=-1)
    return int(types) if types.ndim == 0 else types.astype(np.int64)


def _check_rgb(rgb: Any, name: str) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise SkinToneInputError(f"{name}: expected an RGB image (H, W, 3), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise SkinToneInputError(
            f"{name}: expected 8-bit RGB (uint8), got dtype {arr.dtype}; "
            "for a float image in [0, 1] use (img * 255).round().astype('uint8')"
        )
    if min(arr.shape[:2]) < 8:
        raise SkinToneInputError(f"{name}: image too small for border patches ({arr.shape[0]}x{arr.shape[1]})")
    return np.ascontiguousarray(arr[..., :3])


def hair_mask(rgb: np.ndarray, kernel_size: int = 17, threshold: int = 10) -> np.ndarray:
    """Boolean mask of thin dark structures (hair): grey black-hat with a cross element > threshold.

    Parameters
    ----------
    rgb : uint8 RGB ``(H, W, 3)``.
    kernel_size : side of the cross-shaped structuring element (17).
    threshold : black-hat response (grey levels) above which a pixel is hair (10).
    """
    rgb = _check_rgb(rgb, "image")
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (int(kernel_size), int(kernel_size)))
    blackhat = cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, kernel)
    return blackhat > threshold


def remove_hair(
    rgb: np.ndarray,
    kernel_size: int = 17,
    threshold: int = 10,
    inpaint_radius: float = 1.0,
    name: str = "image",
) -> np.ndarray:
    """Remove hair by inpainting (Telea) the black-hat mask of :func:`hair_mask`.

    Parameters
    ----------
    rgb : uint8 RGB ``(H, W, 3)``.
    kernel_size, threshold : see :func:`hair_mask`.
    inpaint_radius : Telea inpainting radius in pixels (1).
    name : how the image is called in error messages.

    Returns
    -------
    uint8 RGB of the same shape (a copy).
    """
    rgb = _check_rgb(rgb, name)
    mask = hair_mask(rgb, kernel_size, threshold).astype(np.uint8) * 255
    if not mask.any():
        return rgb.copy()
    # Telea inpaints each channel independently, so RGB order needs no conversion
    return cv2.inpaint(rgb, mask, float(inpaint_radius), cv2.INPAINT_TELEA)


def border_patch_boxes(
    height: int,
    width: int,
    patch: int = PATCH_SIZE,
    corner_inset: int = CORNER_INSET,
    base: int = PATCH_BASE_SIZE,
) -> list[tuple[int, int, int, int]]:
    """The eight border patches ``(y0, x0, y1, x1)`` for an image of the given size.

    At the base size 256x256 with 20x20 patches the top-left corners are, in this order:
    top (0, 118), bottom (236, 118), left (118, 0), right (118, 236) - the mid-points of the four
    edges, touching the border - and the inset corners (32, 32), (32, 204), (204, 32), (204, 204).
    For other sizes every coordinate is scaled by ``height / 256`` (rows) and ``width / 256``
    (columns) and rounded, so patches keep their relative place and size (at least 1 pixel).
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    mid = (base - patch) / 2.0
    far = base - patch
    inner = base - corner_inset - patch
    corners = [
        (0, mid),
        (far, mid),
        (mid, 0),
        (mid, far),
        (corner_inset, corner_inset),
        (corner_inset, inner),
        (inner, corner_inset),
        (inner, inner),
    ]
    sy, sx = height / base, width / base
    boxes = []
    for y, x in corners:
        y0 = min(int(round(y * sy)), height - 1)
        x0 = min(int(round(x * sx)), width - 1)
        y1 = max(min(int(round((y + patch) * sy)), height), y0 + 1)
        x1 = max(min(int(round((x + patch) * sx)), width), x0 + 1)
        boxes.append((y0, x0, y1, x1))
    return boxes


def patch_itas(rgb: np.ndarray, boxes: Iterable[tuple[int, int, int, int]]) -> list[float]:
    """ITA of each box from the box's mean CIELAB L and b."""
    out = []
    for y0, x0, y1, x1 in boxes:
        lab = rgb_to_lab(rgb[y0:y1, x0:x1])
        out.append(ita(float(lab[..., 0].mean()), float(lab[..., 2].mean())))
    return out


def estimate_skin_tone(
    rgb: np.ndarray,
    hair_removal: bool = True,
    kernel_size: int = 17,
    threshold: int = 10,
    inpaint_radius: float = 1.0,
    patch: int = PATCH_SIZE,
    corner_inset: int = CORNER_INSET,
    thresholds: Sequence[float] = FITZPATRICK_ITA_THRESHOLDS,
    name: str = "image",
) -> SkinToneResult:
    """ITA and Fitzpatrick type of a dermoscopy image (lightest of eight border patches).

    Parameters
    ----------
    rgb : uint8 RGB ``(H, W, 3)`` (RGBA: alpha dropped).
    hair_removal : inpaint hair first (see :func:`remove_hair`).
    kernel_size, threshold, inpaint_radius : hair-removal settings.
    patch, corner_inset : patch layout at 256x256 (see :func:`border_patch_boxes`).
    thresholds : ITA bounds of the Fitzpatrick types.
    name : how the image is called in error messages.
    """
    img = _check_rgb(rgb, name)
    if hair_removal:
        img = remove_hair(img, kernel_size, threshold, inpaint_radius, name)
    boxes = border_patch_boxes(img.shape[0], img.shape[1], patch, corner_inset)
    values = patch_itas(img, boxes)
    chosen = int(np.argmax(values))
    best = float(values[chosen])
    return SkinToneResult(best, int(fitzpatrick_from_ita(best, thresholds)), boxes, values, chosen)


def _read_rgb(path: Path) -> np.ndarray:
    from ..io import read_image

    image = read_image(path)
    if image.multiscale or image.axes != "YXS":
        raise SkinToneInputError(f"{path}: expected a 2-D RGB image, got axes {image.axes!r}")
    return np.asarray(image.data)


def estimate_folder(
    folder: str | os.PathLike,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    on_error: str = "raise",
    **settings: Any,
) -> list[dict[str, Any]]:
    """Skin tone of every image in a folder, as rows for a CSV (sorted by file name).

    Parameters
    ----------
    folder : folder of RGB images (not recursive).
    extensions : file suffixes to read (case-insensitive).
    on_error : ``"raise"`` stops at the first unusable image; ``"record"`` writes its error in the
        row's ``error`` column and goes on.
    settings : passed to :func:`estimate_skin_tone`.

    Returns
    -------
    list of dicts with ``file, ita, fitzpatrick, fitzpatrick_roman, chosen_patch, ita_patch_0..7,
    error``.
    """
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}")
    root = Path(folder)
    if not root.is_dir():
        raise SkinToneInputError(f"{root}: not a folder")
    suffixes = {e.lower() for e in extensions}
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise SkinToneInputError(f"{root}: no image files ({', '.join(sorted(suffixes))})")
    rows: list[dict[str, Any]] = []
    for path in files:
        row: dict[str, Any] = {"file": path.name}
        try:
            res = estimate_skin_tone(_read_rgb(path), name=str(path), **settings)
        except (ValueError, OSError) as exc:  # LabelfxIOError and SkinToneInputError are ValueErrors
            if on_error == "raise":
                raise
            row.update(ita="", fitzpatrick="", fitzpatrick_roman="", chosen_patch="", error=str(exc))
            row.update({f"ita_patch_{i}": "" for i in range(8)})
        else:
            row.update(
                ita=round(res.ita, 4),
                fitzpatrick=res.fitzpatrick,
                fitzpatrick_roman=res.fitzpatrick_roman,
                chosen_patch=res.chosen_index,
                error="",
            )
            row.update({f"ita_patch_{i}": round(v, 4) for i, v in enumerate(res.patch_itas)})
        rows.append(row)
    return rows


CSV_COLUMNS = ["file", "ita", "fitzpatrick", "fitzpatrick_roman", "chosen_patch"] + [
    f"ita_patch_{i}" for i in range(8)
] + ["error"]


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write :func:`estimate_folder` rows to a CSV file atomically; returns the path."""
    from ..io import atomic_path

    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    return path


def fitzpatrick_counts(types: Iterable[Any]) -> np.ndarray:
    """Number of images of each Fitzpatrick type, int64 (6,) for I..VI; blanks are skipped."""
    counts = np.zeros(6, dtype=np.int64)
    for t in types:
        if t == "" or t is None:
            continue
        k = int(t)
        if not 1 <= k <= 6:
            raise ValueError(f"Fitzpatrick type must be 1..6, got {t!r}")
        counts[k - 1] += 1
    return counts


def draw_fitzpatrick_histogram(ax: Any, types: Iterable[Any], title: str = "Fitzpatrick types") -> np.ndarray:
    """Draw the bar chart of Fitzpatrick types on a matplotlib Axes (file or panel); returns the counts."""
    from matplotlib.ticker import MaxNLocator

    counts = fitzpatrick_counts(types)
    colours = ["#f6d7c3", "#e8b896", "#d09a6e", "#a86f45", "#7a4a2a", "#4a2c1a"]
    ax.bar(FITZPATRICK_ROMAN, counts, color=colours, edgecolor="black", linewidth=0.6)
    for i, c in enumerate(counts):
        ax.text(i, c, str(int(c)), ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("Fitzpatrick type (from ITA)")
    ax.set_ylabel("images")
    ax.set_title(f"{title} (n = {int(counts.sum())})")
    ax.set_ylim(0, max(1, int(counts.max())) * 1.15)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return counts


def plot_fitzpatrick_histogram(types: Iterable[Any], path: str | os.PathLike, title: str = "Fitzpatrick types") -> Path:
    """Bar chart of the Fitzpatrick types as a PNG (matplotlib, Agg backend, atomic write)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..io import atomic_path

    # a Figure with its own Agg canvas never touches pyplot's global state or a GUI backend
    fig = Figure(figsize=(5, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    draw_fitzpatrick_histogram(fig.add_subplot(1, 1, 1), types, title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
