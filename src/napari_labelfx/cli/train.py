"""``labelfx train``: train a model from image and label files or a dataset folder (the Train panel's batch side)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .errors import parse_method_params

NAME = "train"
HELP = "train a model from images and label files or a dataset folder"


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of ``labelfx train``."""
    src = p.add_argument_group("data (either --images/--labels or --dataset)")
    src.add_argument("--images", nargs="+", default=None, help="image files (TIFF, OME-TIFF, Zarr, PNG)")
    src.add_argument("--labels", nargs="+", default=None, help="label files, one per image, same order")
    src.add_argument("--kind", default="strong", choices=["strong", "scribble", "weak", "noisy"],
                     help="what the label files are (default: %(default)s)")
    src.add_argument("--classes", default=None,
                     help="comma-separated foreground class names, label values 1..N (default: 'foreground')")
    src.add_argument("--dataset", default=None, help="a dataset folder (images/, masks/, meta.json): all masks strong")
    p.add_argument("--out", required=True, help="output model folder (best/ and last/ checkpoints)")
    p.add_argument("--method", default="supervised", help="training method (default: %(default)s)")
    p.add_argument("--preset", default="small", choices=["small", "medium", "large"])
    p.add_argument("--iters", type=int, default=None, help="training iterations")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--patch", type=int, default=None, help="patch edge length in pixels")
    p.add_argument("--spatial", default="2d", choices=["2d", "3d"], help="2d: images or annotated slices; 3d: 3D patches")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", default=None, help="a model folder to continue training from")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="method parameter (repeatable), e.g. --param lambda_ds=1.0")
    p.add_argument("--nproc", type=int, default=1,
                   help="train in N local processes with DistributedDataParallel (gloo on CPU, nccl on CUDA: one "
                        "GPU each); --batch is per process. Several nodes: torchrun ... -m napari_labelfx train "
                        "(docs/distributed_training.md)")
    return p


def _class_names(args: argparse.Namespace) -> list[str]:
    names = [s.strip() for s in (args.classes or "foreground").split(",") if s.strip()]
    return ["background", *names]


