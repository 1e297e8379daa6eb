"""``labelfx export``: a model folder as ONNX, TorchScript or a bioimage.io package."""
from __future__ import annotations

import argparse
import json

NAME = "export"
HELP = "export a model folder as ONNX, TorchScript or a bioimage.io package"


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of ``labelfx export``."""
    p.add_argument("model_dir", help="model folder written by labelfx train or the Train panel")
    p.add_argument("out", help="output file: .onnx, .pt (TorchScript) or .zip (bioimage.io package)")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript", "bioimageio"], dest="fmt",
                   help="onnx (ONNX Runtime), torchscript (torch.jit) or bioimageio (a model zoo package)")
    p.add_argument("--sample-image", default=None,
                   help="bioimageio: an image of the training run; test tensors and the cover are cut from it")
    p.add_argument("--axes", default=None, help="axis letters of --sample-image when its file does not say (e.g. YX, CYX)")
    p.add_argument("--name", default=None, help="bioimageio: model name (letters, digits, spaces, _+-())")
    p.add_argument("--description", default=None, help="bioimageio: one-line description")
    p.add_argument("--author", action="append", default=None, help="bioimageio: an author's name (repeatable)")
    p.add_argument("--license", default="CC-BY-4.0", help="bioimageio: SPDX licence id (default: %(default)s)")
    p.add_argument("--test", action="store_true",
                   help="bioimageio: run bioimageio.core's model test on the package (takes ~20 s)")
    p.add_argument("--no-check", action="store_true",
                   help="onnx/torchscript: skip the comparison with PyTorch outputs")
    return p


def run(args: argparse.Namespace) -> int:
    """Export and print ``{"output": ..., "format": ...}``."""
    from ..export import ExportError, export_model

    if args.fmt == "bioimageio":
        if not args.sample_image:
            raise ExportError("--format bioimageio needs --sample-image IMAGE (an image of the training run): "
                              "the package's test tensors and cover image are made from it")
        kwargs = {"sample_image": args.sample_image, "axes": args.axes, "name": args.name,
                  "description": args.description, "license_id": args.license, "run_test": args.test}
        if args.author:
            kwargs["authors"] = args.author
    else:
        kwargs = {"check": not args.no_check}
    out = export_model(args.model_dir, args.out, args.fmt, **kwargs)
    print(json.dumps({"output": str(out), "format": args.fmt}))
    return 0
