"""Issue 14, data loss: writers never destroy the input, a folder, or a file labelfx did not write."""
from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile
import zarr

from napari_labelfx._sample_data import make_nuclei_2d
from napari_labelfx._writer import write_labels_zarr
from napari_labelfx.cli import main
from napari_labelfx.io import LabelfxIOError, write_image, write_labels
from napari_labelfx.io.atomic import atomic_path, clean_stale_temporaries
from napari_labelfx.io.safety import check_destination

LABELS = np.arange(64, dtype=np.uint16).reshape(8, 8) % 3


def test_write_labels_refuses_foreign_zarr_group_and_keeps_it(tmp_path):
    store = tmp_path / "data.zarr"
    group = zarr.open_group(str(store), mode="w", zarr_format=3)
    group.create_array("raw", data=np.ones((4, 4), np.uint8))
    (store / "notes.txt").write_text("mine")
    with pytest.raises(LabelfxIOError, match="--overwrite"):
        write_labels(store, LABELS)
    with pytest.raises(LabelfxIOError, match="data.zarr"):
        write_labels_zarr(str(store), LABELS, {"scale": None})  # the npe2 writer too
    assert (store / "notes.txt").read_text() == "mine"
    assert zarr.open_group(str(store), mode="r")["raw"].shape == (4, 4)
    write_labels(store, LABELS, overwrite=True)  # the person said so explicitly
    assert not (store / "notes.txt").exists()


def test_own_zarr_output_is_replaced_without_flag(tmp_path):
    out = tmp_path / "pred.zarr"
    write_labels(out, LABELS)
    write_labels(out, LABELS + 1)  # re-running a command replaces its own output
    assert int(zarr.open_array(str(out), mode="r")[0, 0]) == 1
    (out / "extra.txt").write_text("added by hand")  # now it holds more than the array
    with pytest.raises(LabelfxIOError, match="holds more than"):
        write_labels(out, LABELS)
    assert (out / "extra.txt").exists()


def test_folder_named_like_a_file_is_never_deleted(tmp_path):
    folder = tmp_path / "res.tif"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(LabelfxIOError, match="never"):
            write_labels(folder, LABELS, overwrite=overwrite)
    plain = tmp_path / "plain.zarr"  # a folder that is not even a Zarr store
    plain.mkdir()
    (plain / "notes.txt").write_text("mine")
    with pytest.raises(LabelfxIOError, match="never replaced"):
        write_labels(plain, LABELS, overwrite=True)
    assert (folder / "notes.txt").read_text() == "mine" and (plain / "notes.txt").exists()