def items_from_files(images: list[str], labels: list[str], kind: str, class_names: list[str]) -> list:
    """Read image and label files into engine items through the annotation model."""
    from ..annotations.class_table import default_class_table
    from ..annotations.model import AnnotatedImage, AnnotationLayer, AnnotationSet
    from ..io.reader import read_image

    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} label files: give one label file per image")
    table = default_class_table(class_names[1:])
    annotated = []
    for img_path, lab_path in zip(images, labels):
        img = read_image(img_path)
        lab = read_image(lab_path)
        data = np.asarray(img.data[0] if img.multiscale else img.data)
        lab_data = np.asarray(lab.data[0] if lab.multiscale else lab.data)
        layer = AnnotationLayer(name=Path(lab_path).name, kind=kind, data=lab_data)
        annotated.append(AnnotatedImage(name=Path(img_path).stem, image=data, axes=img.axes, layers=[layer]))
    return AnnotationSet(table, annotated).training_items()


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` less its ``--nproc N`` / ``--nproc=N``."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def _launch_local(args: argparse.Namespace) -> int:
    """Start ``args.nproc`` processes of this command through torchrun and wait for them.

    torchrun (``python -m torch.distributed.run --standalone``) rather than our own multiprocessing: the
    local and the several-node runs are then the same code path (each process only reads torchrun's
    environment), and torchrun already ends every process when one fails and passes Ctrl-C on.
    """
    import os
    import subprocess

    from ..engine.distributed import local_launch_command

    argv = _without_nproc(list(getattr(args, "argv", None) or []))
    if not argv or argv[0] != NAME:
        raise ValueError("--nproc needs the command line of labelfx train (run it as a command)")
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:  # torchrun would set 1: share this machine's cores between the processes
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.nproc))
    if sys.platform.startswith("linux") and "GLOO_SOCKET_IFNAME" not in env and os.path.exists("/sys/class/net/lo"):
        env["GLOO_SOCKET_IFNAME"] = "lo"  # one machine: gloo talks over the loopback interface only
    rc = subprocess.run(local_launch_command(args.nproc, argv), env=env).returncode
    if rc != 0:
        raise ValueError(f"training in {args.nproc} processes failed (torchrun exit code {rc}); "
                         "the first process's message is above")
    return 0


def run(args: argparse.Namespace) -> int:
    """Train from files or a dataset folder and write the model folder."""
    from tqdm import tqdm

    from ..engine import TrainConfig, distributed
    from ..methods import available_methods, create_method

    # every setting goes through TrainConfig (and the method's parameter checks) before any data is
    # read: a bad value is one clear line, never a silent default or a numpy traceback
    settings = {"iterations": args.iters, "lr": args.lr, "batch_size": args.batch, "resume_from": args.resume,
                "patch_size": None if args.patch is None else (args.patch,) * (3 if args.spatial == "3d" else 2)}
    cfg = TrainConfig(method=args.method, preset=args.preset, spatial=args.spatial, device=args.device,
                      seed=args.seed, output_dir=str(args.out), method_params=parse_method_params(args.method, args.param),
                      **{k: v for k, v in settings.items() if v is not None})
    if cfg.method in available_methods():  # the method's checks across parameters (e.g. its TTA views)
        create_method(cfg.method, cfg.method_params)
    nproc = int(getattr(args, "nproc", 1) or 1)
    world = distributed.world_size_from_env()
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    if nproc > 1 and world > 1:
        raise ValueError("--nproc starts its own processes: leave it out when launching with torchrun")
    distributed.check_config(cfg, max(nproc, world))  # refusals before any process starts
    if nproc > 1:
        return _launch_local(args)
    try:
        dist = distributed.init_from_env(args.device)  # None in one process
        if dist is not None:
            cfg = dataclasses.replace(cfg, device=dist.device)
        return _train(args, cfg, dist is None or dist.is_main, tqdm)
    finally:
        distributed.shutdown()


def _train(args: argparse.Namespace, cfg: Any, main: bool, tqdm: Any) -> int:
    """Read the data, train, write the model folder (``main``: this process reports)."""
    if args.dataset:
        from ..annotations.dataset_items import dataset_class_names, strong_items
        from ..io.dataset import load_dataset

        ds = load_dataset(args.dataset)
        class_names = dataset_class_names(ds)
        items = strong_items(ds)
        multilabel = ds.multilabel
    else:
        if not args.images or not args.labels:
            raise ValueError("give --images and --labels, or --dataset")
        class_names = _class_names(args)
        items = items_from_files(args.images, args.labels, args.kind, class_names)
        multilabel = False
    from ..methods.suitability import item_kinds, kind_mismatch

    mismatch = kind_mismatch(cfg.method, item_kinds(items))
    if mismatch and main:  # trains anyway, but not silently
        print(f"labelfx train: warning: {mismatch}", file=sys.stderr)
    from ..data.label_warnings import training_data_warnings

    for warning in training_data_warnings(items, class_names) if main else []:  # valid, but probably not meant
        print(f"labelfx train: warning: {warning}", file=sys.stderr)
    t0 = time.time()
    from ..engine.factory import make_trainer

    trainer = make_trainer(cfg, items, class_names, multilabel=multilabel)
    from ..engine.trainer import TrainingFailed

    try:
        with tqdm(total=cfg.iterations, desc=f"labelfx train ({cfg.method})", unit="it", disable=not main) as bar:
            result = trainer.run(progress=bar)
    except TrainingFailed as exc:
        raise ValueError(f"training failed: {exc.reason}") from None
    if not main:
        return 0
    print(json.dumps({"best": str(result.best_dir), "last": str(result.last_dir),
                      "seconds": round(time.time() - t0, 1), "reason": result.stopped_reason}))
    return 0
