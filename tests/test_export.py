"""Models that leave the plugin: ONNX / TorchScript / bioimage.io export, and packages brought back in."""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_labelfx._sample_data import make_nuclei_2d
from napari_labelfx.cli import main
from napari_labelfx.export import ExportError, MissingExtraError, export_model
from napari_labelfx.export._common import example_input, reference_probabilities, require, standalone
from napari_labelfx.export.formats import (
    export_onnx,
    export_torchscript,
    onnx_outputs,
    torchscript_outputs,
)
from napari_labelfx.inference import Predictor
from napari_labelfx.models import build_model, config_from_preset
from napari_labelfx.models.checkpoint import save_model

pytest.importorskip("onnxruntime")
pytest.importorskip("bioimageio.core")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for 3 iterations by ``labelfx train``, with its image and labels."""
    root = tmp_path_factory.mktemp("export")
    d = make_nuclei_2d(seed=3, size=64)
    img, lab = root / "img.tif", root / "lab.tif"
    tifffile.imwrite(img, (d["image"] * 1000).astype(np.uint16))
    tifffile.imwrite(lab, d["strong"].astype(np.uint16))
    assert main(["train", "--images", str(img), "--labels", str(lab), "--out", str(root / "model"),
                 "--iters", "3", "--patch", "32", "--batch", "2", "--device", "cpu"]) == 0
    return {"root": root, "img": img, "lab": lab, "model": root / "model" / "last"}


@pytest.fixture(scope="module")
def package(trained):
    """The bioimage.io package of the trained model, written by ``labelfx export``."""
    out = trained["root"] / "pkg.zip"
    assert main(["export", str(trained["model"]), str(out), "--format", "bioimageio",
                 "--sample-image", str(trained["img"]), "--author", "Test Person"]) == 0
    return out


@pytest.fixture(scope="module")
def foreign(package):
    """The same package without its labelfx section: a model labelfx did not make."""
    def strip(rdf):
        rdf.pop("config")
        rdf["attachments"] = []

    return _rewrite_package(package, package.with_name("foreign.zip"), drop=("labelfx_config.json",), rdf_edit=strip)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LABELFX_CACHE_DIR", str(tmp_path / "cache"))


def _rewrite_package(src: Path, dst: Path, files: dict[str, bytes] | None = None, drop=(), rdf_edit=None) -> Path:
    """Copy a package, replacing/dropping files and editing its RDF with ``rdf_edit``."""
    import yaml

    files = dict(files or {})
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        rdf = yaml.safe_load(zin.read("rdf.yaml"))
        for name in zin.namelist():
            if name in drop or name == "rdf.yaml":
                continue
            data = files.pop(name, None)
            zout.writestr(name, data if data is not None else zin.read(name))
        for name, data in files.items():
            zout.writestr(name, data)
        if rdf_edit:
            rdf_edit(rdf)
        zout.writestr("rdf.yaml", yaml.safe_dump(rdf))
    return dst


# -- ONNX and TorchScript ----------------------------------------------------------------------------------
def test_onnx_and_torchscript_match_pytorch(trained, tmp_path):
    onnx_path = export_onnx(trained["model"], tmp_path / "m.onnx")  # checks within 1e-4 itself
    ts_path = export_torchscript(trained["model"], tmp_path / "m.pt")
    model = Predictor.from_folder(trained["model"], device="cpu").model
    model = model.float().to(memory_format=torch.contiguous_format)
    # another batch and spatial size than the one traced: nothing is baked into the graphs
    x = torch.rand(3, 1, 40, 72, generator=torch.Generator().manual_seed(5))
    ref = reference_probabilities(model, x)
    assert np.abs(onnx_outputs(onnx_path, x.numpy()) - ref).max() <= 1e-4
    assert np.abs(torchscript_outputs(ts_path, x.numpy()) - ref).max() <= 1e-4
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert json.loads(meta["class_names"]) == ["background", "foreground"]
    extra = {"labelfx.json": ""}
    torch.jit.load(str(ts_path), _extra_files=extra)
    assert "preprocessing" in json.loads(extra["labelfx.json"])


@pytest.mark.parametrize("overrides", [
    {"spatial_dims": 3, "depth": 2, "width": 4, "num_classes": 3, "in_channels": 2},
    {"width": 4, "upsample": "transpose", "norm": "group", "multilabel": True, "num_classes": 2, "image_head": True},
])
def test_export_other_architectures(tmp_path, overrides):
    model = build_model(config_from_preset("small", **overrides))
    folder = save_model(tmp_path / "model", model, {"class_names": [f"c{i}" for i in range(overrides["num_classes"])]})
    net, config = model.eval(), json.loads((folder / "config.json").read_text())
    x = example_input(config, seed=2)
    ref = reference_probabilities(net, x)
    assert np.abs(standalone(net, config, exact_size=False)(x).detach().numpy() - ref).max() <= 1e-5
    assert np.abs(onnx_outputs(export_onnx(folder, tmp_path / "m.onnx"), x.numpy()) - ref).max() <= 1e-4
    assert np.abs(torchscript_outputs(export_torchscript(folder, tmp_path / "m.pt"), x.numpy()) - ref).max() <= 1e-4


def test_cli_export_onnx_and_errors(trained, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", str(trained["model"]), str(out), "--format", "onnx"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["output"] == str(out)
    assert main(["export", str(trained["model"]), str(tmp_path / "p.zip"), "--format", "bioimageio"]) == 2
    assert "--sample-image" in capsys.readouterr().err
    assert main(["export", str(trained["model"]), str(tmp_path / "p.zip"), "--format", "bioimageio",
                 "--sample-image", str(trained["img"]), "--license", "NOPE"]) == 2
    assert "SPDX" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nope"), str(out), "--format", "onnx"]) == 2
    assert "nope" in capsys.readouterr().err


def test_forest_folder_is_refused(tmp_path, capsys):
    folder = tmp_path / "forest"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model": {"name": "pixel_forest", "n_trees": 10}}))
    np.savez(folder / "forest.npz", a=np.zeros(3))
    for fmt in ("onnx", "torchscript", "bioimageio"):
        with pytest.raises(ExportError, match="onnx, torchscript, bioimageio"):
            export_model(folder, tmp_path / "out", fmt)
    assert main(["export", str(folder), str(tmp_path / "f.onnx"), "--format", "onnx"]) == 2
    assert "random-forest" in capsys.readouterr().err


def test_missing_extra_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` fail
    with pytest.raises(MissingExtraError, match=r"pip install 'napari-labelfx\[export\]'"):
        require("onnx", "ONNX export")


# -- bioimage.io --------------------------------------------------------------------------------------------
def test_bioimageio_package_passes_model_test(package):
    from napari_labelfx.export.bioimageio_export import run_model_test

    summary = run_model_test(package)  # bioimageio.core's own test, all weight formats, offline
    assert summary.status == "passed"
    with zipfile.ZipFile(package) as zf:
        names = set(zf.namelist())
        assert {"weights.pt", "weights.onnx", "weights_torchscript.pt", "labelfx_unet.py", "cover.png",
                "README.md", "test_input.npy", "test_output.npy", "labelfx_config.json"} <= names
        readme = zf.read("README.md").decode()
        assert "output_dir" not in zf.read("labelfx_config.json").decode()  # no local paths in a shared package
        state = torch.load(io.BytesIO(zf.read("weights.pt")), weights_only=True)
        test_input = np.load(io.BytesIO(zf.read("test_input.npy")))
        import yaml

        rdf = yaml.safe_load(zf.read("rdf.yaml"))
    assert "supervised" in readme and "foreground" in readme and "Ronneberger" in readme and "Test Person" in readme
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert test_input.shape == (1, 1, 64, 64)  # a crop of the real training image
    space = [a for a in rdf["inputs"][0]["axes"] if a.get("type") == "space"]
    assert all(a["size"] == {"min": 32, "step": 8} for a in space)  # the small preset's divisor 2**3
    assert all(a["halo"] == 8 for a in rdf["outputs"][0]["axes"] if a.get("type") == "space")
    assert rdf["inputs"][0]["preprocessing"][1]["kwargs"]["max_percentile"] == 99.8


def test_package_imports_back_with_the_same_prediction(trained, package, tmp_path, capsys):
    from napari_labelfx.export.bioimageio_import import resolve_model

    folder = resolve_model(package)
    assert (folder / "model.safetensors").exists()
    image = tifffile.imread(trained["img"])[None]
    a = Predictor.from_folder(trained["model"], device="cpu")(image)
    b = Predictor.from_folder(folder, device="cpu")(image)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)
    out_pkg, out_dir = tmp_path / "pkg.tif", tmp_path / "dir.tif"
    assert main(["predict", "--model", str(package), str(trained["img"]), str(out_pkg), "--device", "cpu"]) == 0
    assert main(["predict", "--model", str(trained["model"]), str(trained["img"]), str(out_dir), "--device", "cpu"]) == 0
    np.testing.assert_array_equal(tifffile.imread(out_pkg), tifffile.imread(out_dir))


def test_imported_package_fine_tunes_with_another_method(trained, package, tmp_path, capsys):
    out = tmp_path / "tuned"
    assert main(["train", "--images", str(trained["img"]), "--labels", str(trained["lab"]), "--kind", "noisy",
                 "--method", "adele", "--resume", str(package), "--out", str(out), "--iters", "2",
                 "--patch", "32", "--batch", "2", "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    config = json.loads((Path(res["last"]) / "config.json").read_text())
    assert config["method"] == "adele"


def test_foreign_package_predicts_through_bioimageio_core(trained, foreign, tmp_path):
    from napari_labelfx.export.bioimageio_import import BioimageioPredictor, open_predictor

    pred = open_predictor(foreign, device="cpu")
    assert isinstance(pred, BioimageioPredictor) and pred.weight_format == "onnx"
    image = tifffile.imread(trained["img"])
    got = pred(pred.to_channels_first(image, "YX"))
    # bioimageio.core's pipeline pads the input by the output halo (symmetric) before its preprocessing
    # and crops the halo after: the same network run on that padded image, so labelfx can check it
    halo = 8
    padded = np.pad(image.astype(np.float32), halo, mode="symmetric")[None]
    want = Predictor.from_folder(trained["model"], device="cpu")(padded)
    np.testing.assert_allclose(got.probabilities, want.probabilities[:, halo:-halo, halo:-halo], atol=1e-4)
    out = tmp_path / "foreign.tif"
    assert main(["predict", "--model", str(foreign), str(trained["img"]), str(out), "--device", "cpu"]) == 0
    np.testing.assert_array_equal(tifffile.imread(out), got.labels)
    from napari_labelfx.export.bioimageio_import import resolve_model

    with pytest.raises(ExportError, match="not made by napari-labelfx"):
        resolve_model(foreign)


class _Payload:
    """Unpickling this object would create a marker file: the test of code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("kind", ["bare pickle", "torch archive"])
