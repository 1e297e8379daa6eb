import json

import numpy as np
import pytest
import tifffile

from napari_labelfx.annotations import (
    AnnotatedImage,
    AnnotationLayer,
    AnnotationSet,
    ClassTable,
    ProjectError,
    load_project,
    save_project,
)
from napari_labelfx.annotations import project as project_mod


def _aset(tmp_path, with_file=True):
    rng = np.random.default_rng(1)
    table = ClassTable([("nucleus", 1, "#ff0000"), ("cell", 7)], multilabel=False)
    img2d = rng.integers(0, 4000, (16, 20), dtype=np.uint16)
    src = None
    if with_file:
        src = tmp_path / "data" / "img.tif"
        src.parent.mkdir(exist_ok=True)
        tifffile.imwrite(src, img2d)
    strong = rng.integers(0, 3, (16, 20)).astype(np.int32)
    scr = np.zeros((16, 20), np.uint8)
    scr[2, 3:9] = 2
    shapes = [
        (np.array([[1.5, 2.25], [1.5, 6.0], [4.0, 6.0], [4.0, 2.25]]), "rectangle"),
        (np.array([[8.0, 8.0], [8.0, 12.0], [12.0, 12.0], [12.0, 8.0]]), "ellipse"),
    ]
    im1 = AnnotatedImage(
        "first",
        img2d,
        "YX",
        [
            AnnotationLayer("strong", "strong", strong, class_name="cell"),
            AnnotationLayer("scribbles", "scribble", scr),
            AnnotationLayer("boxes", "weak", shapes=shapes, shape_classes=["nucleus", "cell"]),
        ],
        tags={"cell"},
        source=str(src) if src else None,
    )
    vol = rng.random((5, 8, 9)).astype(np.float32)
    partial = np.zeros((5, 8, 9), np.uint16)
    partial[2, 1:4, 1:4] = 1
    im2 = AnnotatedImage(
        "volume",
        vol,
        "ZYX",
        [AnnotationLayer("partial", "strong", partial, partial=[0, 2]), AnnotationLayer("noisy", "noisy", partial * 3)],
        tags={None: {"nucleus"}, 3: {"cell", "nucleus"}},
    )
    return AnnotationSet(table, [im1, im2])


def _assert_same(a: AnnotationSet, b: AnnotationSet):
    assert a.class_table == b.class_table
    assert [i.name for i in a.images] == [i.name for i in b.images]
    for x, y in zip(a.images, b.images):
        assert x.axes == y.axes and x.tags == y.tags
        np.testing.assert_array_equal(np.asarray(x.image), np.asarray(y.image))
        assert np.asarray(x.image).dtype == np.asarray(y.image).dtype
        assert len(x.layers) == len(y.layers)
        for lx, ly in zip(x.layers, y.layers):
            assert (lx.name, lx.kind, lx.class_name, lx.partial, lx.shape_classes) == (
                ly.name, ly.kind, ly.class_name, ly.partial, ly.shape_classes
            )
            if lx.shapes is None:
                assert ly.shapes is None
                np.testing.assert_array_equal(lx.data, ly.data)
                assert np.asarray(lx.data).dtype == ly.data.dtype
            else:
                assert [t for _, t in lx.shapes] == [t for _, t in ly.shapes]
                for (vx, _), (vy, _) in zip(lx.shapes, ly.shapes):
                    np.testing.assert_array_equal(vx, vy)


def test_round_trip_exact(tmp_path):
    aset = _aset(tmp_path)
    folder = save_project(aset, tmp_path / "proj")
    data = json.loads((folder / "project.json").read_text())["data"]
    assert (folder / "project.json").is_file() and (folder / data).is_dir()
    doc = json.loads((folder / "project.json").read_text())
    first, second = doc["images"]
    assert first["array"] is None and first["source"].endswith("img.tif")  # referenced file
    assert second["array"] == "images/1"  # from memory: stored in the zarr
    loaded = load_project(folder)
    _assert_same(aset, loaded)
    # and the targets the engine sees are identical too
    for a, b in zip(aset.training_items(), loaded.training_items()):
        np.testing.assert_array_equal(a.target, b.target)
        np.testing.assert_array_equal(a.image, b.image)
        assert a.kind == b.kind
    # saving the reopened project over itself keeps it identical
    save_project(loaded, folder)
    _assert_same(aset, load_project(folder))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "proj"]  # no temp folders left


