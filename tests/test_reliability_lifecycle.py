"""Issue 14, items 7, 8, 18: a training worker never outlives the GUI, closing the viewer or
removing the panel stops training, and temporary run folders nobody saved are removed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from napari_labelfx.engine.runner import TrainingJob, TrainingRunner

ROOT = Path(__file__).resolve().parents[1]

_PARENT = """
import sys, time
sys.path.insert(0, {root!r})
from napari_labelfx.engine.runner import TrainingJob, TrainingRunner
from napari_labelfx.engine.updates import UpdateKind
job = TrainingJob(config={{"iterations": 10**7, "sleep": 0.005}}, items=[1], class_names=["bg", "fg"],
                  trainer_factory="tests._fake_trainers:CountingTrainer")
r = TrainingRunner(job, mode="process")
r.start()
t0 = time.monotonic()
while time.monotonic() - t0 < 60 and not any(u.kind == UpdateKind.PROGRESS for u in r.poll()):
    time.sleep(0.02)
print(r._worker.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            state = next(line for line in fh if line.startswith("State:"))
        return "Z" not in state.split()[1]  # a zombie has ended; only its exit status is left
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_worker_dies_with_killed_parent():
    parent = subprocess.Popen([sys.executable, "-c", _PARENT.format(root=str(ROOT))], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        line = parent.stdout.readline()
        child = int(line)
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)  # kill -9 of the GUI
        parent.wait(10)
        deadline = time.monotonic() + 30
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the training worker outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        try:
            if _alive(child):
                os.kill(child, signal.SIGKILL)
        except (NameError, ValueError, ProcessLookupError):
            pass


def test_terminate_closes_the_lifeline():
    job = TrainingJob(config={"iterations": 10**7, "sleep": 0.005}, items=[1], class_names=["bg", "fg"],
                      trainer_factory="tests._fake_trainers:CountingTrainer")
    r = TrainingRunner(job, mode="process")
    r.start()
    r.terminate(timeout=20)
    assert not r._worker.is_alive() and r._lifeline.closed


# -- the Train panel -------------------------------------------------------------------------------
def _thread_runner() -> TrainingRunner:
    job = TrainingJob(config={"iterations": 10**7, "sleep": 0.005}, items=[1], class_names=["bg", "fg"],
                      trainer_factory="tests._fake_trainers:CountingTrainer")
    r = TrainingRunner(job, mode="thread")
    r.start()
    return r


def _panel(make_napari_viewer, tmp_path):
    pytest.importorskip("napari")
    from napari_labelfx.widgets.train import TrainWidget

    viewer = make_napari_viewer()
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    runner = _thread_runner()
    w.runner = w._guard.runner = runner
    run_dir = tmp_path / "labelfx-runs" / "run1"
    (run_dir / "best").mkdir(parents=True)
    w._guard.run_dir = run_dir
    return viewer, w, runner, run_dir


def test_closing_the_viewer_stops_training(make_napari_viewer, qtbot, tmp_path):
    viewer, _w, runner, run_dir = _panel(make_napari_viewer, tmp_path)
    assert runner.running
    viewer.close()
    qtbot.waitUntil(lambda: not runner._worker.is_alive(), timeout=15_000)
    assert not run_dir.exists()  # nobody saved it


def test_removing_the_panel_stops_training(make_napari_viewer, qtbot, tmp_path):
    viewer, w, runner, run_dir = _panel(make_napari_viewer, tmp_path)
    viewer.window.remove_dock_widget(w)
    qtbot.waitUntil(lambda: not runner._worker.is_alive(), timeout=15_000)
    assert not run_dir.exists()


def test_saved_inside_run_folder_is_kept(make_napari_viewer, qtbot, tmp_path):
    from napari_labelfx.models import ModelConfig, build_model
    from napari_labelfx.models.checkpoint import save_model

    viewer, w, runner, run_dir = _panel(make_napari_viewer, tmp_path)
    w.best_dir = save_model(run_dir / "best", build_model(ModelConfig(width=4, depth=1)))
    saved = w.save_model(str(run_dir / "keep"))
    assert saved is not None
    viewer.close()
    qtbot.waitUntil(lambda: not runner._worker.is_alive(), timeout=15_000)
    assert saved.exists()  # the person saved there: it is theirs now


def test_stale_run_folders_of_ended_sessions_are_removed(tmp_path):
    import os

    from napari_labelfx.engine.model_folder import clean_stale_runs, new_run_folder

    mine = new_run_folder(tmp_path)
    assert f"-{os.getpid()}-" in mine.name
    dead_old = tmp_path / "20240101-000000-999999999-abc"
    dead_new = tmp_path / "20240101-000001-999999999-def"
    other = tmp_path / "my-notes"
    for d in (dead_old, dead_new, other):
        d.mkdir()
    old = time.time() - 3 * 24 * 3600
    for d in (dead_old, other, mine):
        os.utime(d, (old, old))
    assert clean_stale_runs(tmp_path) == [dead_old]
    assert mine.exists() and dead_new.exists() and other.exists()  # alive, recent, or not a run folder
