"""The background runner: start, pause, resume, stop, new items, previews and error propagation."""
from __future__ import annotations

import time

import pytest

from napari_labelfx.engine.runner import TrainingJob, TrainingRunner
from napari_labelfx.engine.updates import UpdateKind


def _job(factory: str, **config) -> TrainingJob:
    return TrainingJob(config=config, items=[1, 2], class_names=["background", "fg"],
                       trainer_factory=f"tests._fake_trainers:{factory}")


def _wait_for(runner, pred, timeout=20.0):
    got = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        new = runner.poll()
        got.extend(new)
        if any(pred(u) for u in new):
            return got
        time.sleep(0.01)
    raise AssertionError(f"timed out; got {[u.kind for u in got][-10:]}")


@pytest.mark.parametrize("mode", ["thread", "sync"])
def test_runs_to_completion(mode):
    r = TrainingRunner(_job("CountingTrainer", iterations=5), mode=mode)
    r.start()
    ups = r.wait(timeout=20)
    kinds = [u.kind for u in ups]
    assert kinds[0] == UpdateKind.STARTED
    assert kinds[-1] == UpdateKind.FINISHED and ups[-1].reason == "done"
    assert sum(k == UpdateKind.PROGRESS for k in kinds) == 5
    assert not r.running


def test_pause_resume_stop_thread():
    r = TrainingRunner(_job("CountingTrainer", iterations=100000, sleep=0.005), mode="thread")
    r.start()
    _wait_for(r, lambda u: u.kind == UpdateKind.PROGRESS)
    r.pause()
    got = _wait_for(r, lambda u: u.kind == UpdateKind.PAUSED)
    it_paused = got[-1].iteration
    time.sleep(0.2)
    assert all(u.kind != UpdateKind.PROGRESS for u in r.poll())  # nothing trains while paused
    r.resume()
    got = _wait_for(r, lambda u: u.kind == UpdateKind.PROGRESS and u.iteration > it_paused)
    r.send_items([1, 2, 3])
    r.request_preview(0, (slice(0, 4),))
    got = _wait_for(r, lambda u: u.kind == UpdateKind.PROGRESS and u.n_items == 3 and u.preview)
    r.stop()
    got = _wait_for(r, lambda u: u.kind == UpdateKind.FINISHED)
    assert got[-1].reason == "stopped"
    assert not r.running


def test_error_becomes_failed_update_with_reason():
    r = TrainingRunner(_job("FailingTrainer"), mode="thread")
    r.start()
    ups = r.wait(timeout=20)
    assert ups[-1].kind == UpdateKind.FAILED
    assert "out of GPU memory" in ups[-1].reason


def test_process_mode_stop_and_killed_worker():
    r = TrainingRunner(_job("CountingTrainer", iterations=100000, sleep=0.005), mode="process")
    r.start()
    _wait_for(r, lambda u: u.kind == UpdateKind.PROGRESS, timeout=60)
    r.stop()
    got = _wait_for(r, lambda u: u.kind == UpdateKind.FINISHED, timeout=30)
    assert got[-1].reason == "stopped"
    r.terminate()

    dying = TrainingRunner(_job("DyingTrainer"), mode="process")
    dying.start()
    ups = dying.wait(timeout=60)
    assert ups[-1].kind == UpdateKind.FAILED
    assert "ended unexpectedly" in ups[-1].reason


def test_bad_mode():
    with pytest.raises(ValueError, match="unknown runner mode"):
        TrainingRunner(_job("CountingTrainer"), mode="fork")
