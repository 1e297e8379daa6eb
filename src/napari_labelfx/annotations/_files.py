"""Atomic file and folder writes: a reader never sees a half-written class table or project."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` through a temp file in the same folder, then ``os.replace``.

    The temp file lives next to the target so the final rename never crosses a file system
    (a cross-device rename would be a copy, which is not atomic).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding=encoding) as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_folder(folder: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Create ``folder`` by filling a temp folder next to it, then swapping it into place.

    ``fill(tmp_folder)`` writes the whole content. If it raises, the temp folder is removed and an
    existing ``folder`` is left untouched. Directories cannot be replaced atomically in one call, so
    the old folder is first renamed aside and only deleted once the new one is in place; if the
    second rename fails, the old folder is renamed back.
    """
    folder = Path(folder)
    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    from ..io.atomic import clean_stale_temporaries, temp_token

    clean_stale_temporaries(folder)  # leftovers of killed writes (their process is gone)
    token = temp_token()  # carries our pid, so a later write can tell our leftovers from a live write
    tmp = parent / f".{folder.name}.tmp-{token}"
    old = parent / f".{folder.name}.old-{token}"
    tmp.mkdir()
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    had_old = folder.exists()
    try:
        if had_old:
            os.replace(folder, old)
        try:
            os.replace(tmp, folder)
        except BaseException:
            if had_old:
                os.replace(old, folder)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if had_old:
        shutil.rmtree(old, ignore_errors=True)
    return folder
