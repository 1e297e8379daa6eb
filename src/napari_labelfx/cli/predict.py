"""``labelfx predict``: apply a model folder (or a bioimage.io package) to an image, volume or Zarr store."""
from __future__ import annotations

import argparse
import json

import numpy as np

NAME = "predict"
HELP = "apply a saved model to an image, volume or Zarr store"


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of ``labelfx predict``."""
    p.add_argument("--model", required=True,
                   help="model folder written by labelfx train or the Train panel, or a bioimage.io package (.zip)")
    p.add_argument("input", help="image file, volume, Zarr or OME-Zarr (level 0 is used)")
    p.add_argument("output", help="output labels file: .tif/.tiff or .zarr (Zarr streams chunk by chunk)")
    p.add_argument("--confidence", default=None, help="also write the confidence map to this .tif or .zarr")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    p.add_argument("--tile", type=int, default=None, help="tile edge length (default: the training patch size)")
    p.add_argument("--device", default="auto")
    p.add_argument("--objects", action="store_true",
                   help="write one id per object (touching objects split by a watershed) instead of class "
                        "indices; the whole image is predicted in memory")
    p.add_argument("--object-classes", default=None, metavar="NAMES",
                   help="with --objects: comma-separated classes that are objects (default: every foreground class)")
    dist = p.add_argument_group(
        "distributed prediction (dask.distributed; see docs/distributed.md)",
        "Predict a Zarr/OME-Zarr or TIFF input block by block on several workers into a .zarr output; the "
        "result equals the single-process one, and a run started again skips the blocks already finished.")
    dist.add_argument("--workers", type=int, default=None, metavar="N",
                      help="start a local dask cluster of N worker processes (one task each, on 127.0.0.1)")
    dist.add_argument("--scheduler", default=None, metavar="ADDRESS",
                      help="use an existing dask cluster, e.g. tcp://10.0.0.5:8786 (workers must see the input, "
                           "the model and the output folder at the same paths)")
    dist.add_argument("--block", default=None, metavar="SIZE",
                      help="block edge length, or one per spatial axis as Z,Y,X (default: about 16 M pixels, "
                           "rounded to whole output chunks)")
    dist.add_argument("--pyramid", action="store_true",
                      help="write an OME-Zarr multiscale pyramid (Y and X halved per level) for napari")
    dist.add_argument("--threads", type=int, default=None, metavar="N",
                      help="torch threads per worker (default: cores / workers on a local cluster)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output or confidence file/Zarr store that labelfx did not write "
                        "(the input and plain folders are never replaced)")
    return p


def run(args: argparse.Namespace) -> int:
    """Apply a model folder to one input; Zarr outputs are streamed."""
    from ..io.reader import read_image
    from ..io.safety import check_destination, check_distinct
    from ..io.writer import write_image, write_labels

    # refuse outputs that would destroy data (the input, a folder, someone's file) before any work
    outputs = {"output": args.output, "confidence": args.confidence}
    check_distinct(outputs)
    if getattr(args, "workers", None) is not None or getattr(args, "scheduler", None):
        return _run_distributed(args)  # checks its outputs itself (its own earlier output may be replaced)
    if getattr(args, "pyramid", False) or getattr(args, "block", None) or getattr(args, "threads", None):
        raise ValueError("--pyramid, --block and --threads need --workers N or --scheduler ADDRESS")
    for what, path in outputs.items():
        if path is not None:
            check_destination(path, inputs=(args.input, args.model), overwrite=args.overwrite, what=what)
    if args.tile is not None and args.tile < 1:
        raise ValueError(f"--tile must be a positive number of pixels, got {args.tile}")
    from ..export.bioimageio_import import open_predictor  # also bioimage.io packages

    pred = open_predictor(args.model, device=args.device)
    img = read_image(args.input)
    data = img.data[0] if img.multiscale else img.data
    chw = pred.to_channels_first(data, img.axes)
    out = str(args.output)
    # a 2D model predicts a volume slice by slice: its tiles stay 2D
    roi = (args.tile,) * pred.spatial_dims if args.tile else None
    if getattr(args, "objects", False):
        from ..inference.objects import object_class_indices, objects_from_prediction

        classes = object_class_indices(pred.class_names, args.object_classes)
        result = pred(np.asarray(chw), roi_size=roi, tta=args.tta)
        ids = objects_from_prediction(result, classes)
        write_labels(out, ids, scale=img.spatial_scale, overwrite=args.overwrite,
                     metadata={"objects": int(ids.max(initial=0))})
        if args.confidence:
            write_image(args.confidence, np.asarray(result.confidence, np.float32), scale=img.spatial_scale,
                        overwrite=args.overwrite)
        print(json.dumps({"output": out, "shape": list(chw.shape[1:]), "objects": int(ids.max(initial=0))}))
        return 0
    if out.endswith(".zarr"):
        pred.predict_to_zarr(chw, out, roi_size=roi, tta=args.tta, confidence_path=args.confidence,
                             overwrite=args.overwrite)
    else:
        result = pred(np.asarray(chw), roi_size=roi, tta=args.tta)
        write_labels(out, np.asarray(result.labels), scale=img.spatial_scale, overwrite=args.overwrite)
        if args.confidence:
            write_image(args.confidence, np.asarray(result.confidence, np.float32), scale=img.spatial_scale,
                        overwrite=args.overwrite)
    print(json.dumps({"output": out, "shape": list(chw.shape[1:])}))
    return 0


def _parse_block(text: str | None) -> int | tuple[int, ...] | None:
    if text is None:
        return None
    try:
        sizes = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"--block expects a size or sizes like 64,512,512, got {text!r}") from None
    if any(v < 1 for v in sizes):
        raise ValueError(f"--block sizes must be positive, got {text!r}")
    return sizes[0] if len(sizes) == 1 else sizes


def _run_distributed(args: argparse.Namespace) -> int:
    """``--workers``/``--scheduler``: block-wise prediction on a dask cluster (napari_labelfx.inference.distributed)."""
    import sys

    from tqdm import tqdm

    from ..export.bioimageio_import import is_bioimageio_package, labelfx_section, resolve_model
    from ..inference.distributed import predict_distributed

    if args.workers is not None and args.scheduler:
        raise ValueError("give either --workers (a local cluster) or --scheduler (an existing one), not both")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.tile is not None and args.tile < 1:
        raise ValueError(f"--tile must be a positive number of pixels, got {args.tile}")
    block = _parse_block(args.block)
    model = args.model
    if is_bioimageio_package(model):  # a labelfx-made package: its model folder (others are refused)
        if labelfx_section(model) is None:
            raise ValueError(f"{model}: distributed prediction needs a labelfx model folder; a bioimage.io "
                             "package not made by labelfx runs through its own pipeline: predict it without "
                             "--workers/--scheduler")
        model = str(resolve_model(model))
    with tqdm(total=0, desc="blocks", unit="step", file=sys.stderr, disable=None) as bar:
        summary = predict_distributed(
            model, args.input, args.output, workers=args.workers, scheduler=args.scheduler,
            threads=args.threads, device=args.device, roi_size=args.tile, tta=args.tta or None, block=block,
            confidence=args.confidence, objects=bool(args.objects), object_classes=args.object_classes,
            pyramid=bool(args.pyramid), progress=bar, overwrite=args.overwrite)
    print(json.dumps(summary))
    return 0
