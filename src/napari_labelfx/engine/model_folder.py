"""Copying a model folder somewhere a person chose, without ever deleting their files.

Used by the Train panel's "Save model": the destination folder is often an existing project or
thesis folder, so the copy goes *inside* it unless it already is a labelfx model folder, and a
labelfx model folder is replaced atomically (the old one is swapped out only once the new one is
complete).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..annotations._files import atomic_write_folder
from ..io.errors import LabelfxIOError
from ..io.safety import check_writable

#: Every file a labelfx model folder may hold; a folder with anything else is the person's.
MODEL_FOLDER_FILES = frozenset({"model.safetensors", "model.pt", "model.pth", "config.json", "training_state.pt",
                                "forest.npz"})
#: Weights of a network, or the trees of a pixel forest (``forest/folder.py``).
_WEIGHTS = ("model.safetensors", "model.pt", "model.pth", "forest.npz")


def is_model_folder(path: str | os.PathLike) -> bool:
    """True for a folder holding only the files of a labelfx model (weights + config.json)."""
    path = Path(path)
    try:
        entries = list(path.iterdir())
        doc = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict):
        return False
    if not any((path / w).is_file() for w in _WEIGHTS):
        return False
    return all(e.is_file() and e.name in MODEL_FOLDER_FILES for e in entries)


def copy_model_folder(src: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """Copy the model folder ``src`` to ``folder`` (or to ``folder/<src name>``) and return where.

    * ``folder`` missing or empty, or a labelfx model folder: the model goes there (a previous
      model is replaced only once the copy is complete);
    * any other non-empty folder: the model goes into ``folder/<src name>``, which must itself be
      missing, empty or a labelfx model folder. Nothing the person made is ever deleted.

    Raises
    ------
    LabelfxIOError : ``src`` is gone (e.g. its temporary run folder was removed), or the
        destination is a file, unwritable, or a folder that is not a labelfx model.
    """
    src = Path(src)
    if not src.is_dir() or not any((src / w).is_file() for w in _WEIGHTS):
        raise LabelfxIOError(src, "the model folder no longer exists (was the run folder removed?); "
                                  "train again or load a saved model")
    dest = Path(folder)
    if dest.exists() and not dest.is_dir():
        raise LabelfxIOError(dest, "is a file, not a folder; choose a folder to save the model in")
    if dest.is_dir() and any(dest.iterdir()) and not is_model_folder(dest):
        dest = dest / src.name
        if dest.exists() and not (dest.is_dir() and (not any(dest.iterdir()) or is_model_folder(dest))):
            raise LabelfxIOError(dest, "exists and is not a labelfx model folder; nothing was written: "
                                       "choose another folder")
    if Path(os.path.abspath(dest)).resolve() == src.resolve():
        return dest  # saving a model onto itself: nothing to do
    check_writable(dest / "config.json")  # before copying

    def fill(tmp: Path) -> None:
        for entry in src.iterdir():
            if entry.is_file() and entry.name in MODEL_FOLDER_FILES:
                shutil.copy2(entry, tmp / entry.name)

    return atomic_write_folder(dest, fill)


#: Run folders of ended sessions are kept this long (a person may still want a crashed run's model).
STALE_RUN_AGE_S = 24 * 3600


def new_run_folder(root: str | os.PathLike) -> Path:
    """A fresh temporary run folder ``<root>/<date>-<time>-<pid>-<random>`` (the pid marks its owner)."""
    import tempfile
    import time

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=time.strftime(f"%Y%m%d-%H%M%S-{os.getpid()}-"), dir=root))


def clean_stale_runs(root: str | os.PathLike, max_age_s: float = STALE_RUN_AGE_S) -> list[Path]:
    """Remove run folders under ``root`` whose session ended more than ``max_age_s`` ago; return them.

    Only folders named by `new_run_folder` whose process is gone are touched: a run of another
    napari still open is never removed, whatever its age.
    """
    import re
    import time

    from ..io.atomic import pid_alive

    pattern = re.compile(r"^\d{8}-\d{6}-(?P<pid>\d+)-")
    removed: list[Path] = []
    try:
        entries = list(Path(root).iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None or not entry.is_dir() or pid_alive(int(m.group("pid"))):
            continue
        try:
            age = now - entry.stat().st_mtime
        except OSError:
            continue
        if age > max_age_s:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
