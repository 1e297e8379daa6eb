"""Distributed prediction (dask.distributed): equal to the single-process predictor, restartable, surviving a
killed worker, objects merged across blocks, and the CLI's --workers/--scheduler."""
from __future__ import annotations

import itertools
import json
import os
import signal

import numpy as np
import pytest
import torch
import zarr

from napari_labelfx.inference import Predictor
from napari_labelfx.inference._block_objects import objects_blockwise
from napari_labelfx.inference._block_plan import BlockPlan, align_block
from napari_labelfx.inference.distributed import (
    Cancelled,
    Job,
    PathSource,
    blend_block,
    forward_block,
    partial_folder,
    predict_distributed,
    run_folder,
    worker_stats,
)
from napari_labelfx.inference.objects import objects_from_labels
from napari_labelfx.models import ModelConfig, build_model
from napari_labelfx.models.checkpoint import save_model

distributed = pytest.importorskip("distributed")
Client, LocalCluster = distributed.Client, distributed.LocalCluster

torch.set_num_threads(1)


# -- fixtures --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def thread_client():
    """Two workers with one thread each, in this process (no sockets), closed after the module."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


def _model_folder(root, dims, roi, num_classes=3, multilabel=False):
    torch.manual_seed(dims * 10 + num_classes)
    model = build_model(ModelConfig(spatial_dims=dims, depth=2, width=4, num_classes=num_classes,
                                    multilabel=multilabel)).eval()
    names = ["bg", "a", "b"][:num_classes]
    save_model(root, model, {"classes": names, "inference": {"roi_size": list(roi)}})
    return root


@pytest.fixture(scope="module")
def model3d(tmp_path_factory):
    return _model_folder(tmp_path_factory.mktemp("m3") / "model", 3, (8, 12, 12))


@pytest.fixture(scope="module")
def model2d(tmp_path_factory):
    return _model_folder(tmp_path_factory.mktemp("m2") / "model", 2, (12, 12))


def _zarr_input(path, raw, chunks):
    z = zarr.create_array(store=str(path), shape=raw.shape, chunks=chunks, dtype=raw.dtype)
    z[...] = raw
    return path


def _raw(shape, seed=0):
    return (np.random.default_rng(seed).normal(size=shape) * 300 + 1000).astype(np.uint16)


def _reference(model_dir, inp, tmp_path, **kw):
    """The single-process streaming prediction (labels, confidence) and the in-memory probabilities."""
    from napari_labelfx.io.reader import read_image

    pred = Predictor.from_folder(model_dir, device="cpu", **kw)
    img = read_image(inp, eager_limit=0)
    chw = pred.to_channels_first(img.data, img.axes)
    pred.predict_to_zarr(chw, tmp_path / "ref.zarr", confidence_path=tmp_path / "ref_conf.zarr")
    mem = pred(np.asarray(chw))
    return (zarr.open_array(str(tmp_path / "ref.zarr"))[...], zarr.open_array(str(tmp_path / "ref_conf.zarr"))[...],
            mem.probabilities)


def _assert_same_prediction(labels, conf, ref_labels, ref_conf, probs):
    """Labels equal wherever the top two classes differ by more than float rounding (an untrained
    network gives exact ties where its ReLUs are dead), confidence within 1e-5."""
    top2 = np.sort(probs, axis=0)[-2:]
    decided = top2[1] - top2[0] > 1e-5
    assert decided.mean() > 0.5
    np.testing.assert_array_equal(labels[decided], ref_labels[decided])
    np.testing.assert_allclose(conf, ref_conf, atol=1e-5)


# -- the block geometry ------------------------------------------------------------------------------------
@pytest.mark.parametrize("spatial,roi,overlap,block", [
    ((37, 45, 41), (8, 12, 12), 0.25, (8, 16, 16)),
    ((93, 77), (12, 12), 0.5, (16, 24)),
    ((5, 30, 20), (1, 12, 12), 0.25, (2, 12, 16)),  # a 2D model on a volume: windows one slice deep
    ((7, 9), (16, 16), 0.25, (16, 16)),  # image smaller than the window: padded, one block
])
def test_every_window_is_predicted_once_and_reaches_only_the_next_blocks(spatial, roi, overlap, block):
    plan = BlockPlan(spatial, roi, overlap, align_block(spatial, block, block, roi))
    owners = {}
    for idx in plan.blocks():
        for start in itertools.product(*plan.owned_starts(idx)):
            assert start not in owners
            owners[start] = idx
            ext = plan.extent(idx)
            # the window's part inside the image lies in the block's extent
            assert all(lo <= s and min(s + r, n) <= hi for s, r, n, (lo, hi) in zip(start, roi, spatial, ext))
    assert len(owners) == np.prod([len(s) for s in plan.axis_starts])
    # what spills past a block is exactly the union of its pieces (each inside one later block)
    for idx in plan.blocks():
        ext = plan.extent(idx)
        covered = np.zeros([hi - lo for lo, hi in ext], int)
        reg = plan.region(idx)
        covered[tuple(slice(0, hi - lo) for lo, hi in reg)] += 1
        for e in plan.offsets():
            piece = plan.piece_region(idx, e)
            if piece is not None:
                covered[tuple(slice(a - lo, b - lo) for (a, b), (lo, _) in zip(piece, ext))] += 1
        assert (covered == 1).all()


@pytest.mark.parametrize("case", ["3d", "2d", "slicewise", "multilabel"])
def test_blocks_blend_exactly_as_the_single_process_predictor(tmp_path, case):
    dims = 2 if case in ("2d", "slicewise", "multilabel") else 3
    roi = (12, 12) if dims == 2 else (8, 12, 12)
    folder = _model_folder(tmp_path / "m", dims, roi, num_classes=2 if case == "multilabel" else 3,
                           multilabel=case == "multilabel")
    shape = {"3d": (1, 21, 30, 26), "2d": (1, 50, 41), "slicewise": (1, 4, 30, 27), "multilabel": (1, 40, 33)}[case]
    raw = _raw(shape)
    pred = Predictor.from_folder(folder, device="cpu")
    expected = pred(raw).probabilities
    chw = pred.to_channels_first(raw[0], "ZYX" if len(shape) == 4 else "YX")
    slicewise = pred.is_slicewise(chw)
    plan_roi = (1, *roi) if slicewise else roi
    spatial = chw.shape[1:]
    block = (2, 16, 16) if slicewise else (8, 16, 16)[-dims:]
    plan = BlockPlan(spatial, plan_roi, pred.overlap, align_block(spatial, block, block, plan_roi))
    path = _zarr_input(tmp_path / "in.zarr", raw[0], (4, 8, 8)[-len(spatial):])
    job = Job(plan=plan, source=PathSource(str(path)), normalisation=pred.normalisation_for(chw),
              num_classes=pred.num_classes, multilabel=pred.multilabel, threshold=0.5, tta=False, amp=False,
              batch_size=3, slicewise=slicewise, folder=str(tmp_path / "run"), labels_path="", confidence_path=None,
              threads=None, device="cpu")
    (tmp_path / "run" / "pieces").mkdir(parents=True)
    got = np.zeros_like(expected)
    own = {idx: forward_block(job, pred, idx) for idx in plan.blocks()}
    for idx in plan.blocks():
        region = (slice(None), *(slice(lo, hi) for lo, hi in plan.region(idx)))
        got[region] = blend_block(job, idx, own[idx])
    np.testing.assert_allclose(got, expected, atol=1e-5)


# -- whole runs on a cluster -------------------------------------------------------------------------------
def test_distributed_3d_equals_single_process_and_reads_back(tmp_path, model3d, thread_client):
    raw = _raw((21, 40, 35))
    inp = _zarr_input(tmp_path / "in.zarr", raw, (8, 16, 16))
    ref_labels, ref_conf, probs = _reference(model3d, inp, tmp_path)
    summary = predict_distributed(model3d, inp, tmp_path / "out.zarr", client=thread_client, block=(8, 16, 16),
                                  confidence=tmp_path / "conf.zarr", device="cpu")
    assert summary["blocks"] == 3 * 3 * 3 and summary["computed"] == summary["blocks"]
    out = zarr.open_array(str(tmp_path / "out.zarr"))
    _assert_same_prediction(out[...], zarr.open_array(str(tmp_path / "conf.zarr"))[...], ref_labels, ref_conf, probs)
    attrs = dict(out.attrs)
    assert attrs["labelfx_labels"] is True and attrs["labelfx_complete_chunks"] is True and attrs["axes"] == "ZYX"
    assert attrs["labelfx"]["class_names"] == ["bg", "a", "b"]
    assert not partial_folder(tmp_path / "out.zarr").exists()
    from napari_labelfx.io.reader import read_image

    img = read_image(tmp_path / "out.zarr")
    assert img.is_labels and img.shape == raw.shape


def test_distributed_2d_writes_an_ome_zarr_pyramid(tmp_path, model2d, thread_client):
    raw = _raw((150, 135), seed=1)
    inp = _zarr_input(tmp_path / "in.zarr", raw, (32, 32))
    ref_labels, ref_conf, probs = _reference(model2d, inp, tmp_path)
    summary = predict_distributed(model2d, inp, tmp_path / "out.zarr", client=thread_client, block=64, pyramid=2,
                                  device="cpu")
    assert summary["blocks"] == 9
    from napari_labelfx.io.reader import read_image

    img = read_image(tmp_path / "out.zarr")
    assert img.multiscale and img.is_labels and [lv.shape for lv in img.data] == [(150, 135), (75, 68), (38, 34)]
    level0 = np.asarray(img.data[0])
    _assert_same_prediction(level0, ref_conf, ref_labels, ref_conf, probs)
    np.testing.assert_array_equal(np.asarray(img.data[2]), level0[::4, ::4])


def test_a_forest_model_folder_predicts_the_same(tmp_path, thread_client):
    from napari_labelfx.forest.classifier import ForestSettings, PixelForest
    from napari_labelfx.forest.features import FilterBank
    from napari_labelfx.forest.folder import save_forest

    rng = np.random.default_rng(0)
    mask = np.zeros((64, 48), bool)
    mask[8:28, 10:30] = mask[40:60, 25:45] = True
    image = (mask * 1.0 + rng.normal(0, 0.3, mask.shape)).astype(np.float32)
    bank = FilterBank(sigmas=(1.0,))
    feats = bank.compute(image[None]).reshape(bank.n_features(1), -1).T
    forest = PixelForest(2, False, ForestSettings(n_trees=4)).fit(feats[::5], mask.ravel()[::5].astype(int))
    save_forest(tmp_path / "forest", forest, bank, 1, {"class_names": ["background", "x"]})
    inp = _zarr_input(tmp_path / "in.zarr", image, (32, 32))
    ref_labels, ref_conf, probs = _reference(tmp_path / "forest", inp, tmp_path, roi_size=32)
    predict_distributed(tmp_path / "forest", inp, tmp_path / "out.zarr", client=thread_client, block=32, roi_size=32,
                        confidence=tmp_path / "conf.zarr")
    _assert_same_prediction(zarr.open_array(str(tmp_path / "out.zarr"))[...],
                            zarr.open_array(str(tmp_path / "conf.zarr"))[...], ref_labels, ref_conf, probs)


def test_a_cancelled_run_restarts_where_it_stopped(tmp_path, model3d, thread_client):
    raw = _raw((24, 40, 40), seed=2)
    inp = _zarr_input(tmp_path / "in.zarr", raw, (8, 16, 16))
    out = tmp_path / "out.zarr"

    def stop_after_four(done, total):
        if done >= 4:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        predict_distributed(model3d, inp, out, client=thread_client, block=(8, 16, 16), progress=stop_after_four,
                            device="cpu")
    folder = run_folder(out)
    assert not out.exists() and folder.is_dir()  # nothing half-written at the output path
    markers = {p.name: p.stat().st_mtime_ns for p in (folder / "done").iterdir()}
    assert len(markers) >= 4
    before = worker_stats()["forward_blocks"]  # threads: the workers share this process's counters
    seen = []
    summary = predict_distributed(model3d, inp, out, client=thread_client, block=(8, 16, 16), device="cpu",
                                  progress=lambda d, t: seen.append(d))
    assert summary["skipped"] == len(markers) and summary["computed"] == summary["blocks"] - len(markers)
    plan = BlockPlan((24, 40, 40), (8, 12, 12), 0.25, (8, 16, 16))
    todo = [b for b in plan.blocks() if f"predict-{plan.name(b)}" not in markers]
    assert len(todo) == summary["computed"]
    # only the unfinished blocks predicted their windows again (blocks past the last window start own none)
    assert worker_stats()["forward_blocks"] - before == sum(plan.read_region(b) is not None for b in todo)
    assert seen[:2] == [len(markers), len(markers) + 1]  # the bar starts at the blocks already done
    ref_labels, ref_conf, probs = _reference(model3d, inp, tmp_path)
    _assert_same_prediction(zarr.open_array(str(out))[...], ref_conf, ref_labels, ref_conf, probs)
    assert not folder.exists() and not partial_folder(out).exists()


def test_a_changed_job_does_not_reuse_the_old_blocks(tmp_path, model2d, thread_client):
    inp = _zarr_input(tmp_path / "in.zarr", _raw((64, 64), seed=3), (32, 32))
    out = tmp_path / "out.zarr"
    with pytest.raises(Cancelled):
        predict_distributed(model2d, inp, out, client=thread_client, block=32, device="cpu",
                            progress=lambda d, t: (_ for _ in ()).throw(Cancelled("x")))
    summary = predict_distributed(model2d, inp, out, client=thread_client, block=32, tta=True, device="cpu")
    assert summary["skipped"] == 0


def test_a_killed_worker_does_not_lose_the_job(tmp_path, model3d):
    from napari_labelfx.inference.distributed import local_cluster

    raw = _raw((16, 48, 48), seed=4)
    inp = _zarr_input(tmp_path / "in.zarr", raw, (8, 16, 16))
    killed = []
    with local_cluster(2) as cluster, Client(cluster) as client:
        pids = list(client.run(os.getpid).values())

        def kill_one(done, total):
            if not killed and done >= 2:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

        summary = predict_distributed(model3d, inp, tmp_path / "out.zarr", client=client, block=(8, 16, 16),
                                      progress=kill_one, device="cpu")
        loads = [s["models"] for s in client.run(worker_stats).values()]
    assert killed and summary["blocks"] == 2 * 3 * 3
    assert max(loads) == 1  # the model is loaded once per worker (the restarted one loads it again)
    ref_labels, ref_conf, probs = _reference(model3d, inp, tmp_path)
    _assert_same_prediction(zarr.open_array(str(tmp_path / "out.zarr"))[...], ref_conf, ref_labels, ref_conf, probs)


# -- objects across blocks ---------------------------------------------------------------------------------
def _blobs_across_borders(shape, block, radius):
    """Separate balls centred on block borders in every direction: on the corners of the block grid and
    on its edges and faces (half a block off the other borders), two classes alternating."""
    nd = len(shape)
    half = block // 2
    centres = set()
    for base in itertools.product(*[range(block, s - radius, block) for s in shape]):
        for off in itertools.product((0, -half), repeat=nd):  # 0: on the border along that axis
            if any(o == 0 for o in off):
                centres.add(tuple(b + o for b, o in zip(base, off)))
    assert 2 * radius < half  # balls do not touch
    grid = np.indices(shape)
    labels = np.zeros(shape, np.uint8)
    for i, c in enumerate(sorted(centres)):
        labels[sum((g - ci) ** 2 for g, ci in zip(grid, c)) <= radius**2] = 1 + i % 2
    return labels, len(centres)


@pytest.mark.parametrize("shape,block,radius", [((64, 70), 20, 4), ((44, 50, 48), 20, 4)])
@pytest.mark.parametrize("split", ["none", "watershed"])
def test_objects_cut_by_block_borders_get_one_id(tmp_path, thread_client, shape, block, radius, split):
    labels, n_blobs = _blobs_across_borders(shape, block, radius)
    _zarr_input(tmp_path / "labels.zarr", labels, (block,) * len(shape))
    n = objects_blockwise(tmp_path / "labels.zarr", tmp_path / "objects.zarr", block, client=thread_client,
                          split=split)
    ids = zarr.open_array(str(tmp_path / "objects.zarr"))[...]
    ref = objects_from_labels(labels, split=split)
    assert n == n_blobs == ref.max()
    assert sorted(np.unique(ids[ids > 0])) == list(range(1, n + 1))  # unique over the volume, 1..N
    assert ((ids > 0) == (ref > 0)).all()
    pairs = set(zip(ids[labels > 0].tolist(), ref[labels > 0].tolist()))
    assert len(pairs) == n  # the same objects as the whole-volume split, one id each


def test_predict_with_objects_merges_across_blocks(tmp_path, model2d, thread_client):
    inp = _zarr_input(tmp_path / "in.zarr", _raw((48, 48), seed=5), (16, 16))
    summary = predict_distributed(model2d, inp, tmp_path / "obj.zarr", client=thread_client, block=16, objects=True,
                                  object_classes="a,b", split="none", device="cpu")
    predict_distributed(model2d, inp, tmp_path / "lab.zarr", client=thread_client, block=16, device="cpu")
    labels = zarr.open_array(str(tmp_path / "lab.zarr"))[...]
    ids = zarr.open_array(str(tmp_path / "obj.zarr"))[...]
    assert summary["objects"] == ids.max() > 0
    assert sorted(np.unique(ids[ids > 0])) == list(range(1, ids.max() + 1))
    assert ((ids > 0) <= (labels > 0)).all()  # objects only on foreground classes
    # connected components of the whole image, ids matched one to one (objects smaller than min_size drop)
    ref = objects_from_labels(labels, split="none", min_size=summary["object_sizes"]["min_size"])
    kept = ids > 0
    assert len(set(zip(ids[kept].tolist(), ref[kept].tolist()))) == ids.max()


# -- the command line --------------------------------------------------------------------------------------
def test_cli_predict_with_workers_and_scheduler(tmp_path, model2d, thread_client, capsys):
    from napari_labelfx.cli import main

    raw = _raw((70, 64), seed=6)
    inp = _zarr_input(tmp_path / "in.zarr", raw, (16, 16))
    ref_labels, ref_conf, probs = _reference(model2d, inp, tmp_path)
    assert main(["predict", "--model", str(model2d), str(inp), str(tmp_path / "w.zarr"), "--workers", "2",
                 "--block", "32", "--device", "cpu", "--confidence", str(tmp_path / "wc.zarr")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["workers"] == 2 and summary["blocks"] == 3 * 2
    _assert_same_prediction(zarr.open_array(str(tmp_path / "w.zarr"))[...],
                            zarr.open_array(str(tmp_path / "wc.zarr"))[...], ref_labels, ref_conf, probs)
    # an existing cluster by its address (here the in-process one); the output of the first run is replaced
    address = thread_client.scheduler.address
    assert main(["predict", "--model", str(model2d), str(inp), str(tmp_path / "w.zarr"), "--scheduler", address,
                 "--block", "32", "--device", "cpu", "--pyramid", "--objects"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["objects"] > 0
    from napari_labelfx.io.reader import read_image

    assert read_image(tmp_path / "w.zarr").is_labels


def test_cli_refuses_what_distributed_prediction_cannot_do(tmp_path, model2d, capsys):
    from napari_labelfx.cli import main

    inp = _zarr_input(tmp_path / "in.zarr", _raw((40, 40)), (16, 16))
    assert main(["predict", "--model", str(model2d), str(inp), str(tmp_path / "o.zarr"), "--pyramid"]) == 2
    assert "--workers" in capsys.readouterr().err
    assert main(["predict", "--model", str(model2d), str(inp), str(tmp_path / "o.tif"), "--workers", "1"]) == 2
    assert ".zarr" in capsys.readouterr().err
    assert main(["predict", "--model", str(model2d), str(inp), str(tmp_path / "o.zarr"), "--workers", "1",
                 "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "either" in capsys.readouterr().err
