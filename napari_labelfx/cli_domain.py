"""Domain-tool subcommands of ``labelfx``: ``skin-tone``, ``stain-normalize`` and ``debias``.

Each subcommand is an ``add_<name>_arguments(parser)`` / ``run_<name>(args) -> int`` pair that
``cli.py`` wires in. Errors a person can fix (bad files, columns, methods) are ``ValueError``
subclasses with the file named; ``run_*`` turns them into a message on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

#: Extensions written through OpenCV (8-bit RGB); everything else goes through ``io.write_image``.
_CV_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _fail(message: str) -> int:
    print(f"labelfx: error: {message}", file=sys.stderr)
    return 2


# -- skin-tone ---------------------------------------------------------------------------------------


def add_skin_tone_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``labelfx skin-tone FOLDER --out table.csv [--hist types.png]``."""
    parser.add_argument("folder", help="folder of RGB dermoscopy/clinical images (not recursive)")
    parser.add_argument("--out", required=True, help="CSV table to write (file, ita, fitzpatrick, patch ITAs)")
    parser.add_argument("--hist", default=None, help="also write a PNG histogram of the Fitzpatrick types")
    parser.add_argument("--no-hair-removal", action="store_true", help="skip black-hat hair removal")
    parser.add_argument("--skip-errors", action="store_true",
                        help="record unreadable images in the CSV's error column instead of stopping")
    return parser


def _check_report_paths(*paths: str | None) -> None:
    """Report files (CSV, JSON, PNG) must be writable and must not be folders; checked before work."""
    from .io.errors import LabelfxIOError
    from .io.safety import check_writable

    for path in paths:
        if path is None:
            continue
        check_writable(path)
        if Path(path).is_dir():
            raise LabelfxIOError(path, "is a folder; give a file name for the report")


def run_skin_tone(args: argparse.Namespace) -> int:
    """Estimate ITA and Fitzpatrick type of every image in a folder; write the CSV (and histogram)."""
    from .tools.skin_tone import estimate_folder, plot_fitzpatrick_histogram, write_csv

    try:
        _check_report_paths(args.out, args.hist)  # before measuring a whole folder
        rows = estimate_folder(args.folder, on_error="record" if args.skip_errors else "raise",
                               hair_removal=not args.no_hair_removal)
        out = write_csv(rows, args.out)
        types = [r["fitzpatrick"] for r in rows]
        if args.hist:
            plot_fitzpatrick_histogram(types, args.hist, title=f"Fitzpatrick types of {Path(args.folder).name}")
    except ValueError as exc:
        return _fail(str(exc))
    failed = sum(1 for r in rows if r.get("error"))
    print(f"{len(rows) - failed} image(s) measured, {failed} failed -> {out}" + (f", histogram {args.hist}" if args.hist else ""))
    return 0


# -- stain-normalize ---------------------------------------------------------------------------------


def add_stain_normalize_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
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


def read_rgb(path: str | Path) -> Any:
    """An RGB image ``(Y, X, 3)`` (numpy, or a lazy array for big files); clear error otherwise."""
    from .io import read_image
    from .tools.stain import StainInputError

    image = read_image(path)
    if image.multiscale:
        raise StainInputError(f"{path}: multiscale images are not supported here; pass level 0 as its own file")
    if image.axes != "YXS" or image.data.shape[-1] not in (3, 4):
        raise StainInputError(f"{path}: expected a 2-D RGB image, got axes {image.axes!r} and shape {image.data.shape}")
    return image.data


