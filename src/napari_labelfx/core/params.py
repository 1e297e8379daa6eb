"""Declared, typed parameters of training methods (and of the forest and the default path).

Each method lists its parameters once as :class:`Param` entries of a :class:`ParamSpec`: name, type,
default, range, choices, help text and whether the Train panel shows it unfolded. That one
declaration is what

* checks and converts the values a method receives (``ParamSpec.resolve``: one ``ParamError`` line
  naming the method, the parameter and what it accepts),
* builds the Train panel's form (``widgets/_params.py`` picks each editor from ``Param.type``),
* parses ``labelfx train/eval --param KEY=VALUE`` (values read as JSON, else as text, then resolved),
* writes the parameter tables of docs/methods.md (``scripts/method_params_doc.py``).

Types (``Param.type``):

``bool``, ``int``, ``float``, ``text`` (any string), ``choice`` (one of ``choices``),
``floats`` (numbers: a list, or a string of comma-separated numbers), ``words`` (names: a list or a
comma-separated string, each one of ``choices`` when given), ``count_or_fraction`` (an integer
count >= 1, or a fraction in (0, 1]: RPG's ``k``), ``any`` (unchecked; only for parameters inferred
from a bare ``defaults`` dict). An ``int`` or ``float`` with ``choices`` also takes those words (a
union such as ``"auto"`` or a number in (0, 1)).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

ParamType = Literal["bool", "int", "float", "text", "choice", "floats", "words", "count_or_fraction", "any"]
PARAM_TYPES: tuple[str, ...] = ("bool", "int", "float", "text", "choice", "floats", "words", "count_or_fraction",
                                "any")


class ParamError(ValueError):
    """A parameter is unknown or its value is outside what its declaration allows."""


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


@dataclass(frozen=True)
class Param:
    """One declared parameter.

    Attributes
    ----------
    name : the key in ``method_params`` (and ``--param``).
    type : see the module docstring.
    default : the value used when the parameter is not given.
    help : one line for the form's tooltip, ``--help`` texts and docs/methods.md.
    min, max : the allowed range of ``int``/``float``/``floats``/``count_or_fraction`` (None = open).
    min_open, max_open : the bound itself is excluded (``(0, 1)`` rather than ``[0, 1]``).
    choices : the words of a ``choice``/``words`` parameter; for ``int``/``float``, words accepted
        besides numbers.
    important : shown unfolded in the Train panel (the others sit under "More settings").
    """

    name: str
    type: ParamType
    default: Any
    help: str = ""
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    choices: tuple[str, ...] = ()
    important: bool = False

    def __post_init__(self) -> None:
        if self.type not in PARAM_TYPES:
            raise ValueError(f"parameter {self.name!r}: unknown type {self.type!r}; types are {PARAM_TYPES}")
        if self.type == "choice" and not self.choices:
            raise ValueError(f"parameter {self.name!r}: a choice needs choices")

    # -- what it accepts ------------------------------------------------------------------------------
    def _range(self) -> str:
        lo, hi = self.min, self.max
        if lo is not None and hi is not None:
            return f"in {'(' if self.min_open else '['}{_fmt(lo)}, {_fmt(hi)}{')' if self.max_open else ']'}"
        if lo is not None:
            return f"{'>' if self.min_open else '>='} {_fmt(lo)}"
        if hi is not None:
            return f"{'<' if self.max_open else '<='} {_fmt(hi)}"
        return ""

    def allowed(self) -> str:
        """What the parameter accepts, in words (error messages, docs, tooltips)."""
        rng = self._range()
        words = " or ".join(repr(c) for c in self.choices)
        if self.type == "bool":
            return "true or false"
        if self.type == "choice":
            return f"one of {list(self.choices)}"
        if self.type == "text":
            return "text"
        if self.type == "any":
            return "any value"
        if self.type == "count_or_fraction":
            top = "" if self.max is None else f" (at most {_fmt(self.max)})"
            return f"an integer count >= 1{top} or a fraction in (0, 1]"
        if self.type == "floats":
            return f"numbers{' ' + rng if rng else ''}, separated by commas"
        if self.type == "words":
            return f"names separated by commas{f' from {list(self.choices)}' if self.choices else ''}"
        what = ("an integer" if self.type == "int" else "a number") + (f" {rng}" if rng else "")
        return f"{words} or {what}" if words else what

    def _in_range(self, x: float) -> bool:
        if self.min is not None and (x < self.min or (self.min_open and x == self.min)):
            return False
        return not (self.max is not None and (x > self.max or (self.max_open and x == self.max)))

    # -- checking -------------------------------------------------------------------------------------
    def check(self, value: Any, owner: str = "") -> Any:
        """``value`` converted to this parameter's type (int, float, bool, str, tuple); ``ParamError`` if not allowed.

        Values arrive from JSON (config files, ``--param``), from Python callers and from the form; text
        is accepted where it is unambiguous (``"1,2,3"`` for ``floats``, ``"0.5"`` for a number).
        """
        def bad() -> ParamError:
            prefix = f"{owner}: " if owner else ""
            return ParamError(f"{prefix}{self.name} must be {self.allowed()}, got {value!r:.80}")

        t = self.type
        if t == "any":
            return value
        if t == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("true", "false"):
                return value.strip().lower() == "true"
            raise bad()
        if t == "text":
            if not isinstance(value, str):
                raise bad()
            return value
        if t == "choice":
            if not isinstance(value, str) or value not in self.choices:
                raise bad()
            return value
        if t in ("int", "float") and isinstance(value, str) and value in self.choices:
            return value
        if t == "floats":
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)):
                raise bad()
            try:
                nums = [_number(s) for s in items if not (isinstance(s, str) and not s.strip())]
            except ValueError:
                raise bad() from None
            if not nums or not all(math.isfinite(x) and self._in_range(x) for x in nums):
                raise bad()
            return [float(x) for x in nums]
        if t == "words":
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or not all(isinstance(s, str) for s in items):
                raise bad()
            names = [s.strip() for s in items if s.strip()]
            if not names or (self.choices and any(s not in self.choices for s in names)):
                raise bad()
            return names
        try:
            x = _number(value)
        except ValueError:
            raise bad() from None
        if not math.isfinite(x):
            raise bad()
        if t == "count_or_fraction":
            if 0 < x <= 1 and not (isinstance(value, int) or (isinstance(value, str) and "." not in value)):
                return float(x)  # a fraction of the pool
            if x < 1 or not float(x).is_integer() or (self.max is not None and x > self.max):
                raise bad()
            return int(x)
        if t == "int":
            if not float(x).is_integer() or not self._in_range(x):
                raise bad()
            return int(x)
        if not self._in_range(x):
            raise bad()
        return float(x)

    def format(self, value: Any) -> str:
        """``value`` as a person types it (form fields, docs tables)."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return _fmt(value)
        if isinstance(value, (list, tuple)):
            return ",".join(self.format(v) for v in value)
        return str(value)