def test_labels_are_compressed_zarr_v3(tmp_path):
    import zarr

    folder = save_project(_aset(tmp_path), tmp_path / "p")
    data = json.loads((folder / "project.json").read_text())["data"]  # the current version folder
    arr = zarr.open_array(str(folder / data / "labels" / "0" / "0"), mode="r")
    assert arr.metadata.zarr_format == 3 and len(arr.compressors) == 1
    assert not list(folder.rglob("*.pkl")) and not list(folder.rglob("*.pickle"))


def test_store_images_modes(tmp_path):
    aset = _aset(tmp_path)
    folder = save_project(aset, tmp_path / "all", store_images=True)
    doc = json.loads((folder / "project.json").read_text())
    assert doc["images"][0]["array"] == "images/0"
    with pytest.raises(ProjectError, match="image 'volume' has no source file"):
        save_project(aset, tmp_path / "refs", store_images=False)
    (tmp_path / "data" / "img.tif").unlink()  # the copy in the zarr is enough now
    _assert_same(aset, load_project(folder))


def test_moved_project_finds_image_by_relative_path(tmp_path):
    import shutil

    base = tmp_path / "a"
    base.mkdir()
    aset = _aset(base)
    save_project(aset, base / "proj")
    shutil.move(str(base), str(tmp_path / "b"))
    loaded = load_project(tmp_path / "b" / "proj")
    assert loaded.images[0].source == str((tmp_path / "b" / "data" / "img.tif").resolve())
    np.testing.assert_array_equal(loaded.images[0].image, aset.images[0].image)


def test_failed_save_leaves_old_project_intact(tmp_path, monkeypatch):
    aset = _aset(tmp_path)
    folder = save_project(aset, tmp_path / "proj")
    before = (folder / "project.json").read_text()
    changed = _aset(tmp_path)
    changed.images[0].layers[0].data[:] = 0
    calls = {"n": 0}
    real = project_mod._write_array

    def failing(group, path, data):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(group, path, data)

    monkeypatch.setattr(project_mod, "_write_array", failing)
    with pytest.raises(OSError, match="disk full"):
        save_project(changed, folder)
    assert (folder / "project.json").read_text() == before
    _assert_same(aset, load_project(folder))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "proj"]


def test_failed_swap_restores_old_project(tmp_path, monkeypatch):
    import os

    from napari_labelfx.annotations import _files

    aset = _aset(tmp_path)
    folder = save_project(aset, tmp_path / "proj")
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith("project.json"):  # the switch to the new version fails
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(_files.os, "replace", replace)
    with pytest.raises(OSError, match="rename failed"):
        save_project(aset, folder)
    monkeypatch.undo()
    _assert_same(aset, load_project(folder))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "proj"]
    assert len(list(folder.glob("annotations-*.zarr"))) == 1  # the failed version was removed


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    other = tmp_path / "mydata"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(ProjectError, match="not a labelfx project; refusing to overwrite"):
        save_project(_aset(tmp_path), other)
    assert (other / "precious.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ProjectError, match="is not a folder"):
        save_project(_aset(tmp_path), tmp_path / "file")


def test_load_errors(tmp_path):
    with pytest.raises(ProjectError, match="not a labelfx project"):
        load_project(tmp_path)
    folder = save_project(_aset(tmp_path), tmp_path / "p")
    pj = folder / "project.json"
    doc = json.loads(pj.read_text())
    (tmp_path / "data" / "img.tif").unlink()
    with pytest.raises(ProjectError, match="the file of image 'first' is missing"):
        load_project(folder)
    tifffile.imwrite(tmp_path / "data" / "img.tif", np.zeros((3, 3), np.uint16))
    with pytest.raises(ProjectError, match="image file changed"):
        load_project(folder)
    pj.write_text(json.dumps({**doc, "version": 99}))
    with pytest.raises(ProjectError, match="newer than this napari-labelfx"):
        load_project(folder)
    pj.write_text("{oops")
    with pytest.raises(ProjectError, match="cannot read project file"):
        load_project(folder)
    doc["images"][1]["layers"][0]["array"] = "labels/9/9"
    pj.write_text(json.dumps(doc))
    tifffile.imwrite(tmp_path / "data" / "img.tif", np.zeros((16, 20), np.uint16))
    with pytest.raises(ProjectError, match="array 'labels/9/9' is missing"):
        load_project(folder)
    doc["images"][1]["layers"][0]["array"] = "labels/1/0"
    del doc["images"][1]["layers"][0]["kind"]
    pj.write_text(json.dumps(doc))
    with pytest.raises(ProjectError, match="malformed project file"):
        load_project(folder)
