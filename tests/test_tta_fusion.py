"""TTA de-augmentation and the fusions (probabilities, weighted boxes, instances) on hand-computed cases."""
import numpy as np
import pytest

from napari_labelfx.tools.fusion import (
    FusionError,
    filter_boxes,
    fuse_instances,
    fuse_probabilities,
    nms,
    weighted_boxes_fusion,
)
from napari_labelfx.tools.tta import TTAError, TTAView, all_flips, apply_view, predict_views, tta_views, undo_view


def _image(shape=(2, 24, 32)):
    return np.random.default_rng(0).random(shape).astype(np.float32)


def test_views_are_scales_times_flips():
    views = tta_views()
    assert len(views) == 20
    assert {v.scale for v in views} == {0.8, 0.9, 1.0, 1.1, 1.2}
    assert all_flips(3)[-1] == (-3, -2, -1) and len(all_flips(3)) == 8
    with pytest.raises(TTAError):
        tta_views([0.0])


@pytest.mark.parametrize("flips", [(), (-1,), (-2,), (-2, -1)])
def test_flip_deaugmentation_is_exact_for_position_dependent_predictions(flips):
    image = _image()
    view = TTAView(1.0, flips)
    # a prediction that depends on position: each pixel's value is its own (exact round trip needed)
    aug = apply_view(image, view)
    assert not flips or not np.array_equal(aug, image)
    np.testing.assert_array_equal(undo_view(aug, view, image.shape[1:]), image)


def test_scaled_views_come_back_to_the_original_grid():
    yy, xx = np.mgrid[:40, :48].astype(np.float32)
    image = np.stack([yy / 40, xx / 48])  # smooth ramps: resizing there and back is near-exact
    out = predict_views(lambda im: im * 2.0, image, tta_views([0.8, 1.0, 1.25]))
    assert out.shape == (12, 2, 40, 48)
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))
    np.testing.assert_allclose(out[inner], 2 * np.broadcast_to(image, out.shape)[inner], atol=1e-4)
    # volumes: only the in-plane axes are resized
    vol = _image((1, 3, 20, 20))
    assert apply_view(vol, TTAView(1.2, (-1,))).shape == (1, 3, 24, 24)
    np.testing.assert_array_equal(undo_view(apply_view(vol, TTAView(1.0, (-3, -1))), TTAView(1.0, (-3, -1)), (3, 20, 20)), vol)


def test_probability_fusion_mean_and_agreement():
    a = np.array([[[0.9, 0.2]], [[0.1, 0.8]]], np.float32)  # (K=2, 1, 2)
    b = np.array([[[0.7, 0.6]], [[0.3, 0.4]]], np.float32)
    mean, conf = fuse_probabilities(np.stack([a, b]))
    np.testing.assert_allclose(mean[:, 0], [[0.8, 0.4], [0.2, 0.6]])
    # pixel 0: both views say class 0 -> 0.8 * 1; pixel 1: views disagree -> 0.6 * 0.5
    np.testing.assert_allclose(conf[0], [0.8, 0.3], atol=1e-6)


def test_weighted_boxes_fusion_hand_computed():
    v1 = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], float)
    v2 = np.array([[2, 0, 12, 10]], float)
    res = weighted_boxes_fusion([v1, v2], [np.array([0.9, 0.4]), np.array([0.3])], iou_thr=0.55, n_views=2)
    # cluster 1: (0.9 * b1 + 0.3 * b2) / 1.2 = y0 0.5, y1 10.5; score mean(0.9, 0.3) * 2/2 = 0.6
    np.testing.assert_allclose(res.boxes[0], [0.5, 0, 10.5, 10])
    assert res.scores[0] == pytest.approx(0.6)
    # cluster 2: one view of two -> 0.4 * 1/2
    np.testing.assert_allclose(res.boxes[1], [50, 50, 60, 60])
    assert res.scores[1] == pytest.approx(0.2)
    assert res.counts.tolist() == [2, 1]


def test_wbf_thresholds_classes_and_filters():
    b = [np.array([[0, 0, 10, 10]], float), np.array([[0, 0, 10, 10]], float)]
    res = weighted_boxes_fusion(b, [np.array([0.5]), np.array([0.005])], n_views=20)
    assert len(res.scores) == 1 and res.counts[0] == 1  # the 0.005 box is skipped (<= 0.01)
    assert res.scores[0] == pytest.approx(0.5 / 20)
    # different classes never fuse
    res = weighted_boxes_fusion(b, [np.array([0.5]), np.array([0.5])], [np.array([1]), np.array([2])])
    assert sorted(res.labels.tolist()) == [1, 2]
    kept = filter_boxes(res._replace(scores=np.array([0.5, 0.05])), keep_thr=0.1)
    assert len(kept.scores) == 1
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [30, 30, 40, 40]], float)
    assert nms(boxes, np.array([0.5, 0.9, 0.1]), 0.2).tolist() == [1, 2]
    with pytest.raises(FusionError):
        weighted_boxes_fusion([boxes], [np.array([0.1])])


def test_instance_fusion_matches_across_views():
    a = np.zeros((20, 20), np.int32)
    a[2:8, 2:8] = 1
    a[12:18, 12:18] = 2
    b = np.zeros((20, 20), np.int32)
    b[3:8, 2:8] = 1  # the same object, slightly smaller (IoU 30/36 > 0.5)
    res = fuse_instances([a, b], [np.array([0.9, 0.8]), np.array([0.6])], n_views=2, keep_thr=0.0)
    assert res.labels.max() == 2
    assert res.counts.tolist() == [2, 1]
    np.testing.assert_allclose(res.scores, [0.75, 0.4])
    # the fused object: pixels with >= half the weight: rows 2..7 (row 2 has 0.9 of 1.5)
    assert np.array_equal(res.labels[2:8, 2:8], np.ones((6, 6)))
    assert (res.labels == 2).sum() == 36