def _number(value: Any) -> float:
    """A JSON number or numeric text as a float (bools are not numbers)."""
    if isinstance(value, bool):
        raise ValueError("a bool is not a number")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    raise ValueError(f"not a number: {value!r}")


@dataclass(frozen=True)
class ParamSpec:
    """The ordered parameters of one method; ``retired`` names are accepted and dropped (old configs)."""

    params: tuple[Param, ...] = ()
    retired: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"parameters declared twice: {dup}")

    def __iter__(self) -> Iterator[Param]:
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def __contains__(self, name: object) -> bool:
        return any(p.name == name for p in self.params)

    def __getitem__(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def defaults(self) -> dict[str, Any]:
        """Name -> default value (a fresh dict; lists copied)."""
        return {p.name: list(p.default) if isinstance(p.default, (list, tuple)) else p.default for p in self.params}

    def important(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params if p.important)

    # -- building specs from others ---------------------------------------------------------------------
    def extend(self, *params: Param) -> ParamSpec:
        """This spec with ``params`` added at the end (a subclass' own parameters)."""
        return ParamSpec(self.params + tuple(params), self.retired)

    def __add__(self, other: ParamSpec) -> ParamSpec:
        return ParamSpec(self.params + other.params, self.retired | other.retired)

    def with_changes(self, name: str, **changes: Any) -> ParamSpec:
        """This spec with one parameter's fields changed (e.g. another default)."""
        if name not in self:
            raise KeyError(name)
        return ParamSpec(tuple(replace(p, **changes) if p.name == name else p for p in self.params), self.retired)

    def without(self, *names: str) -> ParamSpec:
        return ParamSpec(tuple(p for p in self.params if p.name not in names), self.retired)

    def with_retired(self, *names: str) -> ParamSpec:
        """Names that old configs may still hold: accepted and ignored."""
        return ParamSpec(self.params, self.retired | frozenset(names))

    @classmethod
    def inferred(cls, defaults: Mapping[str, Any], important: Iterable[str] = ()) -> ParamSpec:
        """A spec guessed from a bare ``defaults`` dict (methods written before specs existed)."""
        imp = set(important)
        params = []
        for name, value in defaults.items():
            t: ParamType
            if isinstance(value, bool):
                t = "bool"
            elif isinstance(value, (int, float)):
                t = "float"  # both int and float values were accepted for a numeric default
            else:
                t = "any"
            params.append(Param(name, t, value, important=name in imp))
        return cls(tuple(params))

    # -- checking -------------------------------------------------------------------------------------
    def check(self, values: Mapping[str, Any] | None, owner: str) -> dict[str, Any]:
        """The given values (only those), checked and converted; unknown names raise ``ParamError``.

        ``owner`` names the method in messages (``"method 'rpg'"``).
        """
        values = dict(values or {})
        unknown = sorted(set(values) - set(self.names()) - set(self.retired))
        if unknown:
            raise ParamError(f"{owner} has no parameter(s) {unknown}; its parameters are {sorted(self.names())}")
        out: dict[str, Any] = {}
        for p in self.params:
            if p.name in values:
                value = p.check(values[p.name], owner)
                # an int parameter given 3.0 keeps the default's int type (saved configs compare equal)
                out[p.name] = value
        return out

    def resolve(self, values: Mapping[str, Any] | None, owner: str) -> dict[str, Any]:
        """Every parameter: the defaults overridden by the checked ``values``."""
        return {**self.defaults(), **self.check(values, owner)}

    # -- docs ----------------------------------------------------------------------------------------
    def markdown_table(self) -> str:
        """The docs/methods.md table: parameter, default, accepted values, meaning."""
        rows = ["| parameter | default | accepts | meaning |", "|---|---|---|---|"]
        for p in self.params:
            default = p.format(p.default) if p.format(p.default) != "" else '""'
            rows.append(f"| `{p.name}` | {default} | {p.allowed()} | {p.help} |")
        return "\n".join(rows)
