"""Training in several processes (``torchrun``) with DistributedDataParallel, behind one seam.

The single-process trainer is unchanged; when a process group is up (``torchrun`` set ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR``/``MASTER_PORT``), :class:`Trainer` asks this module
for a :class:`DistributedRun` and, through it:

* runs the method's forward *and loss* inside one DistributedDataParallel module (:class:`MethodStep`),
  so every network a method builds (mean teacher heads, the second network of dual-network methods,
  RPG's pool and unlabelled patches drawn inside ``forward``) takes part, however many times a network
  is called per step; gradients are averaged over the ranks during ``backward`` and every rank applies
  the same update, so the weights stay identical (DDP also broadcasts rank 0's weights and buffers);
* draws different patches on every rank (the sampler, augmenter and torch seeds are offset by the rank;
  rank 0 keeps the single-process seeds);
* validates, previews and writes checkpoints on rank 0 only (same model folder as a one-process run);
  the early-stopping decision is broadcast from rank 0; the reported loss is the mean over ranks.

Backends: gloo on CPU, nccl on CUDA (one GPU per process: ``cuda:LOCAL_RANK``). ``--batch`` is per
process, so N processes train on N times the batch of one.

Methods and settings that cannot work this way are refused before any process group is joined
(:func:`check_config`), with a message that names them.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from torch import nn

from .config import ConfigError, TrainConfig

__all__ = [
    "DistributedRun", "MethodStep", "check_config", "current", "distributed_problem", "init_from_env",
    "local_launch_command", "shutdown", "world_size_from_env",
]

#: Seconds a collective may wait for the other ranks before the run fails (not NCCL's 10-minute default:
#: a crashed rank must end the others in reasonable time; rank 0 validates while the others wait).
DEFAULT_TIMEOUT_S = 600.0
#: Added per rank to the torch seed (rank 0 keeps the single-process seed).
RANK_SEED_STRIDE = 1_000_003


def _dii_problem(params: Mapping[str, Any]) -> str | None:
    if params.get("dii", True):
        return ("it learns per-instance label weights by hypergradient steps outside the networks, which "
                "each process would learn on its own; use --param dii=false (the two networks of DCR "
                "train in several processes) or train in one process")
    return None


#: Network methods that cannot train in several processes with some parameters: name -> (params -> reason).
#: A method may instead define ``distributed_problem(self) -> str | None`` itself.
_PROBLEMS: dict[str, Callable[[Mapping[str, Any]], str | None]] = {"dii-dcr": _dii_problem}

#: Trainers that are not network methods: why they do not run in several processes.
_SPECIAL = {
    "forest": "it trains a random forest on filter features in one process (no gradients to share)",
    "auto": "it trains the random forest first, in one process; use a network method such as 'supervised'",
}


def distributed_problem(method: Any) -> str | None:
    """Why ``method`` (a ``methods.base.Method`` with its parameters) cannot train in several processes,
    or None when it can."""
    own = getattr(method, "distributed_problem", None)
    if callable(own):
        return own()
    rule = _PROBLEMS.get(getattr(method, "name", ""))
    return None if rule is None else rule(getattr(method, "params", {}))


def check_config(cfg: TrainConfig, world_size: int) -> None:
    """Refuse settings that cannot train in ``world_size`` processes (nothing to check for one).

    Raises
    ------
    ConfigError
        For ``forest``/``auto``, a refused network method, a wall-clock budget, or a device without a
        distributed backend; the message names the method or setting.
    """
    if world_size <= 1:
        return
    where = f"{world_size} processes (--nproc/torchrun)"
    if cfg.method in _SPECIAL:
        raise ConfigError(f"method {cfg.method!r} cannot train in {where}: {_SPECIAL[cfg.method]}")
    from ..methods import available_methods, create_method

    if cfg.method in available_methods():
        problem = distributed_problem(create_method(cfg.method, cfg.method_params))
        if problem:
            raise ConfigError(f"method {cfg.method!r} cannot train in {where}: {problem}")
    if cfg.time_budget_s is not None:
        # the schedule follows each rank's own clock: ranks would apply different learning rates
        raise ConfigError(f"time_budget_s cannot be used in {where}: give a number of iterations instead")
    if cfg.device.strip().lower().startswith("mps"):
        raise ConfigError(f"device {cfg.device!r} has no distributed backend: use 'cpu' (gloo) or 'cuda' (nccl)")


def world_size_from_env(env: Mapping[str, str] | None = None) -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when unset)."""
    env = os.environ if env is None else env
    try:
        return max(1, int(env.get("WORLD_SIZE", "1")))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={env.get('WORLD_SIZE')!r} is not a number of processes") from None


