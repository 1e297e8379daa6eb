"""The class table: class names, the label values painted for them, and their colours.

Convention (the single source of truth for the whole package):

* The table always starts with the background entry (name ``"background"``, label value 0).
* Foreground classes follow, with label values 1, 2, ... by default (any distinct positive integer
  is allowed, e.g. 255 for masks saved as 0/255).
* The **class index** of an entry is its position in the table: background = 0, then 1..K-1 in table
  order. Targets and network outputs use class indices, layers use label values.
* Scribble layers are painted with ``class index + 1`` (1 = background, 2 = first foreground class,
  ...), because 0 must stay "nothing painted"; :meth:`ClassTable.scribble_value` gives that value.
* ``multilabel=True`` means classes may overlap (a pixel can be lung and heart): targets become
  uint8 ``(K, ...)`` 0/1 maps instead of one class index per pixel.
"""
from __future__ import annotations

import json
import numbers
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._files import atomic_write_text
from .errors import ClassTableError

#: Colour of the background entry, seen where background is painted as a scribble (value 1): a
#: bright aqua that stands out on dark fluorescence, grey and pink H&E images alike (grey did not).
BACKGROUND_COLOR = "#00ffd0"

#: Default colours of foreground classes, in order; chosen to be distinct from each other and from
#: the grey background (a Kelly/Trubetskoy-like qualitative palette).
PALETTE: tuple[str, ...] = (
    "#e6194b", "#3cb44b", "#4363d8", "#ffe119", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
    "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#000075",
)

_FORMAT = "labelfx-class-table"
_VERSION = 1


def normalise_color(color: Any, *, context: str = "colour") -> str:
    """Return a colour as lower-case ``"#rrggbb"``.

    Accepts ``"#rgb"``, ``"#rrggbb"``, ``"#rrggbbaa"`` (alpha dropped: napari sets label opacity per
    layer) and RGB/RGBA sequences of floats in [0, 1] or integers in [0, 255].
    """
    if isinstance(color, str):
        s = color.strip().lower()
        if s.startswith("#"):
            s = s[1:]
        if len(s) == 3:
            s = "".join(ch * 2 for ch in s)
        if len(s) in (6, 8) and all(ch in "0123456789abcdef" for ch in s):
            return "#" + s[:6]
        raise ClassTableError(f"{context}: {color!r} is not a hex colour like '#ff8800'")
    try:
        vals = [float(v) for v in color]
    except (TypeError, ValueError):
        raise ClassTableError(f"{context}: {color!r} is not a colour") from None
    if len(vals) not in (3, 4):
        raise ClassTableError(f"{context}: {color!r} must have 3 (RGB) or 4 (RGBA) components")
    # integers are 0..255 components, floats are 0..1 fractions (napari and matplotlib style)
    if all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in color):
        if not all(0 <= v <= 255 for v in vals):
            raise ClassTableError(f"{context}: {color!r} has integer components outside [0, 255]")
        ints = [int(v) for v in vals[:3]]
    elif all(0.0 <= v <= 1.0 for v in vals):
        ints = [round(v * 255) for v in vals[:3]]
    else:
        raise ClassTableError(f"{context}: {color!r} has float components outside [0, 1]")
    return "#" + "".join(f"{v:02x}" for v in ints)


def color_to_rgba(color: str, alpha: float = 1.0) -> tuple[float, float, float, float]:
    """``"#rrggbb"`` -> ``(r, g, b, a)`` floats in [0, 1] (the form napari colormaps take)."""
    s = normalise_color(color)
    return (int(s[1:3], 16) / 255.0, int(s[3:5], 16) / 255.0, int(s[5:7], 16) / 255.0, float(alpha))


@dataclass(frozen=True)
class ClassEntry:
    """One class: its ``name``, the label ``value`` painted for it, and its ``color`` (``"#rrggbb"``)."""

    name: str
    value: int
    color: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ClassTableError(f"class name must be a non-empty string, got {self.name!r}")
        if self.name != self.name.strip():
            object.__setattr__(self, "name", self.name.strip())
        if isinstance(self.value, bool) or not isinstance(self.value, numbers.Integral):
            raise ClassTableError(f"class {self.name!r}: label value must be an integer, got {self.value!r}")
        value = int(self.value)
        if value < 0:
            raise ClassTableError(f"class {self.name!r}: label value must be >= 0, got {value}")
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "color", normalise_color(self.color, context=f"class {self.name!r}"))

    @property
    def rgba(self) -> tuple[float, float, float, float]:
        """Colour as an RGBA float tuple."""
        return color_to_rgba(self.color)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "color": self.color}


