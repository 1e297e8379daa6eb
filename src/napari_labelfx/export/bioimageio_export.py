"""bioimage.io model packages (format 0.5) from labelfx model folders.

A package holds: the weights as a plain PyTorch state dict (``weights.pt``, loadable with
``torch.load(weights_only=True)``) with the self-contained architecture source
(``labelfx_unet.py``, class ``LabelfxUNet``) and its kwargs; ONNX and TorchScript weights converted from
them; typed axes whose tiling is set by the network's divisor ``d = 2**depth`` (step ``d``, minimum
``4 d``, output halo ``d`` so tiled predictions overlap instead of showing seams); the percentile
normalisation of config.json as preprocessing; test input/output tensors cropped from a real image;
a cover (input | prediction); a README naming method, labels, data, authors, licence and citations;
and labelfx's own config.json as the attachment ``labelfx_config.json`` (with ``config.labelfx`` in
the RDF), which lets :mod:`napari_labelfx.export.bioimageio_import` bring the model back as a labelfx
model that can be fine-tuned.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_labelfx.export import standalone_unet
from napari_labelfx.export._common import (
    ExportError,
    arch_kwargs,
    load_exportable,
    reference_probabilities,
    require,
    standalone,
)
from napari_labelfx.export.formats import OPSET, write_onnx, write_torchscript

#: Key of the RDF's ``config`` section (and attachment name) that marks a labelfx-made package.
LABELFX_KEY = "labelfx"
LABELFX_CONFIG = "labelfx_config.json"
ARCH_FILE = "labelfx_unet.py"
WEIGHTS_FILE = "weights.pt"
INPUT_ID = "raw"
OUTPUT_ID = "probabilities"
#: Minimum tile edge in divisors: leaves a valid centre of 2 divisors inside the halo of one divisor.
MIN_TILE_DIVISORS = 4
#: Largest test-tensor edge (pixels) per spatial axis: keeps packages and their model test small.
MAX_TEST_EDGE = {2: 256, 3: 64}

#: Published methods the training methods follow (README and the RDF's cite list).
METHOD_CITATIONS: dict[str, tuple[str, str | None]] = {
    "mlds": ("Reiss et al., Every Annotation Counts: Multi-label Deep Supervision for Medical Image "
             "Segmentation, CVPR 2021", "https://arxiv.org/abs/2104.13243"),
    "mlds-mt": ("Reiss et al., Every Annotation Counts: Multi-label Deep Supervision for Medical Image "
                "Segmentation, CVPR 2021", "https://arxiv.org/abs/2104.13243"),
    "dii-dcr": ("Pan et al., Label-efficient Hybrid-supervised Learning for Medical Image Segmentation, AAAI 2022",
                None),
    "chexseg": ("Gadgil et al., CheXseg: Combining Expert Annotations with DNN-generated Saliency Maps for "
                "X-ray Segmentation, MIDL 2021", None),
    "rpg": ("Seibold et al., Reference-guided Pseudo-Label Generation for Medical Semantic Segmentation, "
            "AAAI 2022", "https://arxiv.org/abs/2112.00735"),
    "rpg+": ("Seibold et al., Reference-guided Pseudo-Label Generation for Medical Semantic Segmentation, "
             "AAAI 2022", "https://arxiv.org/abs/2112.00735"),
    "fixmatch": ("Sohn et al., FixMatch: Simplifying Semi-Supervised Learning with Consistency and Confidence, "
                 "NeurIPS 2020", "https://arxiv.org/abs/2001.07685"),
    "adele": ("Liu et al., Adaptive Early-Learning Correction for Segmentation from Noisy Annotations, CVPR 2022",
              "https://arxiv.org/abs/2110.03740"),
    "sissi": ("Elbatel et al., Seamless Iterative Semi-supervised Correction of Imperfect Labels in Microscopy "
              "Images, DART 2022 (MICCAI workshop)", None),
    "stain-aglr": ("Raipuria et al., Stain-AgLr: Stain Agnostic Learning for Computational Histopathology "
                   "Using Domain Consistency and Stain Regeneration Loss, DART 2022 (MICCAI workshop)", None),
}
UNET_CITATION = ("Ronneberger, Fischer and Brox, U-Net: Convolutional Networks for Biomedical Image "
                 "Segmentation, MICCAI 2015", "10.1007/978-3-319-24574-4_28")


def method_of(config: dict[str, Any]) -> str:
    """The training method of a model folder (an imported package keeps it under ``imported_from``)."""
    imported = config.get("imported_from") if isinstance(config.get("imported_from"), dict) else {}
    return str(config.get("method") or imported.get("method") or "supervised")


def shareable_config(config: dict[str, Any]) -> dict[str, Any]:
    """config.json without the local paths a shared package should not carry (run and resume folders)."""
    out = dict(config)
    if isinstance(out.get("train_config"), dict):
        out["train_config"] = {k: v for k, v in out["train_config"].items() if k not in ("output_dir", "resume_from")}
    if isinstance(out.get("imported_from"), dict):
        out["imported_from"] = {k: v for k, v in out["imported_from"].items() if k != "package"}
    return out


def _identifier(text: str, fallback: str) -> str:
    """A Python identifier made from a class name (bioimage.io channel names must be identifiers)."""
    ident = re.sub(r"\W", "_", str(text)).strip("_") or fallback
    if ident[0].isdigit():
        ident = f"c_{ident}"
    import keyword

    return f"{ident}_" if keyword.iskeyword(ident) else ident


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out


def crop_for_test(image: np.ndarray, divisor: int, minimum: int | None = None) -> np.ndarray:
    """A central crop ``(C, *spatial)``: sizes multiples of ``divisor``, at least ``minimum`` (edge-padded)."""
    dims = image.ndim - 1
    cap = MAX_TEST_EDGE[dims]
    index: list[slice] = [slice(None)]
    pads = [(0, 0)]
    for s in image.shape[1:]:
        edge = max(minimum or divisor, (min(s, cap) // divisor) * divisor)
        start = max(0, (s - edge) // 2)
        index.append(slice(start, start + edge))
        pads.append((0, max(0, edge - s)))
    crop = np.asarray(image[tuple(index)], dtype=np.float32)
    return np.pad(crop, pads, mode="edge") if any(p[1] for p in pads) else crop


def scale_range(x: np.ndarray, low: float, high: float, eps: float = 1e-6) -> np.ndarray:
    """bioimage.io ``scale_range`` per channel over the spatial axes of ``(C, *spatial)``."""
    axes = tuple(range(1, x.ndim))
    lo = np.percentile(x, low, axis=axes, keepdims=True)
    hi = np.percentile(x, high, axis=axes, keepdims=True)
    return ((x - lo) / (hi - lo + eps)).astype(np.float32)


def _label_colours(n: int) -> np.ndarray:
    base = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60]], np.uint8)
    return base[np.arange(n) % len(base)]


def cover_image(normalised: np.ndarray, probs: np.ndarray, multilabel: bool) -> np.ndarray:
    """RGB uint8 picture: the input (left) and the predicted labels over it (right)."""
    if normalised.ndim == 4:  # volumes: the middle slice
        normalised, probs = normalised[:, normalised.shape[1] // 2], probs[:, probs.shape[1] // 2]
    grey = np.clip(normalised[:3] if normalised.shape[0] == 3 else normalised[:1], 0, 1)
    rgb = np.repeat(grey, 3, axis=0) if grey.shape[0] == 1 else grey
    rgb = (np.moveaxis(rgb, 0, -1) * 255).astype(np.uint8)
    if multilabel:
        on = probs > 0.5
        labels = np.where(on.any(0), np.argmax(probs, 0) + 1, 0)
        colours = _label_colours(probs.shape[0] + 1)
    else:
        labels = np.argmax(probs, 0)
        colours = _label_colours(probs.shape[0])
    overlay = np.where(labels[..., None] > 0, (0.45 * rgb + 0.55 * colours[labels]).astype(np.uint8), rgb)
    gap = np.full((rgb.shape[0], max(2, rgb.shape[1] // 32), 3), 255, np.uint8)
    cover = np.concatenate([rgb, gap, overlay], axis=1)
    # small test crops make thumbnails too small to see in the model zoo: enlarge (nearest) to >= 256 px high
    factor = max(1, -(-256 // cover.shape[0]))
    return np.repeat(np.repeat(cover, factor, axis=0), factor, axis=1)


def _readme(config: dict[str, Any], name: str, sample_name: str, authors: Sequence[str], license_id: str,
            shape: Sequence[int]) -> str:
    model = config["model"]
    method = method_of(config)
    classes = config.get("class_names") or [f"class {i}" for i in range(model["num_classes"])]
    norm = config.get("normalisation") or {"low": 1.0, "high": 99.8}
    train = config.get("train_config") or {}
    cite = METHOD_CITATIONS.get(method)
    lines = [
        f"# {name}",
        "",
        f"A {model['spatial_dims']}D UNet segmentation model trained with "
        f"napari-labelfx (a napari plugin) using the **{method}** training method.",
        "",
        "## Labels",
        "",
        "Output channels are " + ("independent sigmoid probabilities (multi-label)" if model.get("multilabel")
                                  else "softmax probabilities over the classes") + ":",
        "",
        *[f"- channel {i}: `{c}`" for i, c in enumerate(classes)],
        "",
        "## Training",
        "",
        f"- method: `{method}`" + (f" ({cite[0]})" if cite else ""),
        f"- iterations: {config.get('iteration', train.get('iterations', 'unknown'))}, "
        f"patch size: {train.get('patch_size', 'unknown')}, preset/architecture: depth {model['depth']}, "
        f"width {model['width']}, norm `{model['norm']}`, upsampling `{model['upsample']}`",
        *([f"- validation loss at export: {config['val_loss']:.4g}"] if isinstance(config.get("val_loss"), float) else []),
        f"- data: the annotated images of the labelfx training run; the test tensors are a crop of "
        f"`{sample_name}` (shape {list(shape)})",
        "",
        "## Input and preprocessing",
        "",
        f"- {model['in_channels']} channel(s); tiles: spatial sizes multiples of {2 ** model['depth']}, at least "
        f"{MIN_TILE_DIVISORS * 2 ** model['depth']}, with an output halo of {2 ** model['depth']} pixels",
        f"- per image and channel: `(x - p{norm.get('low', 1.0)}) / (p{norm.get('high', 99.8)} - "
        f"p{norm.get('low', 1.0)})` (bioimage.io `scale_range`, the normalisation used in training)",
        "",
        "## Validation",
        "",
        "The package's test tensors reproduce the labelfx prediction of the test input; "
        "`bioimageio test` checks every weight format against them. Validate on your own held-out "
        "images (e.g. `labelfx eval`, Dice / IoU per class) before relying on the model.",
        "",
        "## Authors and licence",
        "",
        f"- authors: {', '.join(authors)}",
        f"- licence: {license_id}",
        "",
        "## Citation",
        "",
    ]
    if cite:
        lines.append(f"- training method: {cite[0]}" + (f", {cite[1]}" if cite[1] else ""))
    lines.append(f"- architecture: {UNET_CITATION[0]}, https://doi.org/{UNET_CITATION[1]}")
    return "\n".join(lines) + "\n"


def _sample_array(sample: Any, axes: str | None, model: torch.nn.Module, config: dict[str, Any]) -> tuple[np.ndarray, str]:
    """(channels-first float32 array, display name) of an array or an image file."""
    from napari_labelfx.inference.predictor import Predictor

    if isinstance(sample, (str, os.PathLike)):
        from napari_labelfx.io.reader import read_image

        img = read_image(sample)
        data = img.data[0] if img.multiscale else img.data
        axes = axes or img.axes
        name = Path(sample).name
    else:
        data, name = sample, "the training image"
    predictor = Predictor(model, config, device="cpu", channels_last=False)
    array = predictor.to_channels_first(np.asarray(data), axes) if axes else predictor._as_chw(np.asarray(data))
    return np.asarray(array, dtype=np.float32), name


def export_bioimageio(
    model_dir: str | os.PathLike,
    out: str | os.PathLike,
    sample_image: Any,
    *,
    axes: str | None = None,
    name: str | None = None,
    description: str | None = None,
    authors: Sequence[str] = ("napari-labelfx user",),
    license_id: str = "CC-BY-4.0",
    weight_formats: Sequence[str] = ("onnx", "torchscript"),
    run_test: bool = False,
) -> Path:
    """Write a bioimage.io model package (``.zip``) of a model folder.

    Parameters
    ----------
    model_dir : labelfx model folder (model.safetensors + config.json).
    out : output ``.zip`` path.
    sample_image : an image of the training run: an array (channels-first, or with ``axes``) or an image
        file; the test tensors and the cover are made from a central crop of it.
    axes : axis letters of ``sample_image`` (e.g. ``"YX"``, ``"CYX"``, ``"ZYX"``); files bring their own.
    name, description, authors, license_id : package metadata (SPDX licence id).
    weight_formats : extra weight entries converted from the state dict (``"onnx"``, ``"torchscript"``).
    run_test : run bioimageio.core's model test on the written package and raise if it fails.
    """
    require("bioimageio.spec", "bioimage.io export")
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as bio

    out = Path(out)
    if out.suffix != ".zip":
        raise ExportError(f"{out}: a bioimage.io package is a .zip file; give an output path ending in .zip")
    try:
        bio.LicenseId(license_id)
    except ValueError:
        raise ExportError(f"unknown licence {license_id!r}: give an SPDX id such as CC-BY-4.0, MIT or BSD-3-Clause") from None
    model, config = load_exportable(model_dir)
    mcfg = config["model"]
    dims, div = int(mcfg["spatial_dims"]), 2 ** int(mcfg["depth"])
    unknown = sorted(set(weight_formats) - {"onnx", "torchscript"})
    if unknown:
        raise ExportError(f"unknown extra weight formats {unknown}; choose from onnx, torchscript")
    raw, sample_name = _sample_array(sample_image, axes, model, config)
    norm = config.get("normalisation") or {"low": 1.0, "high": 99.8}
    low, high = float(norm.get("low", 1.0)), float(norm.get("high", 99.8))
    crop = crop_for_test(raw, div, MIN_TILE_DIVISORS * div)
    normalised = scale_range(crop, low, high)
    probs = reference_probabilities(model, torch.from_numpy(normalised[None]))
    method = method_of(config)
    name = name or f"labelfx {method} UNet {dims}D"
    name = re.sub(r"[^A-Za-z0-9_+\- ()]", " ", name).strip()[:128].ljust(5, "_")
    classes = config.get("class_names") or [f"class{i}" for i in range(mcfg["num_classes"])]
    spatial = ["z", "y", "x"][3 - dims:]

    with tempfile.TemporaryDirectory(prefix="labelfx-bioimageio-") as tmpdir:
        work = Path(tmpdir)
        weights = work / WEIGHTS_FILE
        # the state dict of the labelfx network (same keys as LabelfxUNet): plain tensors, weights_only-safe
        torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, weights)
        shutil.copyfile(standalone_unet.__file__, work / ARCH_FILE)
        np.save(work / "test_input.npy", crop[None])
        np.save(work / "test_output.npy", probs.astype(np.float32))
        import imageio.v3 as iio

        iio.imwrite(work / "cover.png", cover_image(normalised, probs[0], bool(mcfg.get("multilabel"))))
        (work / "README.md").write_text(
            _readme(config, name, sample_name, list(authors), license_id, crop.shape), encoding="utf-8")
        (work / LABELFX_CONFIG).write_text(json.dumps(shareable_config(config), indent=2, default=str),
                                           encoding="utf-8")

        example = torch.from_numpy(normalised[None])
        torch_version = bio.Version(torch.__version__.split("+")[0])
        entries: dict[str, Any] = {}
        if "torchscript" in weight_formats:
            write_torchscript(standalone(model, config, exact_size=True), example, work / "weights_torchscript.pt")
            entries["torchscript"] = bio.TorchscriptWeightsDescr(
                source=work / "weights_torchscript.pt", pytorch_version=torch_version, parent="pytorch_state_dict")
        if "onnx" in weight_formats:
            write_onnx(standalone(model, config, exact_size=True), example, work / "weights.onnx")
            entries["onnx"] = bio.OnnxWeightsDescr(
                source=work / "weights.onnx", opset_version=OPSET, parent="pytorch_state_dict")

        input_axes: list[Any] = [bio.BatchAxis(), bio.ChannelAxis(channel_names=[
            bio.Identifier(f"channel{i}") for i in range(int(mcfg["in_channels"]))])]
        input_axes += [bio.SpaceInputAxis(id=bio.AxisId(a), size=bio.ParameterizedSize(
            min=MIN_TILE_DIVISORS * div, step=div))
                       for a in spatial]
        channel_names = _unique([_identifier(c, f"class{i}") for i, c in enumerate(classes)])
        output_axes: list[Any] = [bio.BatchAxis(), bio.ChannelAxis(channel_names=[
            bio.Identifier(c) for c in channel_names])]
        # the halo: consumers that tile crop it from each block, so borders come from overlapping context
        output_axes += [bio.SpaceOutputAxisWithHalo(id=bio.AxisId(a), halo=div, size=bio.SizeReference(
            tensor_id=bio.TensorId(INPUT_ID), axis_id=bio.AxisId(a))) for a in spatial]
        float32 = bio.EnsureDtypeDescr(kwargs=bio.EnsureDtypeKwargs(dtype="float32"))
        inputs = [bio.InputTensorDescr(
            id=bio.TensorId(INPUT_ID), axes=input_axes, description="raw image, any intensity range",
            test_tensor=bio.FileDescr(source=work / "test_input.npy"),
            data=bio.IntervalOrRatioDataDescr(type="float32"),
            preprocessing=[float32, bio.ScaleRangeDescr(kwargs=bio.ScaleRangeKwargs(
                axes=[bio.AxisId(a) for a in spatial], min_percentile=low, max_percentile=high))],
        )]
        outputs = [bio.OutputTensorDescr(
            id=bio.TensorId(OUTPUT_ID), axes=output_axes,
            description="sigmoid probability per class" if mcfg.get("multilabel") else "class probabilities (softmax)",
            test_tensor=bio.FileDescr(source=work / "test_output.npy"),
            data=bio.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
            postprocessing=[float32],
        )]
        cite = [bio.CiteEntry(text=UNET_CITATION[0], doi=bio.Doi(UNET_CITATION[1]))]
        method_cite = METHOD_CITATIONS.get(method)
        if method_cite and method_cite[1]:
            cite.insert(0, bio.CiteEntry(text=method_cite[0], url=bio.HttpUrl(method_cite[1])))
        descr = _validated(bio.ModelDescr,
            name=name,
            description=description or (
                f"{dims}D UNet segmenting {', '.join(map(str, classes[1:] if not mcfg.get('multilabel') else classes))}"
                f", trained with napari-labelfx ({method})"),
            authors=[bio.Author(name=a.replace("/", " ")) for a in authors],
            cite=cite,
            license=bio.LicenseId(license_id),
            documentation=bio.FileDescr(source=work / "README.md"),
            covers=[bio.FileDescr(source=work / "cover.png")],
            tags=["napari-labelfx", "unet", "segmentation", f"{dims}d", method],
            attachments=[bio.FileDescr(source=work / LABELFX_CONFIG)],
            inputs=inputs,
            outputs=outputs,
            weights=bio.WeightsDescr(
                pytorch_state_dict=bio.PytorchStateDictWeightsDescr(
                    source=weights,
                    architecture=bio.ArchitectureFromFileDescr(
                        source=work / ARCH_FILE, callable=bio.Identifier("LabelfxUNet"), kwargs=arch_kwargs(config)),
                    pytorch_version=torch_version,
                ),
                **entries,
            ),
            config={LABELFX_KEY: {"config": LABELFX_CONFIG, "method": method, "format": 1}},
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        save_bioimageio_package(descr, output_path=out)
    if run_test:
        run_model_test(out)
    return out


def _validated(cls: Any, **fields: Any) -> Any:
    """Build a bioimage.io description; its (long, nested) validation errors become one line."""
    from pydantic import ValidationError

    try:
        return cls(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        raise ExportError(f"the bioimage.io description is invalid at {where or 'the top'}: "
                          f"{str(first.get('msg'))[:200]}") from None


def run_model_test(package: str | os.PathLike, weight_format: str | None = None) -> Any:
    """Run bioimageio.core's model test on a package; raise :class:`ExportError` unless it passes."""
    core = require("bioimageio.core", "Testing a bioimage.io package")
    summary = core.test_model(str(package), weight_format=weight_format, devices=["cpu"])
    if summary.status != "passed":
        failed = [d for d in summary.details if d.status == "failed"]
        detail = "; ".join(f"{d.name}: {[e.msg for e in d.errors][:2]}" for d in failed[:3])
        raise ExportError(f"{package}: bioimage.io model test {summary.status}: {detail}")
    return summary