def write_rgb(path: str | Path, rgb: np.ndarray, overwrite: bool = False) -> Path:
    """Write a uint8 RGB image atomically: PNG/JPEG/BMP through OpenCV, TIFF/Zarr through ``io``.

    An existing file labelfx did not write is replaced only with ``overwrite`` (see `io.safety`).
    """
    import cv2

    from .io import atomic_path, write_image

    from .io.safety import check_destination

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _CV_SUFFIXES:
        check_destination(path, overwrite=overwrite)  # PNG/JPEG carry no labelfx mark: existing = foreign
        ok, buf = cv2.imencode(suffix, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError(f"{path}: OpenCV could not encode the image")
        with atomic_path(path) as tmp:
            tmp.write_bytes(buf.tobytes())
        return path
    return write_image(path, np.asarray(rgb), axes="YXS", unit=None, overwrite=overwrite)


def normalize_file(input_path: str | Path, output_path: str | Path, method: str = "macenko",
                   reference: str | Path | None = None, tile: int = 2048, overwrite: bool = False) -> Path:
    """Stain-normalise one image file into another (tiled, one set of statistics per image).

    The output is checked before any work: never the input or the reference, never a folder, and an
    existing file labelfx did not write only with ``overwrite``.
    """
    from .io.safety import check_destination
    from .tools.stain import StainError, make_normalizer

    check_destination(output_path, inputs=(input_path, reference), overwrite=overwrite)
    norm = make_normalizer(method)
    if reference is not None:
        norm.fit(np.asarray(read_rgb(reference))[..., :3], name=str(reference))
    elif method == "reinhard":
        raise StainError("Reinhard normalisation needs --reference (it has no built-in target)")
    image = read_rgb(input_path)
    if image.shape[-1] == 4:
        image = np.asarray(image)[..., :3]
    out = norm.normalize_tiled(image, tile=int(tile), name=str(input_path))
    return write_rgb(output_path, out, overwrite=overwrite)


def run_stain_normalize(args: argparse.Namespace) -> int:
    """``labelfx stain-normalize``: normalise IN to the reference and write OUT."""
    try:
        out = normalize_file(args.input, args.output, args.method, args.reference, args.tile,
                             overwrite=getattr(args, "overwrite", False))
    except ValueError as exc:
        return _fail(str(exc))
    print(f"{args.method} -> {out}")
    return 0


# -- debias ------------------------------------------------------------------------------------------


def add_debias_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``labelfx debias --dataset DIR --label-column COL --scheme tabe ...``."""
    parser.add_argument("--dataset", required=True, help="dataset folder with images/ and labels.csv")
    parser.add_argument("--label-column", required=True, help="labels.csv column with the image-level class")
    parser.add_argument("--positive", default=None, help="value counted as positive (default: least frequent)")
    parser.add_argument("--skin-column", default=None,
                        help="labels.csv column with Fitzpatrick types 1..6 or I..VI (default: estimate by ITA)")
    parser.add_argument("--scheme", default="tabe", choices=["none", "lntl", "tabe", "clgr"])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="images are resized to this square side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    return parser


def format_debias_report(report: dict[str, Any]) -> str:
    """A small text table: overall and per skin type AUC / accuracy on the held-out images."""
    test = report["test"]
    lines = [f"scheme {report['config']['scheme']}, positive = {report['positive']!r}, skin types from "
             f"{report['skin_source']}; train {report['n_train']}, test {report['n_test']} images",
             f"{'group':<10}{'n':>4}{'AUC':>8}{'acc':>8}",
             f"{'all':<10}{test['n']:>4}{test['auc']:>8.3f}{test['accuracy']:>8.3f}"]
    for t, m in test["per_skin_type"].items():
        lines.append(f"{'type ' + t:<10}{m['n']:>4}{m['auc']:>8.3f}{m['accuracy']:>8.3f}")
    lines.append("AUC is nan where a group holds one class only; a few dozen images cannot show a fairness gain.")
    return "\n".join(lines)


def run_debias(args: argparse.Namespace) -> int:
    """Train the debiased image-level classifier and print AUC/accuracy per skin type."""
    import torch

    from .engine.classifier import ClassifierConfig, load_classification_data, train_and_evaluate
    from .io import atomic_path

    try:
        _check_report_paths(args.out)  # before training, not after it
        config = ClassifierConfig(scheme=args.scheme, iterations=args.iters, batch_size=args.batch,
                                  seed=args.seed, device=args.device)
        data = load_classification_data(args.dataset, args.label_column, args.positive, args.skin_column, args.size)
    except ValueError as exc:
        return _fail(str(exc))
    torch.manual_seed(args.seed)
    report = train_and_evaluate(data, config, log=lambda m: print(m, flush=True))
    print(format_debias_report(report))
    if args.out:
        with atomic_path(Path(args.out)) as tmp:
            tmp.write_text(json.dumps(report, indent=2, default=float), encoding="utf-8")
    return 0
