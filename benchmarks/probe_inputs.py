"""Throw malformed inputs at labelfx's readers, writers, projects, model loading and CLI commands.

Each probe builds its bad input in a fresh temporary folder, runs one action and classifies what
happened (issue 14's "done means"):

* ``clear``: refused (or warned) in one line that names the file or setting concerned;
* ``crash``: an exception other than the library's input errors escaped, or the command died;
* ``data_lost``: a file or folder the person made changed or vanished;
* ``accepted``: the bad input was taken silently (exit code 0 / no error).

Usage::

    python benchmarks/probe_inputs.py            # JSON table on stdout, summary on stderr
    python benchmarks/probe_inputs.py --only cli # probes whose name contains "cli"

Exit code 1 when any probe crashed or lost data. Synthetic data only; no network.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

# -- helpers ---------------------------------------------------------------------------------------


def _digest(path: Path) -> str | None:
    """Content hash of a file or of a whole folder (names and bytes); None when it is gone."""
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    if path.is_dir():
        h = hashlib.sha256()
        for p in sorted(path.rglob("*")):
            h.update(str(p.relative_to(path)).encode())
            if p.is_file():
                h.update(p.read_bytes())
        return h.hexdigest()
    return None


def _cli(argv: list[str]) -> Callable[[], Any]:
    """An action that runs ``labelfx argv`` and returns (exit code, stderr)."""

    def run() -> tuple[int, str]:
        from napari_labelfx.cli import main

        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(argv)
        return rc, err.getvalue()

    return run


def _ome(tmp: Path, **ms_updates: Any) -> Path:
    path = tmp / "img.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", data=np.zeros((16, 16), np.uint8), chunks=(8, 8))
    ms = {"version": "0.4", "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
          "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0]}]}]}
    ms.update(ms_updates)
    group.attrs["multiscales"] = [ms]
    return path


def _huge_zarr(tmp: Path, shape: list[int], chunks: list[int]) -> Path:
    path = tmp / "huge.zarr"
    path.mkdir()
    meta = {"zarr_format": 3, "node_type": "array", "shape": shape, "data_type": "uint8",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": 0, "codecs": [{"name": "bytes"}], "attributes": {}}
    (path / "zarr.json").write_text(json.dumps(meta))
    return path


def _model(tmp: Path) -> Path:
    from napari_labelfx.models import ModelConfig, build_model
    from napari_labelfx.models.checkpoint import save_model

    return save_model(tmp / "model", build_model(ModelConfig(width=4, depth=1)), {"classes": ["bg", "fg"]})


def _image(tmp: Path, name: str = "img.tif", value: float | None = None) -> Path:
    path = tmp / name
    data = np.random.default_rng(0).random((64, 64)).astype(np.float32) if value is None else \
        np.full((64, 64), value, np.float32)
    tifffile.imwrite(path, data)
    return path


def _project(tmp: Path) -> Path:
    from napari_labelfx.annotations import AnnotatedImage, AnnotationLayer, AnnotationSet, ClassTable, save_project

    labels = np.zeros((600, 600), np.uint8)
    labels[:50] = 1
    aset = AnnotationSet(ClassTable([("cell", 1)]), [AnnotatedImage(
        "img", np.zeros((600, 600), np.float32), "YX", [AnnotationLayer("s", "strong", labels)])])
    return save_project(aset, tmp / "proj")


def _edit_project(folder: Path, edit: Callable[[dict], None]) -> None:
    pj = folder / "project.json"
    doc = json.loads(pj.read_text())
    edit(doc)
    pj.write_text(json.dumps(doc))


def _chunks(folder: Path) -> list[Path]:
    data = folder / json.loads((folder / "project.json").read_text())["data"]
    return sorted(p for p in (data / "labels" / "0" / "0").rglob("*") if p.is_file() and p.name != "zarr.json")


# -- probes: each returns (action, paths that must survive unchanged, words the message must name) --
Setup = Callable[[Path], tuple[Callable[[], Any], list[Path], str]]
PROBES: dict[str, Setup] = {}


def probe(name: str) -> Callable[[Setup], Setup]:
    def register(fn: Setup) -> Setup:
        PROBES[name] = fn
        return fn

    return register


def _read(path: Path) -> Callable[[], Any]:
    from napari_labelfx.io import read_image

    return lambda: read_image(path)


for _name, _updates in {
    "axes [1,2]": {"axes": [1, 2]},
    "axis unit 7": {"axes": [{"name": "y", "unit": 7}, {"name": "x"}]},
    "coordinateTransformations 'scale'": {"coordinateTransformations": "scale"},
    "scale 0/-1": {"datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [0, -1]}]}]},
    "scale 'a'": {"datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": ["a", 1]}]}]},
    "datasets '0'": {"datasets": "0"},
}.items():
    def _setup(tmp: Path, _u: dict = _updates) -> tuple:
        path = _ome(tmp, **_u)
        return _read(path), [path], "img.zarr"

    probe(f"reader: OME-Zarr {_name}")(_setup)


@probe("reader: OME-Zarr multiscales ['0','1']")
def _(tmp: Path) -> tuple:
    path = _ome(tmp)
    attrs = json.loads((path / ".zattrs").read_text())
    attrs["multiscales"] = ["0", "1"]
    (path / ".zattrs").write_text(json.dumps(attrs))
    return _read(path), [path], "img.zarr"


@probe("reader: Zarr v3 attributes {axes: 5}")
def _(tmp: Path) -> tuple:
    path = tmp / "a.zarr"
    zarr.create_array(str(path), shape=(8, 8), dtype=np.uint8, zarr_format=3, attributes={"axes": 5})
    return _read(path), [path], "a.zarr"


@probe("reader: Zarr 10^63 elements in 1-element chunks")
def _(tmp: Path) -> tuple:
    path = _huge_zarr(tmp, [10**21] * 3, [1, 1, 1])
    return _read(path), [path], "huge.zarr"


@probe("reader: Zarr 10^72 elements in 512^2 tiles")
def _(tmp: Path) -> tuple:
    path = _huge_zarr(tmp, [10**24] * 3, [1, 512, 512])
    return _read(path), [path], "huge.zarr"


@probe("reader: complex TIFF")
def _(tmp: Path) -> tuple:
    path = tmp / "c.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.complex64))
    return _read(path), [path], "c.tif"


@probe("reader: string Zarr")
def _(tmp: Path) -> tuple:
    path = tmp / "s.zarr"
    zarr.create_array(str(path), shape=(4, 4), dtype="<U3", zarr_format=2)
    return _read(path), [path], "s.zarr"


@probe("reader: truncated TIFF")
def _(tmp: Path) -> tuple:
    good = _image(tmp, "good.tif")
    path = tmp / "bad.tif"
    path.write_bytes(good.read_bytes()[:300])
    return _read(path), [path], "bad.tif"


@probe("reader: garbage zarr.json")
def _(tmp: Path) -> tuple:
    path = tmp / "g.zarr"
    path.mkdir()
    (path / "zarr.json").write_bytes(b"\x00\xffnot json")
    return _read(path), [path], "g.zarr"


@probe("cli info: 10^63-element Zarr")
def _(tmp: Path) -> tuple:
    path = _huge_zarr(tmp, [10**21] * 3, [1, 1, 1])
    return _cli(["info", str(path)]), [path], "huge.zarr"


# -- writers ---------------------------------------------------------------------------------------
LABELS = (np.arange(64).reshape(8, 8) % 3).astype(np.uint8)


@probe("writer: write_labels over a foreign Zarr group")
def _(tmp: Path) -> tuple:
    from napari_labelfx.io import write_labels

    store = tmp / "data.zarr"
    zarr.open_group(str(store), mode="w", zarr_format=3).create_array("raw", data=np.ones((4, 4), np.uint8))
    (store / "notes.txt").write_text("mine")
    return (lambda: write_labels(store, LABELS)), [store], "data.zarr"


@probe("writer: npe2 Zarr writer over a foreign Zarr group")
def _(tmp: Path) -> tuple:
    from napari_labelfx._writer import write_labels_zarr

    store = tmp / "data.zarr"
    zarr.open_group(str(store), mode="w", zarr_format=3).create_array("raw", data=np.ones((4, 4), np.uint8))
    return (lambda: write_labels_zarr(str(store), LABELS, {})), [store], "data.zarr"


@probe("writer: write_labels over a folder named res.tif")
def _(tmp: Path) -> tuple:
    from napari_labelfx.io import write_labels

    folder = tmp / "res.tif"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    return (lambda: write_labels(folder, LABELS, overwrite=True)), [folder], "res.tif"


@probe("writer: write_labels over an unrelated notes.tif")
def _(tmp: Path) -> tuple:
    from napari_labelfx.io import write_labels

    notes = tmp / "notes.tif"
    tifffile.imwrite(notes, np.full((4, 4), 7, np.uint8))
    return (lambda: write_labels(notes, LABELS)), [notes], "notes.tif"


@probe("writer: write_labels below a file")
def _(tmp: Path) -> tuple:
    from napari_labelfx.io import write_labels

    blocker = tmp / "file.txt"
    blocker.write_text("x")
    return (lambda: write_labels(blocker / "out.zarr", LABELS)), [blocker], "out.zarr"


@probe("writer: float data as labels")
def _(tmp: Path) -> tuple:
    from napari_labelfx.io import write_labels

    return (lambda: write_labels(tmp / "f.tif", np.zeros((4, 4), np.float32))), [], "f.tif"


# -- projects --------------------------------------------------------------------------------------
def _load(folder: Path) -> Callable[[], Any]:
    from napari_labelfx.annotations import load_project

    return lambda: load_project(folder)


@probe("project: a missing chunk")
def _(tmp: Path) -> tuple:
    folder = _project(tmp)
    _chunks(folder)[0].unlink()
    return _load(folder), [], "labels/0/0"


@probe("project: a garbled zstd chunk")
def _(tmp: Path) -> tuple:
    folder = _project(tmp)
    _chunks(folder)[0].write_bytes(b"\x28\xb5\x2f\xfd garbage")
    return _load(folder), [], "labels/0/0"


for _name, _edit in {
    "version null": lambda d: d.update(version=None),
    "images as a dict": lambda d: d.update(images={"a": 1}),
    "images [null]": lambda d: d.update(images=[None]),
    "a layer that is a string": lambda d: d["images"][0].update(layers=["strong"]),
    "an array declaring 200000^2": lambda d: d["arrays"]["labels/0/0"].update(shape=[200000, 200000, 200000]),
    "data pointing outside": lambda d: d.update(data="../../elsewhere.zarr"),
}.items():
    def _setup_p(tmp: Path, _e: Callable = _edit) -> tuple:
        folder = _project(tmp)
        _edit_project(folder, _e)
        return _load(folder), [], "project"

    probe(f"project: {_name}")(_setup_p)


# -- model folders ---------------------------------------------------------------------------------
@probe("model: config width 4096 depth 6")
def _(tmp: Path) -> tuple:
    from napari_labelfx.models.checkpoint import load_model

    model = _model(tmp)
    _edit_project_json = json.loads((model / "config.json").read_text())
    _edit_project_json["model"].update(width=4096, depth=6)
    (model / "config.json").write_text(json.dumps(_edit_project_json))
    return (lambda: load_model(model)), [], "config.json"


@probe("model: normalisation 'abc'")
def _(tmp: Path) -> tuple:
    from napari_labelfx.inference import Predictor

    model = _model(tmp)
    cfg = json.loads((model / "config.json").read_text())
    cfg["normalisation"] = {"low": "abc", "high": 99}
    (model / "config.json").write_text(json.dumps(cfg))
    return (lambda: Predictor.from_folder(model, device="cpu")), [], "normalisation"


# -- CLI -------------------------------------------------------------------------------------------
@probe("cli predict: input as output (TIFF)")
def _(tmp: Path) -> tuple:
    img = _image(tmp)
    return _cli(["predict", "--model", str(_model(tmp)), str(img), str(img), "--device", "cpu"]), [img], "input"


@probe("cli predict: input as output (Zarr)")
def _(tmp: Path) -> tuple:
    raw = tmp / "raw.zarr"
    zarr.create_array(str(raw), shape=(64, 64), dtype=np.uint16, zarr_format=3)[...] = 1
    return _cli(["predict", "--model", str(_model(tmp)), str(raw), str(raw), "--device", "cpu"]), [raw], "input"


@probe("cli predict: --confidence same path as the output")
def _(tmp: Path) -> tuple:
    out = tmp / "pred.tif"
    return _cli(["predict", "--model", str(_model(tmp)), str(_image(tmp)), str(out), "--confidence", str(out),
                 "--device", "cpu"]), [], "different paths"


@probe("cli predict: output is a folder named res.tif")
def _(tmp: Path) -> tuple:
    folder = tmp / "res.tif"
    folder.mkdir()
    (folder / "thesis.docx").write_text("mine")
    return _cli(["predict", "--model", str(_model(tmp)), str(_image(tmp)), str(folder), "--overwrite",
                 "--device", "cpu"]), [folder], "res.tif"


@probe("cli predict: output is an unrelated notes.tif")
def _(tmp: Path) -> tuple:
    notes = tmp / "notes.tif"
    tifffile.imwrite(notes, np.full((4, 4), 7, np.uint8))
    return _cli(["predict", "--model", str(_model(tmp)), str(_image(tmp)), str(notes), "--device", "cpu"]), \
        [notes], "notes.tif"


@probe("cli predict: unwritable output")
def _(tmp: Path) -> tuple:
    blocker = tmp / "file.txt"
    blocker.write_text("x")
    return _cli(["predict", "--model", str(_model(tmp)), str(_image(tmp)), str(blocker / "o.zarr"),
                 "--device", "cpu"]), [blocker], "o.zarr"


@probe("cli predict: all-NaN image")
def _(tmp: Path) -> tuple:
    return _cli(["predict", "--model", str(_model(tmp)), str(_image(tmp, value=float("nan"))),
                 str(tmp / "o.tif"), "--device", "cpu"]), [], "finite"


@probe("cli eval: unwritable --out")
def _(tmp: Path) -> tuple:
    blocker = tmp / "file.txt"
    blocker.write_text("x")
    return _cli(["eval", "--dataset", str(tmp / "none"), "--method", "supervised", "--out",
                 str(blocker / "r.json")]), [blocker], "r.json"


@probe("cli stain-normalize: input as output")
def _(tmp: Path) -> tuple:
    import cv2

    src = tmp / "in.png"
    cv2.imwrite(str(src), np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    return _cli(["stain-normalize", str(src), str(src), "--overwrite"]), [src], "input"


@probe("cli stain-normalize: output is an unrelated notes.png")
def _(tmp: Path) -> tuple:
    import cv2

    src = tmp / "in.png"
    cv2.imwrite(str(src), np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    notes = tmp / "notes.png"
    notes.write_bytes(b"someone's picture")
    return _cli(["stain-normalize", str(src), str(notes)]), [src, notes], "notes.png"


@probe("cli skin-tone: unwritable --out")
def _(tmp: Path) -> tuple:
    blocker = tmp / "file.txt"
    blocker.write_text("x")
    return _cli(["skin-tone", str(tmp), "--out", str(blocker / "t.csv")]), [blocker], "t.csv"


for _flags, _words in [(["--iters", "0"], "iterations"), (["--iters", "-5"], "iterations"), (["--lr", "-1"], "lr"),
                       (["--batch", "-2"], "batch_size"), (["--patch", "-8"], "patch_size"),
                       (["--param", "dice_weight=abc"], "dice_weight")]:
    def _setup_t(tmp: Path, _f: list = _flags, _w: str = _words) -> tuple:
        img = _image(tmp)
        lab = tmp / "lab.tif"
        tifffile.imwrite(lab, (np.arange(64 * 64).reshape(64, 64) % 3 == 0).astype(np.uint8))
        return _cli(["train", "--images", str(img), "--labels", str(lab), "--out", str(tmp / "m"),
                     "--device", "cpu", *_f]), [img, lab], _w

    probe(f"cli train: {' '.join(_flags)}")(_setup_t)


# -- running ---------------------------------------------------------------------------------------
def run_probe(name: str, setup: Setup) -> dict[str, Any]:
    """Run one probe in a fresh temporary folder and classify the outcome."""
    tmp = Path(tempfile.mkdtemp(prefix="labelfx-probe-"))
    row: dict[str, Any] = {"probe": name, "tried": True, "clear": False, "crash": False, "data_lost": False,
                           "accepted": False, "message": ""}
    try:
        action, guarded, words = setup(tmp)
        before = {p: _digest(p) for p in guarded}
        try:
            result = action()
        except ValueError as exc:  # the library's input errors (LabelfxIOError, ProjectError, ...)
            message = str(exc)
            row["message"] = message
            row["clear"] = "\n" not in message.strip() and words.lower() in message.lower()
        except Exception as exc:  # noqa: BLE001 - anything else is what the probe looks for
            row["crash"] = True
            row["message"] = f"{type(exc).__name__}: {exc}"[:300]
            row["traceback"] = traceback.format_exc(limit=5)
        else:
            if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], int):
                rc, err = result
                lines = [ln for ln in err.strip().splitlines() if "warning" not in ln.lower()]
                row["message"] = err.strip()[:300]
                if rc == 0:
                    row["accepted"] = True
                else:
                    row["clear"] = len(lines) == 1 and words.lower() in err.lower()
                    row["crash"] = "Traceback" in err
            else:
                row["accepted"] = True
        row["data_lost"] = any(_digest(p) != h for p, h in before.items())
    except Exception as exc:  # noqa: BLE001 - a broken probe is reported, not raised
        row["tried"] = False
        row["message"] = f"probe setup failed: {type(exc).__name__}: {exc}"[:300]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return row


def main(argv: list[str] | None = None) -> int:
    """Run the probes; print the JSON table; exit 1 on any crash or data loss."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the probes whose name contains this text")
    args = parser.parse_args(argv)
    rows = [run_probe(name, setup) for name, setup in PROBES.items() if args.only.lower() in name.lower()]
    summary = {key: sum(bool(r[key]) for r in rows) for key in ("tried", "clear", "crash", "data_lost", "accepted")}
    print(json.dumps({"summary": summary, "probes": rows}, indent=1))
    width = max((len(r["probe"]) for r in rows), default=10)
    print(f"{'probe':<{width}}  tried clear crash lost accepted", file=sys.stderr)
    for r in rows:
        flags = "  ".join("x    " if r[k] else ".    " for k in ("tried", "clear", "crash", "data_lost", "accepted"))
        print(f"{r['probe']:<{width}}  {flags}", file=sys.stderr)
    print(f"summary: {summary}", file=sys.stderr)
    return 1 if summary["crash"] or summary["data_lost"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
