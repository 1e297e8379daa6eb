"""Metrics against hand-computed cases (values cross-checked once against pycocotools' COCOeval)."""
import numpy as np
import pytest

from napari_labelfx.tools.metrics import (
    COCO_IOU_THRESHOLDS,
    InstanceEvaluator,
    MetricsInputError,
    SemanticEvaluator,
    box_iou_matrix,
    boxes_from_instances,
    instance_metrics,
    instance_scores,
    instances_from_semantic,
    mask_iou_matrix,
    match_instances,
    overlap_counts,
    semantic_metrics,
)


def squares(shape=(40, 40), boxes=((2, 2, 12, 12), (20, 20, 30, 30), (2, 25, 10, 35))):
    lab = np.zeros(shape, np.uint16)
    for i, (y0, x0, y1, x1) in enumerate(boxes, start=1):
        lab[y0:y1, x0:x1] = i
    return lab


def test_overlap_counts_and_iou_hand_values():
    t = np.zeros((10, 10), np.int32)
    p = np.zeros((10, 10), np.int32)
    t[0:4, 0:4] = 7  # 16 px, sparse large id
    p[0:4, 2:6] = 300  # 16 px, 8 shared
    counts, ids_t, ids_p = overlap_counts(t, p)
    assert ids_t.tolist() == [7] and ids_p.tolist() == [300]
    assert counts[1, 1] == 8 and counts[1, 0] == 8 and counts[0, 1] == 8
    iou, _, _ = mask_iou_matrix(t, p)
    assert iou[0, 0] == pytest.approx(8 / 24)


def test_perfect_match_gives_ap_and_ar_one():
    t = squares()
    p = t.copy() * 5  # other ids, same objects
    r = instance_metrics([t, t], [p, p])
    assert r["AP50"] == 1.0 and r["AP75"] == 1.0 and r["AP"] == 1.0 and r["AR"] == 1.0
    assert r["max_dets"] == 1000 and r["n_true"] == 6 and r["n_pred"] == 6


def test_one_missing_object_drops_recall_and_ap():
    t = squares()
    p = t.copy()
    p[p == 3] = 0
    r = instance_metrics([t], [p])
    assert r["AR"] == pytest.approx(2 / 3)
    # precision 1 up to recall 2/3: 67 of the 101 recall points (0.00 .. 0.66)
    assert r["AP50"] == pytest.approx(67 / 101)
    assert r["AP"] == pytest.approx(67 / 101)


def test_iou_threshold_edge_is_inclusive():
    t = np.zeros((20, 20), np.int32)
    t[0:10, 0:10] = 1
    p = np.zeros_like(t)
    p[0:10, 0:5] = 1  # IoU exactly 0.5
    r = instance_metrics([t], [p])
    assert r["AP50"] == 1.0
    assert r["ap_per_threshold"]["0.55"] == 0.0
    assert r["AP75"] == 0.0
    assert r["AP"] == pytest.approx(0.1)
    assert r["AR"] == pytest.approx(0.1)


def test_score_order_decides_which_prediction_matches():
    t = np.zeros((20, 20), np.int32)
    t[0:10, 0:10] = 1
    p = np.zeros_like(t)
    p[0:10, 0:9] = 1  # IoU 0.9
    p[10:14, 10:14] = 2  # a false positive
    # false positive scored higher: precision is 1/2 when the true object is found
    r = instance_metrics([t], [p], confs=None, max_dets=10)
    assert r["AP50"] == 1.0  # equal scores keep id order: the match comes first
    ev = InstanceEvaluator()
    ev.add(t, p, scores=np.array([0.2, 0.9]))
    assert ev.summary()["AP50"] == pytest.approx(0.5)
    # greedy matching: of two candidates, the higher score takes the object
    iou = np.array([[0.8, 0.6]])
    assert match_instances(iou, np.array([1, 0]), 0.5).tolist() == [0, -1]
    assert match_instances(iou, np.array([0, 1]), 0.5).tolist() == [0, -1]
    assert match_instances(iou, np.array([1, 0]), 0.7).tolist() == [-1, 0]


def test_max_dets_limits_detections_and_is_reported():
    t = squares()
    ev = InstanceEvaluator(max_dets=1)
    ev.add(t, t, scores=np.array([0.1, 0.9, 0.5]))
    r = ev.summary()
    assert r["max_dets"] == 1
    assert r["AR"] == pytest.approx(1 / 3)
    with pytest.raises(MetricsInputError):
        InstanceEvaluator(max_dets=0)


def test_scores_from_confidence_map():
    t = squares()
    conf = np.zeros(t.shape, np.float32)
    conf[t == 1] = 0.9
    conf[t == 2] = 0.4
    scores, ids = instance_scores(t, conf)
    assert ids.tolist() == [1, 2, 3]
    assert scores.tolist() == pytest.approx([0.9, 0.4, 0.0])


def test_box_iou_differs_from_mask_iou_for_hollow_objects():
    t = np.zeros((20, 20), np.int32)
    t[2:12, 2:12] = 1
    p = t.copy()
    p[4:10, 4:10] = 0  # a ring: same box, 64 of 100 pixels
    assert mask_iou_matrix(t, p)[0][0, 0] == pytest.approx(0.64)
    boxes, ids = boxes_from_instances(p)
    assert boxes.tolist() == [[2, 2, 12, 12]] and ids.tolist() == [1]
    assert box_iou_matrix(boxes, boxes_from_instances(t)[0])[0, 0] == 1.0
    assert instance_metrics([t], [p], iou_type="box")["AP"] == 1.0
    assert instance_metrics([t], [p], iou_type="mask")["AP75"] == 0.0
    half = np.array([[0, 0, 10, 5]])
    assert box_iou_matrix(np.array([[0, 0, 10, 10]]), half)[0, 0] == pytest.approx(0.5)


