"""Run a :class:`~napari_labelfx.engine.trainer.Trainer` away from the GUI thread.

The GUI (or CLI) talks to a :class:`TrainingRunner`: ``start()``, ``poll()`` for updates, ``pause()``,
``resume()``, ``stop()``, ``send_items()`` for new annotations and ``request_preview()`` for what the
person is looking at. Three modes share one worker function:

* ``"process"`` (``TrainingRunner``'s default): a spawned process. On few cores the GIL makes a training
  thread compete with napari's event loop; a process keeps the viewer responsive (measured in
  ``benchmarks/ui_stall.py``). The worker imports the method registry afresh, so only methods registered
  by importing ``napari_labelfx.methods`` exist there.
* ``"thread"``: a daemon thread, cheaper to start (no spawn, no model copy); the Train panel's default
  (its runner menu offers ``process``), and what tests use.
* ``"sync"``: the worker runs inside ``start()``; for tests and scripts that want deterministic order.

Every message is a plain :class:`~napari_labelfx.engine.updates.Update`; a crash of the worker, even a
killed process, becomes a ``FAILED`` update with a reason, never an exception in the GUI.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .updates import Failed, Update, UpdateKind

log = logging.getLogger(__name__)


@dataclass
class TrainingJob:
    """Everything a worker needs to build a trainer (picklable)."""

    config: dict
    items: list
    class_names: list[str]
    multilabel: bool = False
    num_threads: int | None = None
    #: test hook: a dotted "module:function" factory used instead of the real Trainer
    trainer_factory: str | None = None


def _describe_error(exc: BaseException) -> str:
    """A short human-readable reason for a worker failure."""
    text = str(exc) or exc.__class__.__name__
    low = text.lower()
    if "out of memory" in low:
        if "cuda" in low or "gpu" in low:
            return "out of GPU memory: reduce the batch size or patch size, or use a smaller model"
        return "out of memory: reduce the batch size or patch size, or use a smaller model"
    return f"{exc.__class__.__name__}: {text}"


def _resolve_factory(spec: str | None) -> Callable[..., Any]:
    if spec is None:
        from .factory import make_trainer

        return make_trainer
    module, _, name = spec.partition(":")
    import importlib

    return getattr(importlib.import_module(module), name)


def _command_loop(commands: Any, trainer: Any, done: threading.Event) -> None:
    """Apply GUI commands to the trainer until the job ends (runs in a worker-side thread)."""
    control = trainer.control
    while not done.is_set():
        try:
            cmd, payload = commands.get(timeout=0.1)
        except queue.Empty:
            continue
        except (EOFError, OSError):  # the GUI side went away: stop training, keep the best model
            control.stop()
            return
        if cmd == "pause":
            control.pause()
        elif cmd == "resume":
            control.resume()
        elif cmd == "stop":
            control.stop()
        elif cmd == "items":
            trainer.set_items(payload)
        elif cmd == "preview":
            trainer.request_preview(*payload)


#: Seconds a worker whose parent died may take to stop (and save) before it exits anyway.
ORPHAN_GRACE_S = 5.0


def _parent_gone(lifeline: Any, parent_pid: int | None, wait: float) -> bool:
    """True once the GUI process is gone: its end of the lifeline pipe closed, or we were reparented."""
    try:
        if lifeline is not None and lifeline.poll(wait):
            lifeline.recv()  # nothing is ever sent: readable means end of file
    except (EOFError, OSError):
        return True
    if lifeline is None:
        threading.Event().wait(wait)
    return parent_pid is not None and os.name == "posix" and os.getppid() != parent_pid


def _watch_parent(lifeline: Any, parent_pid: int | None, holder: dict, done: threading.Event) -> None:
    """Worker-side thread: when the GUI dies (even ``kill -9``), stop training and exit the process.

    The command and update queues cannot tell: the worker holds both ends of their pipes, so it
    would train to the end and then hang at exit flushing updates nobody reads.
    """
    while True:  # also after the job: exiting flushes the update queue, which hangs with no reader
        if _parent_gone(lifeline, parent_pid, 0.5):
            trainer = holder.get("trainer")
            if trainer is not None:
                trainer.control.stop()
            done.wait(ORPHAN_GRACE_S)
            os._exit(0)  # never wait for queue feeder threads writing to a dead reader


def run_job(job: TrainingJob, commands: Any, updates: Any, lifeline: Any = None,
            parent_pid: int | None = None) -> None:
    """Worker entry point: build the trainer, forward its updates, turn errors into FAILED updates.

    In process mode, ``lifeline`` is the read end of a pipe whose only write end the GUI process
    holds, and ``parent_pid`` its process id: the worker ends when the GUI process ends.
    """
    if job.num_threads:
        import torch

        torch.set_num_threads(job.num_threads)
    done = threading.Event()
    holder: dict = {}
    if lifeline is not None or parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(lifeline, parent_pid, holder, done), daemon=True,
                         name="labelfx-parent-watch").start()
    try:
        factory = _resolve_factory(job.trainer_factory)
        if job.trainer_factory is None:
            from .trainer import TrainConfig

            config: Any = TrainConfig.from_dict(job.config)
        else:  # test doubles take the plain dict
            config = job.config
        trainer = factory(config, job.items, job.class_names, multilabel=job.multilabel)
        holder["trainer"] = trainer
        listener = threading.Thread(target=_command_loop, args=(commands, trainer, done), daemon=True)
        listener.start()
        for upd in trainer.updates():
            updates.put(upd)
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the GUI as a message
        log.debug("training worker failed", exc_info=True)
        updates.put(Failed(reason=_describe_error(exc), error_type=exc.__class__.__name__,
                           traceback=traceback.format_exc(limit=20)))
    finally:
        done.set()


class TrainingRunner:
    """Owns one background training job and its two queues (commands down, updates up)."""

    def __init__(self, job: TrainingJob, mode: str = "process") -> None:
        if mode not in ("process", "thread", "sync"):
            raise ValueError(f"unknown runner mode {mode!r}: use 'process', 'thread' or 'sync'")
        self.job = job
        self.mode = mode
        self._worker: Any = None
        self._finished = False
        self._failed_reported = False
        if mode == "process":
            ctx = mp.get_context("spawn")
            self._commands: Any = ctx.Queue()
            self._updates: Any = ctx.Queue()
            self._ctx = ctx
        else:
            self._commands = queue.Queue()
            self._updates = queue.Queue()

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start training in the background (or to completion in ``sync`` mode)."""
        if self._worker is not None:
            raise RuntimeError("this runner was already started; create a new one")
        if self.mode == "process":
            # the lifeline: the child gets only the read end; when this process ends, for any
            # reason, the OS closes the write end and the child sees end-of-file and stops
            reader, self._lifeline = self._ctx.Pipe(duplex=False)
            self._worker = self._ctx.Process(
                target=run_job, args=(self.job, self._commands, self._updates, reader, os.getpid()), daemon=True,
                name="labelfx-training",
            )
            self._worker.start()
            reader.close()  # only the child may hold the read end
            # A large update (a preview) arrives through a pipe in 64 KB pieces that the training
            # process writes when it gets the CPU; reading it on the GUI thread could block for a
            # second. A pump thread does the blocking reads; poll() only drains a local queue.
            self._local: Any = queue.Queue()
            self._pump_done = threading.Event()
            self._pump = threading.Thread(target=self._pump_updates, daemon=True, name="labelfx-updates")
            self._pump.start()
        elif self.mode == "thread":
            self._worker = threading.Thread(
                target=run_job, args=(self.job, self._commands, self._updates), daemon=True,
                name="labelfx-training",
            )
            self._worker.start()
        else:
            self._worker = "sync"
            run_job(self.job, self._commands, self._updates)

    @property
    def running(self) -> bool:
        """True while the worker is alive and has not reported FINISHED or FAILED."""
        if self._worker is None or self._finished:
            return False
        if self.mode == "sync":
            return False
        if self.mode == "process":
            return self._worker.is_alive() or not self._pump_done.is_set() or not self._local.empty()
        return self._worker.is_alive() or not self._updates.empty()

    def _pump_updates(self) -> None:
        """Move updates from the process queue to the local queue (runs in a GUI-side thread)."""
        try:
            while True:
                try:
                    upd = self._updates.get(timeout=0.2)
                except queue.Empty:
                    if not self._worker.is_alive():
                        try:  # drain what the worker flushed before it ended
                            while True:
                                self._local.put(self._updates.get(timeout=0.2))
                        except (queue.Empty, EOFError, OSError, ValueError):
                            return
                    continue
                except (EOFError, OSError, ValueError):
                    return
                self._local.put(upd)
                if upd.kind in (UpdateKind.FINISHED, UpdateKind.FAILED):
                    return
        finally:
            self._pump_done.set()

    def _source(self) -> Any:
        return self._local if self.mode == "process" else self._updates

    def poll(self, max_items: int = 1000) -> list[Update]:
        """Return the updates that arrived since the last call (never blocks)."""
        out: list[Update] = []
        source = self._source()
        for _ in range(max_items):
            try:
                upd = source.get_nowait()
            except queue.Empty:
                break
            except (EOFError, OSError):
                break
            if upd.kind in (UpdateKind.FINISHED, UpdateKind.FAILED):
                self._finished = True
            out.append(upd)
        if not out and not self._finished and self._worker_died():
            # A killed process (out of memory, segfault, kill -9) sends nothing: say so once.
            self._finished = True
            code = getattr(self._worker, "exitcode", None)
            out.append(Failed(
                reason=f"the training process ended unexpectedly (exit code {code}); your layers are untouched. "
                "Out of memory is the usual cause: try a smaller patch size, batch size or model.",
                error_type="WorkerDied",
            ))
        return out

    def _worker_died(self) -> bool:
        if self.mode != "process" or self._worker is None:
            return False
        if self._worker.is_alive() or not self._pump_done.is_set():
            return False
        return self._local.empty()

    def wait(self, timeout: float | None = None) -> list[Update]:
        """Block until the job ends (or ``timeout`` seconds); returns all updates received."""
        import time

        got: list[Update] = []
        t0 = time.monotonic()
        while not self._finished:
            got.extend(self.poll())
            if self._finished:
                break
            if timeout is not None and time.monotonic() - t0 > timeout:
                break
            time.sleep(0.05)
        got.extend(self.poll())
        return got

    # -- commands ------------------------------------------------------------------------------------
    def _send(self, cmd: str, payload: Any = None) -> None:
        if self._finished:
            return
        try:
            self._commands.put((cmd, payload))
        except (OSError, ValueError):
            pass

    def pause(self) -> None:
        self._send("pause")

    def resume(self) -> None:
        self._send("resume")

    def stop(self) -> None:
        """Ask the trainer to stop after the current step; it keeps (and reports) the best model."""
        self._send("stop")

    def send_items(self, items: list) -> None:
        """Replace the training data with newer annotations (applied before the next step)."""
        self._send("items", items)

    def request_preview(self, image_index: int, region: tuple | None) -> None:
        """Ask for previews of ``region`` (tuple of slices) of item ``image_index``."""
        self._send("preview", (image_index, region))

    def terminate(self, timeout: float = 5.0) -> None:
        """Stop and, if the worker does not end in ``timeout`` seconds, kill the process."""
        self.stop()
        if self.mode == "process" and self._worker is not None:
            self._worker.join(timeout)
            if self._worker.is_alive():
                self._worker.kill()
                self._worker.join(1.0)
            lifeline = getattr(self, "_lifeline", None)
            if lifeline is not None:
                lifeline.close()
        elif self.mode == "thread" and self._worker is not None:
            self._worker.join(timeout)


def default_num_threads() -> int:
    """Torch threads for a background worker: all cores; the GUI process mostly sleeps."""
    return max(1, os.cpu_count() or 1)
