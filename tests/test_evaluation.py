"""Segmentation metrics: hand-computed cases, a direct per-pixel loop, batch accumulation, edge cases."""

import math

import jax
import numpy as np
import pytest

from gsd.evaluation import Confusion, confusion_matrix

NAMES = ('background', 'eye', 'mouth')
# gt 0: pred 0,0,0,1; gt 1: pred 1,1; gt 2: pred 2,0.
GT = np.array([[0, 0, 0, 0], [1, 1, 2, 2]])
PRED = np.array([[0, 0, 0, 1], [1, 1, 2, 0]])


def test_hand_computed():
    conf = Confusion(3, NAMES)
    conf.update(GT, PRED)
    r = conf.results(background=0)
    assert r['confusion'] == [[3, 1, 0], [0, 2, 0], [1, 0, 1]]
    # IoU = TP / (gt + pred - TP): 3/5, 2/3, 1/2.
    iou = r['per_class_iou']
    assert iou == pytest.approx({'background': 60.0, 'eye': 200 / 3, 'mouth': 50.0})
    assert r['mean_iou'] == pytest.approx((60 + 200 / 3 + 50) / 3)
    assert r['mean_iou_no_bg'] == pytest.approx((200 / 3 + 50) / 2)
    # gt shares 4/8, 2/8, 2/8; without background 2/4, 2/4.
    assert r['weighted_iou'] == pytest.approx((4 * 60 + 2 * 200 / 3 + 2 * 50) / 8)
    assert r['weighted_iou_no_bg'] == pytest.approx((2 * 200 / 3 + 2 * 50) / 4)
    assert r['pixel_accuracy'] == pytest.approx(75.0)
    assert r['gt_pixels'] == {'background': 4, 'eye': 2, 'mouth': 2}


def test_ignored_pixels_do_not_count():
    gt = np.concatenate([GT, [[255, -1, 255, -3]]])
    pred = np.concatenate([PRED, [[2, 1, 0, 2]]])
    assert np.asarray(confusion_matrix(gt, pred, 3)).tolist() == [[3, 1, 0], [0, 2, 0], [1, 0, 1]]
    conf = Confusion(3, NAMES)
    conf.update(gt, pred)
    assert conf.results()['pixel_accuracy'] == pytest.approx(75.0)


def test_perfect_prediction_scores_100():
    gt = np.random.default_rng(0).integers(0, 3, (2, 5, 5))
    conf = Confusion(3, NAMES)
    conf.update(gt, gt)
    r = conf.results()
    for key in ('mean_iou', 'mean_iou_no_bg', 'weighted_iou', 'weighted_iou_no_bg', 'pixel_accuracy'):
        assert r[key] == pytest.approx(100.0), key


def test_absent_class_is_nan_and_skipped_but_false_positives_count():
    # Class 3 is in neither gt nor pred: NaN, left out of the means. Class 2 is only predicted: IoU 0.
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 1, 2])
    conf = Confusion(4)
    conf.update(gt, pred)
    r = conf.results(background=0)
    iou = r['per_class_iou']
    assert math.isnan(iou['class_3']) and iou['class_2'] == 0.0
    assert iou['class_0'] == 100.0 and iou['class_1'] == 50.0
    assert r['mean_iou'] == pytest.approx(50.0)  # (100 + 50 + 0) / 3
    assert r['mean_iou_no_bg'] == pytest.approx(25.0)  # (50 + 0) / 2
    assert r['weighted_iou'] == pytest.approx(75.0)  # 0.5 * 100 + 0.5 * 50
    assert r['weighted_iou_no_bg'] == pytest.approx(50.0)


def test_no_background_and_empty():
    conf = Confusion(3, NAMES)
    assert all(math.isnan(conf.results()[k]) for k in ('mean_iou', 'weighted_iou', 'pixel_accuracy'))
    conf.update(GT, PRED)
    r = conf.results(background=None)
    assert r['mean_iou_no_bg'] == r['mean_iou'] and r['weighted_iou_no_bg'] == r['weighted_iou']


def _loop_metrics(gt, pred, n):
    """The definitions written out pixel by pixel."""
    m = np.zeros((n, n), np.int64)
    for g, p in zip(gt.reshape(-1), pred.reshape(-1)):
        if 0 <= g < n:
            m[g, p] += 1
    iou = []
    for c in range(n):
        tp, fp, fn = m[c, c], m[:, c].sum() - m[c, c], m[c].sum() - m[c, c]
        iou.append(100.0 * tp / (tp + fp + fn) if tp + fp + fn else np.nan)
    share = m.sum(1) / m.sum()
    part_share = m.sum(1)[1:] / m.sum(1)[1:].sum()
    return m, np.array(iou), np.nansum(np.array(iou) * share), np.nansum(np.array(iou)[1:] * part_share)


def test_random_batches_match_loop_and_single_pass():
    rng = np.random.default_rng(1)
    n = 5
    gt = rng.integers(0, n, (6, 7, 9))
    gt[rng.random(gt.shape) < 0.1] = 255
    # Mostly right, to give IoUs far from both 0 and 100.
    pred = np.where(rng.random(gt.shape) < 0.6, np.clip(gt, 0, n - 1), rng.integers(0, n, gt.shape))
    m, iou, weighted, weighted_no_bg = _loop_metrics(gt, pred, n)

    batched, whole = Confusion(n), Confusion(n)
    for i in range(0, 6, 2):
        batched.update(gt[i : i + 2], pred[i : i + 2])
    whole.update(jax.numpy.asarray(gt), jax.numpy.asarray(pred))  # device arrays take the same path
    assert np.array_equal(batched.matrix, m) and np.array_equal(whole.matrix, m)
    assert batched.matrix.dtype == np.int64
    r = batched.results()
    assert np.allclose(list(r['per_class_iou'].values()), iou)
    assert r['mean_iou'] == pytest.approx(np.nanmean(iou))
    assert r['weighted_iou'] == pytest.approx(weighted)
    assert r['weighted_iou_no_bg'] == pytest.approx(weighted_no_bg)
    assert r == whole.results()


def test_confusion_matrix_jits():
    f = jax.jit(confusion_matrix, static_argnums=2)
    assert np.asarray(f(GT, PRED, 3)).tolist() == [[3, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_stray_labels_are_refused():
    conf = Confusion(3, NAMES)
    with pytest.raises(ValueError, match='ground truth holds class ids >= 3'):
        conf.update(np.array([0, 7]), np.array([0, 1]))
    with pytest.raises(ValueError, match='1 predicted pixels'):
        conf.update(np.array([0, 1, 255]), np.array([0, 3, 9]))  # the 9 sits on an ignored pixel
    with pytest.raises(ValueError, match='shapes differ'):
        conf.update(np.zeros((2, 2), int), np.zeros(4, int))
    assert conf.matrix.sum() == 0