def test_no_true_objects_gives_nan_and_empty_prediction_gives_zero():
    empty = np.zeros((10, 10), np.int32)
    r = instance_metrics([empty], [empty])
    assert np.isnan(r["AP"]) and np.isnan(r["AR"])
    r = instance_metrics([squares()], [np.zeros((40, 40), np.int32)])
    assert r["AP"] == 0.0 and r["AR"] == 0.0


def test_coco_thresholds():
    assert COCO_IOU_THRESHOLDS[0] == 0.5 and COCO_IOU_THRESHOLDS[5] == 0.75 and len(COCO_IOU_THRESHOLDS) == 10


def test_semantic_pooled_and_per_image_means():
    names = ["background", "a", "b"]
    t1 = np.zeros((10, 10), np.int64)
    t1[:, :5] = 1  # 50 px of class a, predicted right
    p1 = t1.copy()
    t2 = np.zeros((10, 10), np.int64)
    t2[0, :2] = 1  # 2 px of a, missed; class b absent from both
    p2 = np.zeros_like(t2)
    r = semantic_metrics([t1, t2], [p1, p2], names)
    assert r["dice"]["a"] == pytest.approx(100 / 102)  # pooled: 2*50 / (2*50 + 0 + 2)
    assert r["iou"]["a"] == pytest.approx(50 / 52)
    assert r["per_image_mean"]["dice"]["a"] == pytest.approx(0.5)
    assert np.isnan(r["dice"]["b"])  # absent everywhere: undefined, left out of the mean
    assert r["mean_dice"] == pytest.approx(100 / 102)
    assert "background" not in r["dice"]


def test_semantic_absent_class_is_skipped_per_image():
    names = ["background", "a"]
    t = np.zeros((4, 4), np.int64)
    ev = SemanticEvaluator(names)
    full = np.ones((4, 4), np.int64)
    ev.add(full, full)  # perfect
    ev.add(t, t)  # a absent from both: skipped, not a 0 or 1
    r = ev.summary()
    assert r["per_image_mean"]["dice"]["a"] == 1.0 and r["n_images"] == 2


def test_semantic_multilabel_and_ignore():
    t = np.zeros((2, 6, 6), np.uint8)
    t[0, :3] = 1
    t[1, :, :3] = 1
    p = t.copy()
    p[1, :, 3] = 1  # 6 false positive pixels on channel b
    r = semantic_metrics([t], [p], ["a", "b"], multilabel=True)
    assert r["dice"]["a"] == 1.0
    assert r["dice"]["b"] == pytest.approx(36 / 42)
    # background_index=0 leaves channel 0 out of the means (derived background channels)
    r0 = semantic_metrics([t], [p], ["bg", "b"], multilabel=True, background_index=0)
    assert list(r0["dice"]) == ["b"]
    # ignored truth pixels are not scored
    t_ign = t.astype(np.int64)[1]
    t_ign[:, 3] = -1
    r = semantic_metrics([t_ign], [p[1].astype(np.int64)], ["bg", "b"], ignore_value=-1)
    assert r["dice"]["b"] == 1.0


def test_semantic_rejects_bad_input():
    with pytest.raises(MetricsInputError):
        semantic_metrics([np.zeros((3, 3), int)], [np.zeros((3, 4), int)], ["bg", "a"])
    with pytest.raises(MetricsInputError):
        semantic_metrics([np.full((3, 3), 5)], [np.zeros((3, 3), int)], ["bg", "a"])


def test_instances_from_semantic_components_watershed_and_min_size():
    from skimage.draw import disk

    lab = np.zeros((60, 80), np.uint8)
    for c in ((30, 22), (30, 40)):  # two touching disks, radius 10, centres 18 apart
        rr, cc = disk(c, 10, shape=lab.shape)
        lab[rr, cc] = 1
    lab[5, 70] = 1  # a speck
    conf = np.full(lab.shape, 0.8, np.float32)
    cc_set = instances_from_semantic(lab, conf, min_size=5)
    assert cc_set.labels.max() == 1 and cc_set.scores.tolist() == pytest.approx([0.8])
    assert cc_set.labels.dtype == np.int32 and cc_set.classes.tolist() == [1]
    ws = instances_from_semantic(lab, conf, min_size=5, split="watershed", min_distance=5)
    assert ws.labels.max() == 2
    sizes = np.bincount(ws.labels.ravel())[1:]
    assert abs(int(sizes[0]) - int(sizes[1])) < 0.2 * sizes.max()
    keep_speck = instances_from_semantic(lab, min_size=1)
    assert keep_speck.labels.max() == 2 and keep_speck.scores.tolist() == [1.0, 1.0]
    # several classes: components per class, touching classes stay apart
    two = np.zeros((10, 10), np.uint8)
    two[:, :5] = 1
    two[:, 5:] = 2
    s = instances_from_semantic(two, min_size=1)
    assert s.labels.max() == 2 and sorted(s.classes.tolist()) == [1, 2]
    with pytest.raises(MetricsInputError):
        instances_from_semantic(lab, split="magic")


def test_metrics_are_fast_on_large_images():
    import time

    rng = np.random.default_rng(0)
    t = np.zeros((1024, 1344), np.uint16)
    for i in range(1, 101):  # ~100 nuclei
        y, x = rng.integers(20, 1000), rng.integers(20, 1320)
        t[y - 15 : y + 15, x - 15 : x + 15] = i
    p = np.roll(t, 2, axis=1)
    start = time.perf_counter()
    r = instance_metrics([t], [p])
    assert time.perf_counter() - start < 5.0
    assert r["AP50"] > 0.9
