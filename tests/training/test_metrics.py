"""Confusion matrix and scores against values worked out by hand on small maps."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from wsiseg.training.metrics import MetricsError, Scores, confusion_matrix

NAMES3 = ("background", "lesion", "other")
NAMES4 = ("background", "stroma", "normal", "tumour")


def test_perfect_prediction_scores_one_everywhere():
    truth = np.array([[0, 0, 1, 1], [2, 2, 1, 1], [0, 2, 2, 1]], dtype=np.uint8)
    m = confusion_matrix(truth, truth, 3)
    assert m.dtype == np.int64 and m.shape == (3, 3)
    assert np.array_equal(m, np.diag([3, 5, 4]))
    s = Scores.from_matrix(m, NAMES3, groups={"both": [1, 2]})
    assert np.array_equal(s.dice, [1, 1, 1]) and np.array_equal(s.iou, [1, 1, 1])
    assert s.mean_dice == s.mean_iou == s.pixel_accuracy == 1.0
    assert s.groups["both"]["dice"] == s.groups["both"]["iou"] == 1.0


def test_four_lesion_pixels_predicted_as_another_class():
    # 4 x 4 map: a row of background, two rows of class 1, a row of class 2; the second row
    # of class 1 (4 pixels) is predicted as class 2.
    truth = np.array([[0] * 4, [1] * 4, [1] * 4, [2] * 4], dtype=np.uint8)
    predicted = np.array([[0] * 4, [1] * 4, [2] * 4, [2] * 4], dtype=np.uint8)
    m = confusion_matrix(truth, predicted, 3)
    assert np.array_equal(m, [[4, 0, 0], [0, 4, 4], [0, 0, 4]])
    s = Scores.from_matrix(m, NAMES3)
    # class 1: TP 4, FP 0, FN 4 -> Dice 8/12, IoU 4/8; class 2: TP 4, FP 4, FN 0 -> the same.
    assert s.dice == pytest.approx([1, 2 / 3, 2 / 3])
    assert s.iou == pytest.approx([1, 0.5, 0.5])
    assert s.mean_over == (1, 2)  # background is left out of the means by default
    assert s.mean_dice == pytest.approx(2 / 3) and s.mean_iou == pytest.approx(0.5)
    assert s.pixel_accuracy == pytest.approx(12 / 16)
    # Averaging over every class, background included, when asked for.
    every = Scores.from_matrix(m, NAMES3, mean_over=[0, 1, 2])
    assert every.mean_dice == pytest.approx((1 + 4 / 3) / 3)
    assert every.mean_iou == pytest.approx(2 / 3)


def test_group_is_scored_as_one_class_against_the_rest():
    truth = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]], dtype=np.uint8)
    predicted = np.array([[0, 0, 0, 0], [1, 1, 1, 2], [3, 3, 2, 2], [3, 3, 3, 1]], dtype=np.uint8)
    s = Scores.from_matrix(confusion_matrix(truth, predicted, 4), NAMES4,
                           groups={"gland": [2, 3]})
    # normal: TP 2, FP 1, FN 2; tumour: TP 3, FP 2, FN 1.
    assert s.dice[2] == pytest.approx(4 / 7) and s.iou[2] == pytest.approx(2 / 5)
    assert s.dice[3] == pytest.approx(6 / 9) and s.iou[3] == pytest.approx(3 / 6)
    # gland (normal or tumour): normal<->tumour swaps count as right. TP 7, FP 1, FN 1.
    assert s.groups["gland"]["classes"] == [2, 3]
    assert s.groups["gland"]["dice"] == pytest.approx(14 / 16)
    assert s.groups["gland"]["iou"] == pytest.approx(7 / 9)
    assert s.pixel_accuracy == pytest.approx(12 / 16)


def test_ignored_truth_pixels_are_not_counted():
    truth = np.array([[0, 1, 255], [1, 255, 2]], dtype=np.uint8)
    predicted = np.array([[0, 1, 2], [1, 0, 2]], dtype=np.uint8)  # wrong only where ignored
    m = confusion_matrix(truth, predicted, 3)
    assert m.sum() == 4 and np.array_equal(m, np.diag([1, 2, 1]))
    assert Scores.from_matrix(m, NAMES3).pixel_accuracy == 1.0
    # Another ignore value; 255 is then an ordinary value, and out of range.
    truth7 = np.where(truth == 255, 7, truth)
    assert np.array_equal(confusion_matrix(truth7, predicted, 3, ignore_index=7), m)
    with pytest.raises(MetricsError, match="truth holds class 255, outside 0..2"):
        confusion_matrix(truth, predicted, 3, ignore_index=None)


def test_matrices_of_two_images_add_up_to_that_of_both():
    rng = np.random.default_rng(3)
    a_t, a_p = rng.integers(0, 4, (30, 40)), rng.integers(0, 4, (30, 40))
    b_t, b_p = rng.integers(0, 4, (17, 23)), rng.integers(0, 4, (17, 23))
    b_t[:5] = 255
    both = confusion_matrix(np.concatenate([a_t.ravel(), b_t.ravel()]),
                            np.concatenate([a_p.ravel(), b_p.ravel()]), 4)
    summed = confusion_matrix(a_t, a_p, 4) + confusion_matrix(b_t, b_p, 4)
    assert np.array_equal(summed, both)
    # and both equal a plain count, pixel by pixel
    naive = np.zeros((4, 4), dtype=np.int64)
    for t, p in zip(np.concatenate([a_t.ravel(), b_t.ravel()]),
                    np.concatenate([a_p.ravel(), b_p.ravel()])):
        if t != 255:
            naive[t, p] += 1
    assert np.array_equal(both, naive)


def test_absent_class_has_no_score_and_is_left_out_of_the_means():
    truth = np.array([[0, 1, 1, 2], [0, 1, 2, 2]], dtype=np.uint8)
    predicted = np.array([[0, 1, 2, 2], [0, 1, 2, 2]], dtype=np.uint8)
    s = Scores.from_matrix(confusion_matrix(truth, predicted, 4), NAMES4,
                           groups={"tumour only": [3]})
    assert math.isnan(s.dice[3]) and math.isnan(s.iou[3])
    # stroma: TP 2, FN 1 -> Dice 4/5, IoU 2/3; normal: TP 3, FP 1 -> Dice 6/7, IoU 3/4
    assert s.mean_over == (1, 2, 3)
    assert s.mean_dice == pytest.approx((4 / 5 + 6 / 7) / 2)
    assert s.mean_iou == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert math.isnan(s.groups["tumour only"]["dice"])
    d = s.to_dict()
    assert d["classes"]["tumour"] == {"index": 3, "dice": None, "iou": None, "pixels": 0}
    assert d["groups"]["tumour only"]["dice"] is None
    assert d["mean_over"] == ["stroma", "normal", "tumour"]
    assert d["confusion_matrix"][1] == [0, 2, 1, 0]
    json.dumps(d, allow_nan=False)  # valid JSON: no NaN left
    # Only absent classes chosen: no mean at all rather than a made-up one.
    assert math.isnan(Scores.from_matrix(s.matrix, NAMES4, mean_over=[3]).mean_dice)


def test_to_dict_and_table_carry_the_scores():
    truth = np.array([[0] * 4, [1] * 4, [1] * 4, [2] * 4], dtype=np.uint8)
    predicted = np.array([[0] * 4, [1] * 4, [2] * 4, [2] * 4], dtype=np.uint8)
    s = Scores.from_matrix(confusion_matrix(truth, predicted, 3), NAMES3,
                           groups={"gland": [1, 2]})
    d = s.to_dict()
    assert d["mean_dice"] == pytest.approx(2 / 3) and d["pixel_accuracy"] == 0.75
    assert d["classes"]["lesion"]["iou"] == 0.5 and d["classes"]["lesion"]["pixels"] == 8
    table = s.format_table()
    lines = table.splitlines()
    assert lines[0].split() == ["class", "Dice", "IoU", "true", "pixels"]
    assert lines[2].split() == ["lesion", "0.6667", "0.5000", "8"]
    assert lines[4].split() == ["gland", "(group)", "1.0000", "1.0000"]
    assert "mean Dice 0.6667, mIoU 0.5000 (over lesion, other); pixel accuracy (AP) 0.7500" \
        in table
    assert lines[-2].split() == ["lesion", "0", "4", "4"]


def test_values_outside_the_classes_are_errors():
    t = np.zeros((2, 2), dtype=np.uint8)
    with pytest.raises(MetricsError, match="prediction holds class 3, outside 0..2"):
        confusion_matrix(t, np.full((2, 2), 3, dtype=np.uint8), 3)
    with pytest.raises(MetricsError, match="truth holds class -1"):
        confusion_matrix(np.full((2, 2), -1), t, 3)
    with pytest.raises(MetricsError, match="same size"):
        confusion_matrix(t, np.zeros((2, 3), dtype=np.uint8), 3)
    with pytest.raises(MetricsError, match="float64; class maps must hold integers"):
        confusion_matrix(t, np.zeros((2, 2)), 3)
    m = confusion_matrix(t, t, 3)
    with pytest.raises(MetricsError, match=r"group 'gland' names classes \[3\], outside 0..2"):
        Scores.from_matrix(m, NAMES3, groups={"gland": [2, 3]})
    with pytest.raises(MetricsError, match="names no class"):
        Scores.from_matrix(m, NAMES3, mean_over=[])
    with pytest.raises(MetricsError, match="does not fit 4 classes"):
        Scores.from_matrix(m, NAMES4)
