"""``labelfx stain-normalize``: normalise an H&E image's stains to a reference."""
from __future__ import annotations

import argparse

from .errors import fail

NAME = "stain-normalize"
HELP = "normalize an H&E image's stains (Macenko, Reinhard, Vahadane)"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``labelfx stain-normalize IN OUT --method macenko|reinhard|vahadane [--reference REF]``."""
    parser.add_argument("input", help="RGB H&E image (PNG/JPEG/TIFF/Zarr)")
    parser.add_argument("output", help="normalised image to write (.png, .jpg, .tif, .tiff or .zarr)")
    parser.add_argument("--method", default="macenko", choices=["macenko", "reinhard", "vahadane"])
    parser.add_argument("--reference", default=None,
                        help="reference RGB image to match (Macenko/Vahadane default: the built-in H&E reference; "
                             "Reinhard needs one)")
    parser.add_argument("--tile", type=int, default=2048, help="tile side for large images")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output that labelfx did not write (never the input or a folder)")
    return parser


def run(args: argparse.Namespace) -> int:
    """``labelfx stain-normalize``: normalise IN to the reference and write OUT."""
    from ..tools.stain.files import normalize_file

    try:
        out = normalize_file(args.input, args.output, args.method, args.reference, args.tile,
                             overwrite=getattr(args, "overwrite", False))
    except ValueError as exc:
        return fail(NAME, str(exc))
    print(f"{args.method} -> {out}")
    return 0