def test_pickle_disguised_as_weights_is_refused_without_running(package, tmp_path, kind):
    from napari_labelfx.export.bioimageio_import import import_bioimageio

    marker = tmp_path / "pwned"
    if kind == "bare pickle":
        data = pickle.dumps({"inc.0.0.weight": _Payload(marker)})
    else:
        buf = io.BytesIO()
        torch.save({"inc.0.0.weight": _Payload(marker)}, buf)
        data = buf.getvalue()
    assert not marker.exists()

    def fix_sha(rdf):  # a consistent package: the refusal must come from the content, not the checksum
        rdf["weights"]["pytorch_state_dict"]["sha256"] = hashlib.sha256(data).hexdigest()

    evil = _rewrite_package(package, tmp_path / "evil.zip", files={"weights.pt": data}, rdf_edit=fix_sha)
    with pytest.raises(ExportError, match="refusing"):
        import_bioimageio(evil, tmp_path / "imported")
    assert not marker.exists()
    assert main(["predict", "--model", str(evil), str(package), str(tmp_path / "x.tif")]) == 2
    assert not marker.exists()


def test_train_panel_exports_and_loads_packages(make_napari_viewer, qtbot, trained, package, foreign, tmp_path):
    from napari_labelfx.widgets.train import TrainWidget

    viewer = make_napari_viewer()
    viewer.add_image(tifffile.imread(trained["img"]), name="img")
    w = TrainWidget(viewer)
    w.load_model(str(package))  # a labelfx package: imported as a model folder (fine-tunable)
    assert w.model_dir is not None and (w.model_dir / "model.safetensors").exists()
    assert w.export_btn.text() == "Export model..."
    worker = w.export_model(str(tmp_path / "panel.onnx"))
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    assert (tmp_path / "panel.onnx").exists(), w.status.text()
    worker = w.predict()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: "img prediction" in viewer.layers, timeout=10_000)
    viewer.layers.remove("img prediction")
    w.load_model(str(foreign))  # a foreign package: kept as a package, predicted by bioimageio.core
    assert w.model_dir == foreign
    worker = w.predict()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: "img prediction" in viewer.layers, timeout=10_000)
    assert viewer.layers["img prediction"].data.shape == (64, 64)
