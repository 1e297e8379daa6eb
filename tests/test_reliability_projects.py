"""Issue 14, items 3, 4, 10, 18: projects are verified on open, saved with one atomic switch, and
tampered project files are refused in one line naming the field."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time

import numpy as np
import pytest

from napari_labelfx.annotations import (
    AnnotatedImage,
    AnnotationLayer,
    AnnotationSet,
    ClassTable,
    ProjectError,
    load_project,
    save_project,
)


def _aset(k: int = 0, size: int = 32) -> AnnotationSet:
    """An in-memory project whose image and labels both carry the save number ``k``."""
    table = ClassTable([("cell", 1)], multilabel=False)
    image = np.full((size, size), k, np.float32)
    labels = np.zeros((size, size), np.uint8)
    labels[: k % size + 1] = 1
    labels[-1, -1] = k % 250  # the save number, readable from the labels alone
    layer = AnnotationLayer("strong", "strong", labels)
    return AnnotationSet(table, [AnnotatedImage("img", image, "YX", [layer])])


def _data_folder(folder):
    return folder / json.loads((folder / "project.json").read_text())["data"]


def test_missing_chunk_is_refused_with_its_name(tmp_path):
    folder = save_project(_aset(3, size=600), tmp_path / "p")  # large enough for several chunks
    chunks = sorted(p for p in (_data_folder(folder) / "labels" / "0" / "0").rglob("*") if p.is_file()
                    and p.name != "zarr.json")
    assert len(chunks) > 1
    chunks[0].unlink()
    with pytest.raises(ProjectError, match=r"labels/0/0.*1 of \d+ chunk files are missing"):
        load_project(folder)


def test_garbled_chunk_and_checksum_are_refused(tmp_path):
    folder = save_project(_aset(3), tmp_path / "p")
    chunk = next(p for p in (_data_folder(folder) / "labels" / "0" / "0").rglob("*") if p.is_file()
                 and p.name != "zarr.json")
    chunk.write_bytes(b"\x28\xb5\x2f\xfd garbage")
    with pytest.raises(ProjectError, match="labels/0/0.*(cannot be decoded|checksum)"):
        load_project(folder)


def test_missing_version_folder_is_named(tmp_path):
    folder = save_project(_aset(1), tmp_path / "p")
    shutil.rmtree(_data_folder(folder))
    with pytest.raises(ProjectError, match="annotations-.*is missing"):
        load_project(folder)


@pytest.mark.parametrize("edit, field", [
    (lambda d: d.update(version=None), "version"),
    (lambda d: d.update(images={"a": 1}), "images"),
    (lambda d: d.update(images=[None]), r"images\[0\]"),
    (lambda d: d["images"][0].update(layers=["strong"]), r"images\[0\]\.layers\[0\]"),
    (lambda d: d["images"][0].update(shape=[-1, 5]), r"images\[0\]\.shape"),
    (lambda d: d["images"][0]["layers"][0].update(array="../../etc"), r"layers\[0\]\.array"),
    (lambda d: d.update(data="../elsewhere.zarr"), "data"),
    (lambda d: d["arrays"]["labels/0/0"].update(chunks="x"), "chunks"),
])
def test_tampered_project_json_names_the_field(tmp_path, edit, field):
    folder = save_project(_aset(1), tmp_path / "p")
    pj = folder / "project.json"
    doc = json.loads(pj.read_text())
    edit(doc)
    pj.write_text(json.dumps(doc))
    with pytest.raises(ProjectError, match=field) as info:
        load_project(folder)
    assert "project.json" in str(info.value) and "\n" not in str(info.value)


def test_absurd_declared_sizes_are_refused_before_reading(tmp_path):
    folder = save_project(_aset(1), tmp_path / "p")
    pj = folder / "project.json"
    doc = json.loads(pj.read_text())
    doc["arrays"]["labels/0/0"]["shape"] = [200000, 200000, 200000]
    pj.write_text(json.dumps(doc))
    with pytest.raises(ProjectError, match="memory"):
        load_project(folder)
    # the array's own zarr.json declaring a huge shape is caught too
    folder = save_project(_aset(1), tmp_path / "q")
    meta = _data_folder(folder) / "labels" / "0" / "0" / "zarr.json"
    zdoc = json.loads(meta.read_text())
    zdoc["shape"] = [200000, 200000]
    meta.write_text(json.dumps(zdoc))
    with pytest.raises(ProjectError, match="labels/0/0"):
        load_project(folder)


def test_killed_save_leaves_previous_version_and_is_cleaned(tmp_path):
    folder = save_project(_aset(1), tmp_path / "p")
    # what a save killed before its switch leaves behind: a version folder of a dead process
    dead = folder / "annotations-9-999999999-deadbeef.zarr"
    shutil.copytree(_data_folder(folder), dead)
    assert load_project(folder).images[0].image[0, 0] == 1
    save_project(_aset(2), folder)
    assert not dead.exists()
    assert len(list(folder.glob("annotations-*.zarr"))) == 1


def _save_loop(folder: str, seconds: float) -> None:
    end = time.monotonic() + seconds
    k = 1
    while time.monotonic() < end:
        save_project(_aset(k), folder)
        k += 1


def test_concurrent_save_and_load_never_mix_versions(tmp_path):
    folder = tmp_path / "p"
    save_project(_aset(0), folder)
    ctx = mp.get_context("spawn")
    saver = ctx.Process(target=_save_loop, args=(str(folder), 5.0), daemon=True)
    saver.start()
    loads = 0
    versions: set[int] = set()
    try:
        deadline = time.monotonic() + 20.0  # bounded in time whatever happens
        while saver.is_alive() and time.monotonic() < deadline:
            aset = load_project(folder)
            image_k = int(aset.images[0].image[0, 0])
            labels = aset.images[0].layers[0].data
            assert labels[-1, -1] == image_k % 250, "image and labels come from different saves"
            assert labels[: image_k % 32 + 1].all() and not labels[image_k % 32 + 1: -1].any()
            loads += 1
            versions.add(image_k)
    finally:
        saver.join(timeout=15)
        if saver.is_alive():
            saver.kill()
    assert saver.exitcode == 0
    assert loads >= 5 and len(versions) >= 3, (loads, sorted(versions))  # loads really raced saves
    assert len(list(folder.glob("annotations-*.zarr"))) == 1
    assert not any(p.name.startswith(".") for p in folder.iterdir()), os.listdir(folder)