class ClassTable:
    """Ordered classes with the background entry first; edited in place by the Annotate panel.

    Parameters
    ----------
    classes : foreground classes, each a name (value and colour assigned automatically), a
        :class:`ClassEntry`, a ``(name, value)`` or ``(name, value, color)`` tuple, or a dict with
        those keys. An entry with value 0 replaces the default background entry.
    multilabel : classes may overlap; targets are per-class 0/1 maps.

    Examples
    --------
    >>> t = ClassTable(["nucleus", "cytoplasm"])
    >>> t.names, t.values, t.num_classes, t.scribble_value("nucleus")
    (('background', 'nucleus', 'cytoplasm'), (0, 1, 2), 3, 2)
    """

    def __init__(self, classes: Iterable[Any] = (), *, multilabel: bool = False) -> None:
        self._entries: list[ClassEntry] = [ClassEntry("background", 0, BACKGROUND_COLOR)]
        self.multilabel = bool(multilabel)
        bg_given = False
        for item in classes:
            if isinstance(item, ClassEntry):
                entry = item
            elif isinstance(item, str):
                entry = None
                self.add(item)
            elif isinstance(item, dict):
                entry = self._make_entry(item.get("name"), item.get("value"), item.get("color"))
            elif isinstance(item, (tuple, list)) and 1 <= len(item) <= 3:
                entry = self._make_entry(*item)
            else:
                raise ClassTableError(f"cannot read a class from {item!r}")
            if entry is None:
                continue
            if entry.value == 0:
                if bg_given:
                    raise ClassTableError(
                        f"class {entry.name!r}: label value 0 is already used by {self._entries[0].name!r}"
                    )
                self._check_unique(entry, skip=0)
                self._entries[0] = entry
                bg_given = True
            else:
                self._check_unique(entry)
                self._entries.append(entry)

    # ------------------------------------------------------------------ queries
    @property
    def entries(self) -> tuple[ClassEntry, ...]:
        """All entries, background first (class index = position)."""
        return tuple(self._entries)

    @property
    def background(self) -> ClassEntry:
        return self._entries[0]

    @property
    def foreground(self) -> tuple[ClassEntry, ...]:
        return tuple(self._entries[1:])

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self._entries)

    @property
    def values(self) -> tuple[int, ...]:
        return tuple(e.value for e in self._entries)

    @property
    def colors(self) -> tuple[str, ...]:
        return tuple(e.color for e in self._entries)

    @property
    def num_classes(self) -> int:
        """Number of classes including background (= network output channels)."""
        return len(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[ClassEntry]:
        return iter(tuple(self._entries))

    def __contains__(self, name: object) -> bool:
        return any(e.name == name for e in self._entries)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClassTable):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        body = ", ".join(f"{e.name}={e.value}" for e in self._entries)
        return f"ClassTable({body}{', multilabel' if self.multilabel else ''})"

    def entry(self, name: str) -> ClassEntry:
        """The entry called ``name``."""
        return self._entries[self.index_of(name)]

    def index_of(self, name: str) -> int:
        """Class index of ``name`` (background = 0)."""
        for i, e in enumerate(self._entries):
            if e.name == name:
                return i
        raise ClassTableError(f"no class named {name!r} in the class table (classes: {', '.join(self.names)})")

    def index_of_value(self, value: int) -> int:
        """Class index of the class painted with label ``value``."""
        for i, e in enumerate(self._entries):
            if e.value == int(value):
                return i
        raise ClassTableError(
            f"label value {int(value)} is not in the class table (values: {', '.join(map(str, self.values))})"
        )

    def value_of(self, name: str) -> int:
        """Label value painted for class ``name`` in strong/noisy/weak layers."""
        return self.entry(name).value

    def scribble_value(self, name: str) -> int:
        """Label value to paint class ``name`` in a scribble layer: class index + 1 (0 = unknown)."""
        return self.index_of(name) + 1

    def class_index_of_scribble(self, value: int) -> int:
        """Class index painted by scribble label ``value`` (value - 1); 0 is not a class."""
        v = int(value)
        if not 1 <= v <= self.num_classes:
            raise ClassTableError(
                f"scribble value {v} has no class: scribble values are 1..{self.num_classes} "
                f"(1 = {self.names[0]}, ..., {self.num_classes} = {self.names[-1]})"
            )
        return v - 1

    def label_colors(self, scribble: bool = False) -> dict[int, tuple[float, float, float, float]]:
        """``{label value: RGBA}`` for a napari Labels layer (scribble layers use index + 1).

        In a full mask, value 0 is background and stays transparent, so it is left out there.
        """
        if scribble:
            return {i + 1: e.rgba for i, e in enumerate(self._entries)}
        return {e.value: e.rgba for e in self._entries[1:]}

    # ------------------------------------------------------------------ edits
    def add(self, name: str, value: int | None = None, color: Any = None) -> ClassEntry:
        """Append a foreground class; ``value`` defaults to max value + 1, ``color`` to the palette."""
        entry = self._make_entry(name, value, color)
        if entry.value == 0:
            raise ClassTableError(f"class {entry.name!r}: label value 0 is reserved for background")
        self._check_unique(entry)
        self._entries.append(entry)
        return entry

    def remove(self, name: str) -> ClassEntry:
        """Remove the foreground class ``name`` (the background entry cannot be removed)."""
        i = self.index_of(name)
        if i == 0:
            raise ClassTableError("the background class cannot be removed")
        return self._entries.pop(i)

    def rename(self, old: str, new: str) -> ClassEntry:
        """Rename class ``old`` to ``new`` (also allowed for background)."""
        i = self.index_of(old)
        e = self._entries[i]
        entry = ClassEntry(new, e.value, e.color)
        self._check_unique(entry, skip=i)
        self._entries[i] = entry
        return entry

    def recolor(self, name: str, color: Any) -> ClassEntry:
        """Change the colour of class ``name``."""
        i = self.index_of(name)
        e = self._entries[i]
        self._entries[i] = ClassEntry(e.name, e.value, color)
        return self._entries[i]

    def copy(self) -> ClassTable:
        return ClassTable.from_dict(self.to_dict())

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form: ``{"format", "version", "multilabel", "classes": [...]}``."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "multilabel": self.multilabel,
            "classes": [e.to_dict() for e in self._entries],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "class table") -> ClassTable:
        """Rebuild a table from :meth:`to_dict` output; ``source`` names the origin in errors."""
        if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
            raise ClassTableError(f"{source}: expected a dict with a 'classes' list")
        if data.get("format", _FORMAT) != _FORMAT:
            raise ClassTableError(f"{source}: format {data.get('format')!r} is not {_FORMAT!r}")
        classes = data["classes"]
        for c in classes:
            if not isinstance(c, dict) or "name" not in c or "value" not in c:
                raise ClassTableError(f"{source}: each class needs 'name' and 'value', got {c!r}")
        if not any(c["value"] == 0 for c in classes):
            raise ClassTableError(f"{source}: no background entry (label value 0)")
        if classes[0]["value"] != 0:
            raise ClassTableError(f"{source}: the background entry (value 0) must come first")
        try:
            return cls(
                [(c["name"], c["value"], c.get("color")) for c in classes],
                multilabel=bool(data.get("multilabel", False)),
            )
        except ClassTableError as err:
            raise ClassTableError(f"{source}: {err}") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table as JSON, atomically."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> ClassTable:
        """Read a table written by :meth:`save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ClassTableError(f"{path}: class table file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ClassTableError(f"{path}: cannot read class table JSON ({err})") from None
        return cls.from_dict(data, source=str(path))

    # ------------------------------------------------------------------ helpers
    def _make_entry(self, name: Any, value: Any = None, color: Any = None) -> ClassEntry:
        if value is None:
            value = max(self.values) + 1
        if color is None:
            color = self._next_color()
        return ClassEntry(name, value, color)

    def _next_color(self) -> str:
        used = set(self.colors)
        for c in PALETTE:
            if c not in used:
                return c
        # every palette colour is taken: cycle so colours stay deterministic
        return PALETTE[(len(self._entries) - 1) % len(PALETTE)]

    def _check_unique(self, entry: ClassEntry, skip: int | None = None) -> None:
        for i, e in enumerate(self._entries):
            if i == skip:
                continue
            if e.name == entry.name:
                raise ClassTableError(f"duplicate class name {entry.name!r}")
            if e.value == entry.value:
                raise ClassTableError(
                    f"class {entry.name!r}: label value {entry.value} is already used by {e.name!r}"
                )


def default_class_table(names: Sequence[str] = ("foreground",), multilabel: bool = False) -> ClassTable:
    """A table with background plus ``names`` (values 1..n, palette colours)."""
    return ClassTable(list(names), multilabel=multilabel)
