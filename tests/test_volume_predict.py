"""Issue 13 item 1: a 2D model predicts a volume slice by slice (Predictor, streaming, CLI), and
item 13: ``labelfx predict --model RUN_FOLDER`` takes the run's best model."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from napari_labelfx.cli import main
from napari_labelfx.inference import Predictor, sliding_window_predict, stream_probabilities
from napari_labelfx.io.reader import read_image
from napari_labelfx.models import ModelConfig, build_model
from napari_labelfx.models.checkpoint import load_model, save_model

torch.set_num_threads(1)


def _model2d(num_classes: int = 2):
    torch.manual_seed(0)
    return build_model(ModelConfig(spatial_dims=2, depth=2, width=4, num_classes=num_classes)).eval()


@pytest.fixture
def volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((5, 40, 48)) * 1000).astype(np.uint16)


def test_predictor_volume_slice_by_slice_equals_each_slice(volume):
    pred = Predictor(_model2d(), device="cpu", channels_last=False)
    chw = pred.to_channels_first(volume, "ZYX")
    assert chw.shape == (1, 5, 40, 48)
    res = pred(chw, roi_size=(32, 32))
    assert res.labels.shape == (5, 40, 48) and res.probabilities.shape == (2, 5, 40, 48)
    # the same as each slice on its own, normalised with the volume's percentiles
    lo, hi = pred.normalisation_for(chw)
    norm = (volume.astype(np.float32) - lo[0]) / (hi[0] - lo[0])
    for z in (0, 3):
        one = sliding_window_predict(pred.model, norm[None, z], (32, 32), device="cpu")
        np.testing.assert_allclose(res.probabilities[:, z], one, atol=1e-5)


def test_streaming_volume_with_2d_model_matches_in_memory(volume, tmp_path):
    pred = Predictor(_model2d(), device="cpu", channels_last=False)
    chw = pred.to_channels_first(volume, "ZYX")
    in_memory = pred(chw, roi_size=(32, 32))
    calls = []
    blocks = list(stream_probabilities(pred.model, chw, (32, 32), device="cpu",
                                       normalisation=pred.normalisation_for(chw),
                                       progress=lambda d, t: calls.append((d, t))))
    assert [z for z, _ in blocks] == list(range(5))
    assert all(b.shape == (2, 1, 40, 48) for _, b in blocks)
    assert calls[-1][0] == calls[-1][1]  # progress reaches the total
    streamed = np.concatenate([b for _, b in blocks], axis=1)
    np.testing.assert_allclose(streamed, in_memory.probabilities, atol=1e-4)
    out = pred.predict_to_zarr(chw, tmp_path / "vol.zarr", roi_size=(32, 32))
    stored = np.asarray(read_image(out).data)
    # an untrained net sits near 0.5: compare labels where float rounding cannot flip them
    clear = np.abs(in_memory.probabilities[1] - 0.5) > 1e-3
    np.testing.assert_array_equal(stored[clear], in_memory.labels[clear])


def _run_folder(tmp_path, model):
    run = tmp_path / "run"
    save_model(run / "last", model, {"class_names": ["background", "nucleus"]})
    torch.manual_seed(5)
    best = build_model(model.config)
    save_model(run / "best", best, {"class_names": ["background", "nucleus"]})
    return run, best


def test_cli_predict_volume_with_2d_model_from_run_folder(volume, tmp_path, capsys):
    run, best = _run_folder(tmp_path, _model2d())
    # the run folder resolves to its best model
    loaded, _ = load_model(run)
    for a, b in zip(loaded.state_dict().values(), best.state_dict().values()):
        torch.testing.assert_close(a, b)
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, volume, imagej=True, metadata={"axes": "ZYX"})
    out_tif, out_zarr = tmp_path / "pred.tif", tmp_path / "pred.zarr"
    assert main(["predict", "--model", str(run), str(src), str(out_tif), "--device", "cpu", "--tile", "32"]) == 0
    assert main(["predict", "--model", str(run), str(src), str(out_zarr), "--device", "cpu", "--tile", "32"]) == 0
    capsys.readouterr()
    a = np.asarray(read_image(out_tif).data)
    b = np.asarray(read_image(out_zarr).data)
    assert a.shape == b.shape == volume.shape
    # in memory and streamed agree (an untrained net sits near 0.5, so rounding flips a few pixels)
    assert (a == b).mean() > 0.9


def test_cli_predict_run_folder_without_model_is_clear(tmp_path, capsys):
    (tmp_path / "empty_run").mkdir()
    img = tmp_path / "i.tif"
    tifffile.imwrite(img, np.zeros((32, 32), np.uint8))
    rc = main(["predict", "--model", str(tmp_path / "empty_run"), str(img), str(tmp_path / "p.tif")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "best/" in err and len(err.strip().splitlines()) == 1


def test_panel_predicts_the_slice_in_view_next():
    from napari_labelfx.widgets._predict import next_slice

    done = np.zeros(6, bool)
    assert next_slice(done, 3) == 3
    done[3] = True
    assert next_slice(done, 3) == 4  # ties go forward
    done[[4, 2]] = True
    assert next_slice(done, 0) == 0
    assert next_slice(np.ones(4, bool), 1) == -1
