"""Scores from crafted masks whose Dice, IoU and accuracy are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsiseg.metrics import MetricsError, Scores, confusion_matrix

NAMES = ["background", "a", "b"]


def crafted() -> tuple[np.ndarray, np.ndarray]:
    truth = np.zeros((4, 4), dtype=np.uint8)
    truth[2:, :2] = 1
    truth[2:, 2:] = 2
    predicted = truth.copy()
    predicted[3, :2] = 2  # two pixels of class a taken for b
    return truth, predicted


def test_perfect_prediction_scores_one():
    truth, _ = crafted()
    scores = Scores.from_matrix(confusion_matrix(truth, truth, 3), NAMES)
    assert np.all(scores.dice == 1) and np.all(scores.iou == 1)
    assert scores.mean_dice == scores.mean_iou == scores.pixel_accuracy == 1


def test_one_known_confusion():
    truth, predicted = crafted()
    m = confusion_matrix(truth, predicted, 3)
    assert m.tolist() == [[8, 0, 0], [0, 2, 2], [0, 0, 4]]
    scores = Scores.from_matrix(m, NAMES, groups={"ab": [1, 2]})
    # a: TP 2, FN 2 -> Dice 4/6, IoU 2/4. b: TP 4, FP 2 -> Dice 8/10, IoU 4/6.
    assert scores.dice.tolist() == pytest.approx([1, 2 / 3, 0.8])
    assert scores.iou.tolist() == pytest.approx([1, 0.5, 4 / 6])
    assert scores.mean_dice == pytest.approx((2 / 3 + 0.8) / 2)  # background left out
    assert scores.mean_iou == pytest.approx((0.5 + 4 / 6) / 2)
    assert scores.pixel_accuracy == pytest.approx(14 / 16)
    assert scores.groups["ab"]["dice"] == 1.0  # a and b together are all right
    table = scores.format_table()
    assert "0.6667" in table and "ab (group)" in table and "0.8750" in table


def test_ignore_accumulation_and_absent_classes():
    truth, predicted = crafted()
    ignored = truth.copy()
    ignored[3, :2] = 255  # the confused pixels are not scored
    assert Scores.from_matrix(confusion_matrix(ignored, predicted, 3), NAMES).pixel_accuracy == 1
    both = confusion_matrix(np.concatenate([truth, ignored]), np.concatenate([predicted] * 2), 3)
    assert np.array_equal(both, confusion_matrix(truth, predicted, 3)
                          + confusion_matrix(ignored, predicted, 3))
    only_background = np.zeros((2, 2), dtype=np.uint8)
    scores = Scores.from_matrix(confusion_matrix(only_background, only_background, 3), NAMES,
                                mean_over=[0, 1, 2])
    assert math.isnan(scores.dice[1]) and scores.mean_dice == 1.0
    assert scores.to_dict()["classes"]["a"]["dice"] is None


def test_out_of_range_classes_are_errors():
    truth, predicted = crafted()
    with pytest.raises(MetricsError, match="prediction holds class 3"):
        confusion_matrix(truth, predicted + 1, 3)
    with pytest.raises(MetricsError, match="same size"):
        confusion_matrix(truth, predicted[:2], 3)