def test_atomic_path_never_deletes_a_folder_for_a_file(tmp_path):
    folder = tmp_path / "out.tif"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    with pytest.raises(LabelfxIOError, match="folder"):
        with atomic_path(folder) as tmp:
            tmp.write_bytes(b"data")
    assert (folder / "keep.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]  # no temporary left


def test_unrelated_file_needs_overwrite(tmp_path):
    notes = tmp_path / "notes.tif"
    tifffile.imwrite(notes, np.full((4, 4), 7, np.uint8))
    with pytest.raises(LabelfxIOError, match="not written by labelfx"):
        write_labels(notes, LABELS)
    assert tifffile.imread(notes)[0, 0] == 7
    text = tmp_path / "notes.txt.tif"
    text.write_text("a text file with a wrong name")
    with pytest.raises(LabelfxIOError):
        write_image(text, LABELS.astype(np.float32))
    own = tmp_path / "own.tif"
    write_labels(own, LABELS)
    write_labels(own, LABELS + 1)  # our own file: replaced
    assert tifffile.imread(own)[0, 0] == 1
    write_labels(notes, LABELS, overwrite=True)
    assert tifffile.imread(notes)[0, 0] == 0


def test_check_destination_input_and_unwritable(tmp_path):
    src = tmp_path / "raw.zarr"
    write_labels(src, LABELS)
    with pytest.raises(LabelfxIOError, match="input"):
        check_destination(src, inputs=[src], overwrite=True)
    with pytest.raises(LabelfxIOError, match="input"):
        check_destination(tmp_path, inputs=[src], overwrite=True)  # a folder holding the input
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(LabelfxIOError, match="not a folder"):
        check_destination(blocker / "out.tif")
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(LabelfxIOError, match="not writable"):
                check_destination(ro / "out.zarr")
        finally:
            ro.chmod(0o700)


def test_stale_temporaries_of_dead_writers_are_cleaned(tmp_path):
    dest = tmp_path / "labels.tif"
    dead = tmp_path / ".labels.tif.tmp-999999999-abcdef0123.tif"  # no such process
    dead.write_bytes(b"half")
    alive = tmp_path / f".labels.tif.tmp-{os.getpid()}-abcdef0123.tif"
    alive.write_bytes(b"in progress")
    other = tmp_path / ".other.tif.tmp-999999999-abcdef0123.tif"
    other.write_bytes(b"someone else's")
    assert clean_stale_temporaries(dest) == [dead]
    write_labels(dest, LABELS)
    assert alive.exists() and other.exists() and not dead.exists()


# -- labelfx predict -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_and_image(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("model")
    d = make_nuclei_2d(seed=3, size=64)
    img, lab = tmp / "img.tif", tmp / "lab.tif"
    tifffile.imwrite(img, (d["image"] * 1000).astype(np.uint16))
    tifffile.imwrite(lab, d["strong"].astype(np.uint16))
    rc = main(["train", "--images", str(img), "--labels", str(lab), "--out", str(tmp / "m"), "--iters", "2",
               "--patch", "32", "--batch", "1", "--device", "cpu"])
    assert rc == 0
    return tmp / "m" / "last", img


def test_predict_refuses_input_as_output(model_and_image, tmp_path, capsys):
    model, img = model_and_image
    before = img.read_bytes()
    raw = tmp_path / "raw.zarr"
    z = zarr.create_array(str(raw), shape=(64, 64), dtype=np.uint16, chunks=(64, 64), zarr_format=3)
    z[...] = tifffile.imread(img)
    for src, dst, extra in [(img, img, []), (raw, raw, []), (img, img, ["--overwrite"])]:
        rc = main(["predict", "--model", str(model), str(src), str(dst), "--device", "cpu", *extra])
        assert rc == 2
        err = capsys.readouterr().err
        assert "input" in err and len(err.strip().splitlines()) == 1
    assert img.read_bytes() == before
    assert zarr.open_array(str(raw), mode="r").dtype == np.uint16


def test_predict_confidence_same_as_output_refused(model_and_image, tmp_path, capsys):
    model, img = model_and_image
    out = tmp_path / "pred.tif"
    rc = main(["predict", "--model", str(model), str(img), str(out), "--confidence", str(out), "--device", "cpu"])
    assert rc == 2
    assert "different paths" in capsys.readouterr().err
    assert not out.exists()


def test_predict_foreign_outputs_need_overwrite(model_and_image, tmp_path, capsys):
    model, img = model_and_image
    notes = tmp_path / "notes.tif"
    tifffile.imwrite(notes, np.full((4, 4), 7, np.uint8))
    folder = tmp_path / "res.tif"
    folder.mkdir()
    (folder / "thesis.docx").write_text("mine")
    for dst, extra in [(notes, []), (folder, []), (folder, ["--overwrite"])]:
        assert main(["predict", "--model", str(model), str(img), str(dst), "--device", "cpu", *extra]) == 2
        assert str(dst) in capsys.readouterr().err
    assert (folder / "thesis.docx").read_text() == "mine"
    assert tifffile.imread(notes)[0, 0] == 7
    conf = tmp_path / "conf.tif"
    out = tmp_path / "pred.zarr"
    for _ in range(2):  # labelfx's own outputs (Zarr labels, TIFF confidence) are replaced on a re-run
        assert main(["predict", "--model", str(model), str(img), str(out), "--confidence", str(conf),
                     "--device", "cpu"]) == 0
    assert main(["predict", "--model", str(model), str(img), str(notes), "--overwrite", "--device", "cpu"]) == 0
    assert tifffile.imread(notes).shape == (64, 64)
    capsys.readouterr()


def test_predict_unwritable_output_fails_before_work(model_and_image, tmp_path, capsys):
    model, img = model_and_image
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    rc = main(["predict", "--model", str(tmp_path / "no-model"), str(img), str(blocker / "out.zarr")])
    assert rc == 2  # refused on the output before the (missing) model is even looked at
    assert "not a folder" in capsys.readouterr().err


def test_eval_unwritable_out_fails_before_the_run(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    # the dataset does not even exist: the output is checked first, before minutes of training
    rc = main(["eval", "--dataset", str(tmp_path / "nowhere"), "--method", "supervised",
               "--out", str(blocker / "result.json")])
    assert rc == 2
    assert "not a folder" in capsys.readouterr().err
    folder = tmp_path / "res.json"
    folder.mkdir()
    assert main(["eval", "--dataset", str(tmp_path / "nowhere"), "--method", "supervised", "--out", str(folder)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_prediction_never_silently_replaces_a_saved_layer(model_and_image, tmp_path, capsys):
    from napari_labelfx._writer import write_labels_tiff

    model, img = model_and_image
    painted = tmp_path / "painted.tif"
    write_labels_tiff(str(painted), LABELS, {"name": "my labels", "scale": None})
    before = painted.read_bytes()
    assert main(["predict", "--model", str(model), str(img), str(painted), "--device", "cpu"]) == 2
    assert "saved from napari" in capsys.readouterr().err
    assert painted.read_bytes() == before
    with pytest.raises(LabelfxIOError, match="saved from napari"):
        write_labels(painted, LABELS + 1)
    write_labels_tiff(str(painted), LABELS + 1, {"name": "my labels", "scale": None})  # the person saves again
    assert tifffile.imread(painted)[0, 0] == 1
    zpainted = tmp_path / "painted.zarr"
    write_labels_zarr(str(zpainted), LABELS, {"name": "my labels"})
    assert main(["predict", "--model", str(model), str(img), str(zpainted), "--device", "cpu"]) == 2
    write_labels_zarr(str(zpainted), LABELS, {"name": "my labels"})


def test_stain_normalize_and_reports_never_destroy(tmp_path, capsys):
    src = tmp_path / "in.png"
    rgb = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    import cv2

    cv2.imwrite(str(src), rgb)
    before = src.read_bytes()
    assert main(["stain-normalize", str(src), str(src)]) == 2  # the input, even with --overwrite
    assert main(["stain-normalize", str(src), str(src), "--overwrite"]) == 2
    assert "input" in capsys.readouterr().err and src.read_bytes() == before
    notes = tmp_path / "notes.png"
    notes.write_bytes(b"someone's picture")
    assert main(["stain-normalize", str(src), str(notes)]) == 2
    assert "--overwrite" in capsys.readouterr().err and notes.read_bytes() == b"someone's picture"
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert main(["skin-tone", str(tmp_path), "--out", str(blocker / "t.csv")]) == 2  # before measuring
    assert "not a folder" in capsys.readouterr().err
