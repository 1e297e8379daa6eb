"""Atomic file and folder writes: write next to the destination, then rename over it."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


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
    # keep the real suffix last so writers that dispatch on the extension (tifffile, zarr) still work
    tmp = folder / f".{dest.name}.tmp-{uuid.uuid4().hex[:10]}{''.join(dest.suffixes[-1:])}"
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary path {tmp}")
        _replace(tmp, dest)
    except BaseException:
        _remove(tmp)
        raise


def _replace(tmp: Path, dest: Path) -> None:
    """Move ``tmp`` onto ``dest``; an existing directory at ``dest`` is swapped out, then deleted."""
    if tmp.is_dir() and dest.exists() or dest.is_dir() and not dest.is_symlink():
        # os.replace cannot overwrite a non-empty directory: park the old one beside it first,
        # so at every moment either the old or the new complete version is at a known path
        parked = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
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