def _process_device(pref: str, local_rank: int) -> str:
    """The device of this rank: ``cuda:LOCAL_RANK`` when CUDA is asked for (or ``auto`` finds it), else cpu."""
    choice = pref.strip().lower() or "auto"
    if choice.startswith("cuda:"):
        raise ConfigError(f"device {pref!r} names one GPU: with several processes use 'cuda' "
                          "(each process takes the GPU of its local rank)")
    wants_cuda = choice == "cuda" or (choice == "auto" and torch.cuda.is_available())
    if not wants_cuda:
        return "cpu" if choice == "auto" else choice
    if not torch.cuda.is_available():
        raise ConfigError(f"device {pref!r} was requested but CUDA is not available; use 'cpu' (gloo)")
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(f"local rank {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                          "start at most one process per GPU")
    return f"cuda:{local_rank}"


@dataclass
class DistributedRun:
    """This process's place in a process group (see the module docstring)."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        """Rank 0: validates, previews, writes checkpoints and reports."""
        return self.rank == 0

    def seed(self, base: Sequence[int]) -> list[int]:
        """A numpy seed sequence for this rank: ``base`` on rank 0 (as in one process), ``base + [rank]`` else."""
        return list(base) if self.rank == 0 else [*base, self.rank]

    def torch_seed(self, base: int) -> int:
        return base + self.rank * RANK_SEED_STRIDE

    def wrap(self, method: Any, models: Mapping[str, nn.Module], ctx: Any) -> nn.Module:
        """A DistributedDataParallel module whose ``forward(batch)`` returns ``method``'s ``(loss, terms)``."""
        from torch.nn.parallel import DistributedDataParallel

        # find_unused_parameters: methods switch terms on and off (ramp-ups, tagged batches), so a
        # network may take no part in some steps; DDP then marks its parameters ready itself
        return DistributedDataParallel(MethodStep(method, models, ctx), find_unused_parameters=True)

    def sync_buffers(self, models: Mapping[str, nn.Module]) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank, as DDP does before each step."""
        import torch.distributed as dist

        for model in models.values():
            for buf in model.buffers():
                dist.broadcast(buf, 0)

    def _tensor(self, values: Sequence[float]) -> torch.Tensor:
        return torch.tensor(list(values), dtype=torch.float64 if self.backend == "gloo" else torch.float32,
                            device=self.device)

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks (every rank must call it at the same point)."""
        import torch.distributed as dist

        t = self._tensor([value])
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (every rank must call it at the same point)."""
        import torch.distributed as dist

        t = self._tensor([1.0 if flag else 0.0])
        dist.broadcast(t, 0)
        return bool(t.item() > 0.5)


class MethodStep(nn.Module):
    """One training step's forward and loss of a method, as one module for DistributedDataParallel.

    The networks are registered (a ``ModuleDict``) so DDP sees every parameter; the method still gets
    the plain dict the single-process trainer passes, and the context the trainer owns (kept here rather
    than passed to ``forward``: DDP may copy its inputs, and methods change the context).
    """

    def __init__(self, method: Any, models: Mapping[str, nn.Module], ctx: Any) -> None:
        super().__init__()
        self.nets = nn.ModuleDict(dict(models))
        self._plain = models
        self._method = method
        self._ctx = ctx

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        outputs = self._method.forward(self._plain, batch, self._ctx)
        return self._method.loss(batch, outputs, self._ctx)


def current() -> DistributedRun | None:
    """The process group this process belongs to (more than one rank), or None."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None
    backend = str(dist.get_backend())
    local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    device = f"cuda:{torch.cuda.current_device()}" if backend == "nccl" else "cpu"
    return DistributedRun(dist.get_rank(), dist.get_world_size(), local_rank, backend, device)


def init_from_env(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> DistributedRun | None:
    """Join the process group torchrun describes in the environment; None when run as one process.

    ``device`` is the person's choice (``auto``, ``cpu``, ``cuda``): CUDA gives nccl and ``cuda:LOCAL_RANK``,
    CPU gives gloo. Raises ConfigError for a device without a backend.
    """
    world = world_size_from_env()
    if world <= 1:
        return None
    import torch.distributed as dist

    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed: train in one process")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _process_device(device, local_rank)
    if dev.startswith("mps"):
        raise ConfigError(f"device {device!r} has no distributed backend: use 'cpu' (gloo) or 'cuda' (nccl)")
    backend = "nccl" if dev.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(torch.device(dev))
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return DistributedRun(dist.get_rank(), dist.get_world_size(), local_rank, backend, dev)


def shutdown() -> None:
    """Leave the process group (when this process joined one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_launch_command(nproc: int, module_args: Sequence[str]) -> list[str]:
    """The torchrun command that starts ``nproc`` local processes of ``python -m napari_labelfx module_args``.

    ``--standalone`` gives a private rendezvous on a free port of this machine; ``--local-addr 127.0.0.1``
    keeps the workers' ``MASTER_ADDR`` on the loopback address.
    """
    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "--local-addr=127.0.0.1", "-m", "napari_labelfx", *module_args]
