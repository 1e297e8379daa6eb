"""Which label kinds each training method is made for, and a warning when the chosen labels do not fit.

A method trains on any items, but some only make sense for certain labels: ``adele`` and ``sissi``
correct *noisy* full masks (on scribbles nothing is there to correct and unpainted pixels are
unknown), ``dii-dcr`` learns trust weights of *weak* instances, ``chexseg`` turns *image-level* tags
into masks. Starting one of them on labels it was not made for trains without error but gives a
plain supervised model at best, so the Train panel and ``labelfx train`` say so before they start.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

#: Label kinds each built-in method is made for (other registered methods are not checked).
SUITED_KINDS: dict[str, tuple[str, ...]] = {
    "supervised": ("strong", "noisy"),
    "scribble": ("scribble", "strong"),
    "rpg": ("strong", "scribble"),
    "rpg+": ("strong", "scribble"),
    "fixmatch": ("strong", "scribble"),
    "adele": ("noisy",),
    "sissi": ("noisy",),
    "dii-dcr": ("weak",),
    "chexseg": ("image-level",),
    "mlds": ("strong", "image-level"),
    "mlds-mt": ("strong", "image-level"),
    "stain-aglr": ("strong",),
}

#: The method to suggest for labels of one kind.
SUGGESTED: dict[str, str] = {
    "strong": "supervised",
    "scribble": "scribble",
    "weak": "dii-dcr",
    "noisy": "adele",
    "image-level": "chexseg",
}


def item_kinds(items: Iterable[Any]) -> list[str]:
    """The label kinds present in training items (``kind``, plus ``image-level`` for tagged items)."""
    kinds: list[str] = []
    for item in items:
        kind = str(getattr(getattr(item, "kind", None), "value", getattr(item, "kind", "")) or "")
        if kind and kind != "none" and kind not in kinds:
            kinds.append(kind)
        if getattr(item, "tags", None) is not None and "image-level" not in kinds:
            kinds.append("image-level")
    return kinds


def kind_mismatch(method: str, kinds: Sequence[str]) -> str | None:
    """A one-line warning when ``method`` is not made for any of the label ``kinds``, else None."""
    suited = SUITED_KINDS.get(method)
    present = [k for k in kinds if k and k != "none"]
    if suited is None or not present or any(k in suited for k in present):
        return None
    better = [SUGGESTED[k] for k in present if k in SUGGESTED and SUGGESTED[k] != method]
    hint = f"; for {', '.join(present)} labels use {' or '.join(dict.fromkeys(better))}" if better else ""
    return (f"method {method!r} is made for {' or '.join(suited)} labels but the annotations are "
            f"{', '.join(present)}{hint}")
