"""Output-path checks: a writer never destroys what a person made.

Every labelfx writer calls `check_destination` before any work, so that a bad output path is
refused in one line *before* minutes of prediction or training, and nothing on disk is lost:

* the output is never one of the inputs (nor a folder holding one), whatever the flags;
* an existing folder is never deleted to make room for a file, and a folder that is not a Zarr
  store is never replaced at all;
* an existing Zarr store or file that labelfx did not write (or a labelfx Zarr store that holds
  more than the one array it would replace) is replaced only with ``overwrite=True``;
* the folder that will receive the output must be writable.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from .errors import LabelfxIOError

#: What a Zarr v3 array written by labelfx holds: its metadata and the chunk folder.
_OWN_ZARR_ENTRIES = {"zarr.json", "c"}
#: Attribute keys labelfx writers put on the arrays they write.
_OWN_ZARR_ATTRS = ("labelfx_labels", "labelfx_complete_chunks", "labelfx")


def _same_or_nested(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` are the same path or one lies inside the other."""
    return a == b or a in b.parents or b in a.parents


def _resolved(path: str | os.PathLike) -> Path:
    # strict=False: the output usually does not exist yet
    return Path(os.path.abspath(Path(path).expanduser())).resolve(strict=False)


def _own_zarr_metadata(path: Path) -> dict | None:
    """The user metadata of a Zarr v3 array a labelfx writer created and that holds nothing else
    (``{}`` when it has none); None for anything else."""
    meta = path / "zarr.json"
    try:
        doc = json.loads(meta.read_text(encoding="utf-8"))
        entries = {p.name for p in path.iterdir()}
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("node_type") != "array":
        return None
    attrs = doc.get("attributes")
    if not isinstance(attrs, dict) or not any(k in attrs for k in _OWN_ZARR_ATTRS):
        return None
    if not entries <= _OWN_ZARR_ENTRIES:
        return None
    extra = attrs.get("metadata")
    return extra if isinstance(extra, dict) else {}


def _own_tiff_metadata(path: Path) -> dict | None:
    """The user metadata of a TIFF file labelfx wrote (``{}`` when it has none); None otherwise."""
    try:
        import tifffile

        from .tiff import _labelfx_metadata

        with tifffile.TiffFile(str(path)) as tif:
            block = _labelfx_metadata(tif)
    except Exception:  # anything unreadable is, by definition, not something we wrote
        return None
    if block is None:
        return None
    extra = block.get("metadata")
    return extra if isinstance(extra, dict) else {}


def is_own_zarr(path: Path) -> bool:
    """True for a Zarr v3 array that a labelfx writer created and that holds nothing else."""
    return _own_zarr_metadata(path) is not None


def is_own_tiff(path: Path) -> bool:
    """True for a TIFF file whose description carries the JSON block labelfx writers store."""
    return _own_tiff_metadata(path) is not None


def is_saved_layer(path: str | os.PathLike) -> bool:
    """True for a file or Zarr array that the napari Labels writer saved (a person's layer).

    The npe2 writer always records the layer ``name``; predictions and plain library writes do not.
    Such a file is replaced only by the writer that saved it (the person saving again) or with
    ``overwrite``, never silently by a prediction.
    """
    path = Path(path)
    meta = _own_zarr_metadata(path) if path.is_dir() else _own_tiff_metadata(path) if path.is_file() else None
    return isinstance(meta, dict) and "name" in meta


def _is_zarr_store(path: Path) -> bool:
    return any((path / f).is_file() for f in ("zarr.json", ".zarray", ".zgroup"))


def check_writable(path: str | os.PathLike) -> None:
    """Raise `LabelfxIOError` unless the nearest existing folder above ``path`` is writable."""
    path = Path(path)
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise LabelfxIOError(path, f"cannot write here: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LabelfxIOError(path, f"cannot write here: the folder {parent} is not writable")


def check_destination(
    dest: str | os.PathLike,
    inputs: Iterable[str | os.PathLike | None] = (),
    overwrite: bool = False,
    what: str = "output",
) -> Path:
    """Refuse an output path whose writing would destroy data; call it before any work.

    Parameters
    ----------
    dest : the file or Zarr folder about to be written.
    inputs : paths the same command reads (None entries are skipped); ``dest`` may never be one
        of them or a folder holding one, even with ``overwrite``.
    overwrite : the person explicitly allowed replacing an existing file or Zarr store that
        labelfx did not write. Plain folders are never replaced.
    what : name of the output in messages (``"output"``, ``"confidence"``, ...).

    Returns
    -------
    Path : ``dest`` as a Path.

    Raises
    ------
    LabelfxIOError : the one-line reason, naming the path.
    """
    path = Path(dest)
    target = _resolved(path)
    for src in inputs:
        if src is None:
            continue
        source = _resolved(src)
        # writing inside an input folder destroys nothing; replacing it or a folder above it does
        if target == source or target in source.parents:
            raise LabelfxIOError(
                path, f"the {what} would overwrite the input {src}; choose another {what} path")
    check_writable(target)
    if not (path.exists() or path.is_symlink()):
        return path
    writes_folder = path.suffix.lower() == ".zarr"
    if path.is_dir() and not path.is_symlink():
        if not writes_folder:
            raise LabelfxIOError(
                path, f"is an existing folder; the {what} file would replace it (folders are never "
                      "deleted to make room): choose another path")
        if is_own_zarr(path):
            _refuse_saved_layer(path, overwrite, what)
            return path
        if not _is_zarr_store(path):
            raise LabelfxIOError(
                path, f"is an existing folder that is not a Zarr store; it is never replaced: "
                      f"choose another {what} path")
        if not overwrite:
            raise LabelfxIOError(
                path, "is an existing Zarr store that labelfx did not write or that holds more than "
                      "one array; use --overwrite (overwrite=True) to replace it, or choose another path")
        return path
    # an existing file (or a link)
    if not writes_folder and is_own_tiff(path):
        _refuse_saved_layer(path, overwrite, what)
        return path
    if not overwrite:
        raise LabelfxIOError(
            path, "exists and was not written by labelfx; use --overwrite (overwrite=True) to replace "
                  "it, or choose another path")
    return path


def _refuse_saved_layer(path: Path, overwrite: bool, what: str) -> None:
    if not overwrite and is_saved_layer(path):
        raise LabelfxIOError(
            path, f"holds a layer saved from napari (e.g. painted labels); the {what} would replace it: use "
                  "--overwrite (overwrite=True) to replace it, or choose another path")


def check_distinct(paths: dict[str, str | os.PathLike | None]) -> None:
    """Refuse two outputs of one command pointing at the same path (e.g. labels and confidence)."""
    seen: dict[Path, str] = {}
    for name, p in paths.items():
        if p is None:
            continue
        r = _resolved(p)
        for other, other_name in seen.items():
            if _same_or_nested(r, other):
                raise LabelfxIOError(p, f"the {name} and the {other_name} need different paths")
        seen[r] = name
