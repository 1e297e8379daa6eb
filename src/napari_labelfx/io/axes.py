"""Axis names: normalisation to "TZCYX" (+ "S" for RGB samples), guessing, canonical order, units."""
from __future__ import annotations

from collections.abc import Sequence

#: Canonical order of the axes the io layer hands out; "S" (RGB/RGBA samples) is always last.
CANONICAL = "TZCYXS"
#: Axes that are not part of the physical grid of one layer (channels and colour samples).
NON_GRID = "CS"

# Length units to micrometres; scale values are converted to µm when the unit is one of these.
_UNIT_TO_UM = {
    "m": 1e6, "meter": 1e6, "metre": 1e6,
    "cm": 1e4, "centimeter": 1e4, "centimetre": 1e4,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3,
    "um": 1.0, "µm": 1.0, "μm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
    "micrometre": 1.0, "\\u00b5m": 1.0, "micrometers": 1.0,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "a": 1e-4, "angstrom": 1e-4, "ångström": 1e-4,
}


def to_micrometres(value: float, unit: str | None) -> tuple[float, str | None]:
    """Convert a length to µm when its unit is known; otherwise return it with its unit unchanged."""
    if unit is None:
        return float(value), None
    factor = _UNIT_TO_UM.get(unit.strip().lower().replace("microns", "micron"))
    if factor is None:
        return float(value), unit
    return float(value) * factor, "um"


def name_unknown(sizes: Sequence[int], free: Sequence[str]) -> list[str]:
    """Names for leading dimensions of unknown meaning, chosen from the ``free`` axis letters.

    Slots are taken in the priority Z, then C, then T, and placed in canonical order; with two
    unknowns where only the first is small (<= 16), the small one is the channel axis.

    Raises
    ------
    ValueError : more unknown dimensions than free slots.
    """
    n = len(sizes)
    pool = [a for a in "ZCT" if a in free]
    if n > len(pool):
        raise ValueError(f"cannot name {n} dimensions of unknown meaning with sizes {tuple(sizes)}")
    chosen = pool[:n]
    names = [a for a in CANONICAL if a in chosen]
    if n == 2 and names == ["Z", "C"] and sizes[0] <= 16 < sizes[1]:
        names = ["C", "Z"]  # (3, 60, Y, X): three channels of a 60-slice volume, not the reverse
    return names


def guess_axes(shape: Sequence[int], rgb_ok: bool = True) -> str:
    """Axes for an array that comes without axis metadata.

    The last two dimensions are Y, X; a last dimension of 3 or 4 after two larger ones is RGB(A)
    samples when ``rgb_ok``; leading dimensions are named by :func:`name_unknown`.

    Raises
    ------
    ValueError : a 1D array or more than five dimensions.
    """
    ndim = len(shape)
    if ndim < 2:
        raise ValueError(f"an image needs at least 2 dimensions, got shape {tuple(shape)}")
    known = "YX"
    if rgb_ok and 3 <= ndim <= 5 and shape[-1] in (3, 4) and min(shape[-3:-1]) > 4:
        known = "YXS"
    lead = list(shape[: ndim - len(known)])
    return "".join(name_unknown(lead, "ZCT")) + known


def canonical_permutation(axes: str) -> tuple[int, ...]:
    """Permutation that reorders data with ``axes`` into canonical "TZCYXS" order."""
    if len(set(axes)) != len(axes) or any(a not in CANONICAL for a in axes):
        raise ValueError(f"axes {axes!r} must be distinct letters from {CANONICAL!r}")
    return tuple(sorted(range(len(axes)), key=lambda i: CANONICAL.index(axes[i])))


def grid_axes(axes: str) -> str:
    """Axes that carry a scale (everything but channels and RGB samples)."""
    return "".join(a for a in axes if a not in NON_GRID)
