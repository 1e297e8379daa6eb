"""bioimage.io packages brought back in: labelfx-made ones as model folders, foreign ones for prediction.

* A package written by :func:`~napari_labelfx.export.bioimageio_export.export_bioimageio` (``config.labelfx``
  in its RDF) becomes a labelfx model folder again (``model.safetensors`` + ``config.json``): predict,
  export, and fine-tune it with any method (``labelfx train --resume FOLDER`` or ``--resume PACKAGE.zip``).
  Reading it needs only the standard library, PyYAML and torch.
* Any other model package predicts through bioimageio.core's own pipeline (its preprocessing, tiling
  from its axes and postprocessing): :class:`BioimageioPredictor`, which answers like
  :class:`~napari_labelfx.inference.Predictor`.

Nothing is unpickled: PyTorch weights are read with ``torch.load(weights_only=True)`` after checking
that the file is a torch zip archive, so a bare pickle, or one that names any Python object besides
tensors, is refused with a :class:`~napari_labelfx.export.ExportError` before any of its code runs.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_labelfx.export._common import ExportError, require

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
#: Where imported labelfx packages are unpacked unless told otherwise (overridable for tests and CI).
CACHE_ENV = "LABELFX_CACHE_DIR"


# -- reading packages ----------------------------------------------------------------------------------
def _zip_rdf_name(zf: zipfile.ZipFile) -> str | None:
    names = set(zf.namelist())
    for name in RDF_NAMES:
        if name in names:
            return name
    found = sorted(n for n in names if n.endswith(".bioimageio.yaml") and "/" not in n)
    return found[0] if found else None


def is_bioimageio_package(path: str | os.PathLike) -> bool:
    """True for a bioimage.io package: a .zip with an RDF, an RDF file, or a folder with one (and no config.json)."""
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path) and path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            return _zip_rdf_name(zf) is not None
    if path.is_file():
        return path.name in RDF_NAMES or path.name.endswith(".bioimageio.yaml")
    if path.is_dir() and not (path / "config.json").exists():
        return any((path / n).is_file() for n in RDF_NAMES)
    return False


class _Package:
    """Files of a package (zip, folder or RDF path) by their names in the RDF."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_file() and zipfile.is_zipfile(path):
            self._zip = zipfile.ZipFile(path)
            rdf_name = _zip_rdf_name(self._zip)
            if rdf_name is None:
                raise ExportError(f"{path}: a .zip without rdf.yaml or bioimageio.yaml is not a bioimage.io package")
            self.root: Path | None = None
        else:
            self.root = path if path.is_dir() else path.parent
            rdf_name = next((n for n in RDF_NAMES if (self.root / n).is_file()), None) if path.is_dir() else path.name
            if rdf_name is None:
                raise ExportError(f"{path}: no rdf.yaml or bioimageio.yaml here")
        import yaml

        try:
            rdf = yaml.safe_load(self.read(rdf_name).decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ExportError(f"{path}: cannot read its {rdf_name}: {exc}") from exc
        if not isinstance(rdf, dict) or rdf.get("type") != "model":
            kind = rdf.get("type") if isinstance(rdf, dict) else None
            raise ExportError(f"{path}: {rdf_name} does not describe a model (type: {kind!r})")
        self.rdf: dict[str, Any] = rdf

    def read(self, name: str, sha256: str | None = None) -> bytes:
        if "://" in name:
            raise ExportError(f"{self.path}: {name} is a remote file; only self-contained packages are read offline")
        try:
            if self._zip is not None:
                data = self._zip.read(name)
            else:
                assert self.root is not None
                data = (self.root / name).read_bytes()
        except (KeyError, OSError) as exc:
            raise ExportError(f"{self.path}: the package lacks {name}") from exc
        if sha256 and hashlib.sha256(data).hexdigest() != sha256:
            raise ExportError(f"{self.path}: {name} does not match its sha256 in the RDF (changed after packaging)")
        return data

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _source(entry: Any) -> tuple[str, str | None]:
    """(file name, sha256) of an RDF file entry (a dict with ``source`` or a bare string)."""
    if isinstance(entry, dict):
        return str(entry.get("source")), entry.get("sha256")
    return str(entry), None


def safe_state_dict(data: bytes, where: str) -> dict[str, torch.Tensor]:
    """Tensors of a ``torch.save`` state dict, refusing anything that would need arbitrary unpickling."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        # torch writes zip archives since 1.6; anything else is a bare pickle (or not weights at all)
        raise ExportError(
            f"{where}: refusing these weights: not a PyTorch zip archive but a bare pickle (or unknown data); "
            "pickles can run code when loaded, so only plain state dicts saved by torch.save are accepted")
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ExportError(
            f"{where}: refusing these weights: they hold Python objects besides tensors, which would need "
            f"unpickling arbitrary code ({str(exc).splitlines()[0]})") from exc
    except Exception as exc:  # corrupt archive: torch raises RuntimeError/EOFError/...
        raise ExportError(f"{where}: cannot read the weights: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise ExportError(f"{where}: the weights are not a state dict (a dict of name -> tensor)")
    return obj


def labelfx_section(package: str | os.PathLike) -> dict[str, Any] | None:
    """The RDF's ``config.labelfx`` section (None for packages labelfx did not write)."""
    pkg = _Package(Path(package))
    try:
        section = (pkg.rdf.get("config") or {}).get("labelfx")
        return section if isinstance(section, dict) else None
    finally:
        pkg.close()


def _cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "napari-labelfx"


def import_bioimageio(package: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Path:
    """Turn a labelfx-made bioimage.io package into a labelfx model folder and return its path.

    ``out_dir`` defaults to a folder named after the package's sha256 under ``$LABELFX_CACHE_DIR``
    (default ``~/.cache/napari-labelfx``)``/bioimageio/``; an existing import there is reused.
    The imported config.json keeps the training method under ``imported_from`` and clears
    ``method``, so the model can be fine-tuned with any method.
    """
    from napari_labelfx.models import ModelConfig, build_model
    from napari_labelfx.models.checkpoint import CONFIG_FILE, MODEL_FILE, save_model

    path = Path(package)
    if not path.exists():
        raise ExportError(f"{path}: no such bioimage.io package")
    pkg = _Package(path)
    try:
        section = (pkg.rdf.get("config") or {}).get("labelfx")
        if not isinstance(section, dict) or not section.get("config"):
            raise ExportError(f"{path}: not made by napari-labelfx (no config.labelfx in its RDF); "
                              "use it for prediction through bioimageio.core instead")
        attachments = {(_source(a)[0]): _source(a)[1] for a in pkg.rdf.get("attachments") or []}
        cfg_name = str(section["config"])
        config = json.loads(pkg.read(cfg_name, attachments.get(cfg_name)).decode("utf-8"))
        entry = (pkg.rdf.get("weights") or {}).get("pytorch_state_dict")
        if not isinstance(entry, dict):
            raise ExportError(f"{path}: the package has no pytorch_state_dict weights to import")
        weights_name, sha = _source(entry)
        data = pkg.read(weights_name, sha)
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else hashlib.sha256(data).hexdigest()
    finally:
        pkg.close()
    state = safe_state_dict(data, f"{path}: {weights_name}")
    folder = Path(out_dir) if out_dir is not None else _cache_root() / "bioimageio" / digest[:16]
    if out_dir is None and (folder / MODEL_FILE).is_file() and (folder / CONFIG_FILE).is_file():
        return folder
    try:
        model = build_model(ModelConfig.from_dict(config["model"]))
        model.load_state_dict(state, strict=True)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ExportError(f"{path}: the weights do not fit the architecture in {cfg_name}: {exc}") from exc
    extra = {k: v for k, v in config.items() if k != "model"}
    extra["imported_from"] = {"package": str(path), "method": config.get("method")}
    extra["method"] = None
    return save_model(folder, model, extra)


# -- foreign packages ------------------------------------------------------------------------------------
_PREFERRED_WEIGHTS = ("onnx", "torchscript", "pytorch_state_dict")


class BioimageioPredictor:
    """Predicts with any bioimage.io model package through bioimageio.core, like a labelfx ``Predictor``.

    The package's own preprocessing, tiling (its parameterized axes) and postprocessing apply. Weights
    are chosen in the order ONNX, TorchScript, PyTorch state dict; state-dict weights are checked to be
    plain tensors first. The first output is read as class probabilities: one channel is thresholded
    at 0.5, several are arg-maxed; an integer output is taken as labels.
    """

    def __init__(self, package: str | os.PathLike, device: str = "cpu", blocksize: int | None = None) -> None:
        require("bioimageio.core", "Predicting with a bioimage.io package")
        from bioimageio.core import create_prediction_pipeline
        from bioimageio.spec import load_model_description

        self.package = Path(package)
        pkg = _Package(self.package)
        try:
            weights = pkg.rdf.get("weights") or {}
            fmt = next((f for f in _PREFERRED_WEIGHTS if weights.get(f)), None)
            if fmt is None:
                raise ExportError(f"{self.package}: none of its weights ({', '.join(weights) or 'none'}) can run here; "
                                  f"supported: {', '.join(_PREFERRED_WEIGHTS)}")
            if fmt == "pytorch_state_dict":
                name, sha = _source(weights[fmt])
                safe_state_dict(pkg.read(name, sha), f"{self.package}: {name}")
        finally:
            pkg.close()
        descr = load_model_description(str(self.package), perform_io_checks=False, format_version="latest")
        if getattr(descr, "inputs", None) is None or len(descr.inputs) != 1:
            raise ExportError(f"{self.package}: only models with one input tensor are supported here")
        self.descr = descr
        self.weight_format = fmt
        torch_device = "cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        self.pipeline = create_prediction_pipeline(descr, devices=[torch_device], weight_format=fmt)
        self.blocksize = blocksize
        axes = descr.inputs[0].axes
        self.input_axes = [str(a.id) for a in axes]
        self.spatial_dims = sum(1 for a in axes if getattr(a, "type", "") == "space")
        channel = next((a for a in axes if getattr(a, "type", "") == "channel"), None)
        self.in_channels = len(channel.channel_names) if channel is not None else 1
        self.config: dict[str, Any] = {"model": {"name": "bioimageio", "package": str(self.package)}}
        out_channel = next((a for a in descr.outputs[0].axes if getattr(a, "type", "") == "channel"), None)
        self.class_names = [str(c) for c in out_channel.channel_names] if out_channel is not None else None

    def to_channels_first(self, data: Any, axes: str) -> Any:
        """Reorder an array with axis letters to ``(C, *spatial)`` (see ``Predictor.to_channels_first``)."""
        from napari_labelfx.inference.predictor import Predictor

        return Predictor.to_channels_first(self, data, axes)  # only reads spatial_dims / in_channels

    def __call__(self, image: Any, **_: Any) -> Any:
        """Predict a channels-first image ``(C, *spatial)``; returns a ``Prediction``."""
        from bioimageio.core import Tensor, predict

        from napari_labelfx.inference.labels import probabilities_to_labels
        from napari_labelfx.inference.predictor import Prediction

        chw = np.asarray(image, dtype=np.float32)
        if chw.ndim == self.spatial_dims:
            chw = chw[None]
        spatial = ["z", "y", "x"][3 - self.spatial_dims:]
        # named axes: bioimageio.core's tensors are xarrays, so it transposes to the model's order itself
        dims = ["batch", "channel", *spatial]
        arr = chw[None]
        if "batch" not in self.input_axes:
            arr, dims = arr[0], dims[1:]
        if "channel" not in self.input_axes:
            if chw.shape[0] != 1:
                raise ExportError(f"{self.package}: the model takes one channel, the image has {chw.shape[0]}")
            arr = np.take(arr, 0, axis=dims.index("channel"))
            dims = [d for d in dims if d != "channel"]
        tensor = Tensor.from_numpy(arr, dims=dims)
        input_id = self.descr.inputs[0].id
        sample = predict(model=self.pipeline, inputs={input_id: tensor},
                         blocksize_parameter=self.blocksize)
        output = sample.members[self.descr.outputs[0].id].data
        dims = [str(d) for d in output.dims]
        out = np.asarray(output)
        if any(d in ("batch", "b") for d in dims):
            out = np.take(out, 0, axis=next(i for i, d in enumerate(dims) if d in ("batch", "b")))
            dims = [d for d in dims if d not in ("batch", "b")]
        cname = next((d for d in dims if d in ("channel", "c")), None)
        sp = [d for d in ("z", "y", "x") if d in dims] + [d for d in dims if d not in (cname, "z", "y", "x")]
        out = np.transpose(out, ([dims.index(cname)] if cname else []) + [dims.index(d) for d in sp])
        if cname is None:
            out = out[None]
        if np.issubdtype(out.dtype, np.integer):
            labels = out[0]
            return Prediction(labels=labels, probabilities=out.astype(np.float32),
                              confidence=np.ones(labels.shape, np.float32))
        probs = out.astype(np.float32)
        if probs.shape[0] == 1:  # one channel: foreground probability
            probs = np.concatenate([1 - probs, probs], 0)
        labels, confidence = probabilities_to_labels(probs, False, 0.5)
        return Prediction(labels=labels, probabilities=probs, confidence=confidence)

    def predict_to_zarr(self, image: Any, out_path: str | os.PathLike, confidence_path: str | os.PathLike | None = None,
                        scale: Sequence[float] | None = None, overwrite: bool = False, **_: Any) -> Path:
        """Predict in memory (bioimageio.core has no streaming) and write labels to ``out_path`` (.zarr/.tif)."""
        from napari_labelfx.io.writer import write_image, write_labels

        result = self(np.asarray(image))
        path = write_labels(out_path, np.asarray(result.labels), scale=scale, overwrite=overwrite)
        if confidence_path is not None:
            write_image(confidence_path, result.confidence, scale=scale, overwrite=overwrite)
        return path


def resolve_model(source: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A model folder for ``source``: itself, or the import of a labelfx-made bioimage.io package.

    Raises :class:`ExportError` for foreign packages (use :func:`open_predictor` to predict with them).
    """
    path = Path(source)
    if not is_bioimageio_package(path):
        return path
    if labelfx_section(path) is None:
        raise ExportError(f"{path}: a bioimage.io package not made by napari-labelfx: it can predict "
                          "(through bioimageio.core) but not be trained further here")
    return import_bioimageio(path, None if cache_dir is None else Path(cache_dir) / path.stem)


def open_predictor(source: str | os.PathLike, device: str = "auto", **kwargs: Any) -> Any:
    """A predictor for a model folder or any bioimage.io package (labelfx ``Predictor`` or
    :class:`BioimageioPredictor`); ``kwargs`` go to ``Predictor.from_folder`` (roi_size, tta, ...)."""
    from napari_labelfx.inference import Predictor

    path = Path(source)
    if is_bioimageio_package(path) and labelfx_section(path) is None:
        return BioimageioPredictor(path, device=device)
    return Predictor.from_folder(resolve_model(path), device=device, **kwargs)


__all__: Sequence[str] = [
    "BioimageioPredictor", "import_bioimageio", "is_bioimageio_package", "labelfx_section", "open_predictor",
    "resolve_model", "safe_state_dict",
]
