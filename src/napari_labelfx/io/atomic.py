"""Atomic file and folder writes: write next to the destination, then rename over it."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from .errors import LabelfxIOError

#: Temporaries carry the writer's process id, so a later write can tell a dead writer's leftovers
#: (a killed save) from a write still in progress in another process.
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-[0-9a-f]+")


def pid_alive(pid: int) -> bool:
    """True unless process ``pid`` is known to be gone (a dead writer's temporaries may be removed)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else (or cannot tell): leave it alone
    return True


def clean_stale_temporaries(dest: str | os.PathLike) -> list[Path]:
    """Remove temporaries of ``dest`` left by writers that died (killed saves); return them.

    Only names this module creates (``.<name>.tmp-<pid>-<hex>``/``.old-``) whose process is gone
    are touched, never anything else in the folder.
    """
    dest = Path(dest)
    folder = dest.parent if str(dest.parent) else Path(".")
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if m is None or m.group("name") != dest.name or pid_alive(int(m.group("pid"))):
            continue
        _remove(entry)
        removed.append(entry)
    return removed


def temp_token() -> str:
    """``<pid>-<random>``: the suffix of every temporary name, see `clean_stale_temporaries`."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:10]}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the folder of ``dest``; on success rename it over ``dest``.

    The caller writes a file *or* a directory (e.g. a Zarr store) at the yielded path, which does
    not exist yet. On a clean exit it replaces ``dest``; on an exception it is removed and ``dest``
    is left as it was. Same folder means same file system, so the rename is atomic for files.

    Parameters
    ----------
    dest : final path of the file or directory.

    Yields
    ------
    Path : the temporary path to write.
    """
    dest = Path(dest)
    folder = dest.parent if str(dest.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(dest)
    # keep the real suffix last so writers that dispatch on the extension (tifffile, zarr) still work
    tmp = folder / f".{dest.name}.tmp-{temp_token()}{''.join(dest.suffixes[-1:])}"
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary path {tmp}")
        _replace(tmp, dest)
    except BaseException:
        _remove(tmp)
        raise


def _replace(tmp: Path, dest: Path) -> None:
    """Move ``tmp`` onto ``dest``; an existing directory at ``dest`` is swapped out, then deleted.

    A folder is never deleted to make room for a file: that is refused (callers decide with
    `io.safety.check_destination` whether a folder may be replaced by a new folder).
    """
    if dest.is_dir() and not dest.is_symlink() and not tmp.is_dir():
        raise LabelfxIOError(dest, "is an existing folder; a file is never written over a folder")
    if tmp.is_dir() and dest.exists() or dest.is_dir() and not dest.is_symlink():
        # os.replace cannot overwrite a non-empty directory: park the old one beside it first,
        # so at every moment either the old or the new complete version is at a known path
        parked = dest.parent / f".{dest.name}.old-{temp_token()}"
        parked.mkdir()
        old = parked / "old"
        os.replace(dest, old)
        try:
            os.replace(tmp, dest)
        except BaseException:
            os.replace(old, dest)  # put the original back
            shutil.rmtree(parked, ignore_errors=True)
            raise
        shutil.rmtree(parked, ignore_errors=True)
    else:
        os.replace(tmp, dest)
