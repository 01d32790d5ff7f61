"""FullNet's weight map, targets and varCE against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wsiseg.training.losses.fullnet import FullNetCriterion, three_class_target, var_ce, weight_map


def test_weight_map_between_two_instances():
    instances = np.array([[1, 0, 0, 0, 0, 0, 2]])
    w = weight_map(instances, w0=10.0, sigma=2.0)
    # Pixel 3: 3 px to each instance; pixel 1: 1 and 5; pixel 0: 0 (inside 1) and 6.
    assert w[0, 3] == pytest.approx(1 + 10 * math.exp(-36 / 8))
    assert w[0, 1] == pytest.approx(1 + 10 * math.exp(-36 / 8))
    assert w[0, 0] == pytest.approx(1 + 10 * math.exp(-36 / 8))
    assert np.all(weight_map(np.array([[0, 1, 1]])) == 1)  # one instance: no gaps


def test_three_class_target_marks_contours():
    instances = np.zeros((5, 7), dtype=np.int64)
    instances[1:4, 1:4] = 1
    instances[1:4, 4:6] = 2
    target = three_class_target(instances)
    assert target[2, 2] == 1  # interior
    assert target[1, 1] == 2 and target[2, 3] == 2 and target[2, 4] == 2  # edges and the touch
    assert target[0, 0] == 0


def test_var_ce_by_hand():
    # One instance of two pixels with class-1 probabilities 0.2 and 0.6 (class 0: 0.8, 0.4):
    # each class has variance 0.04, so varCE = 0.08; the background pixel does not count.
    probs = torch.tensor([[[[0.8, 0.4, 0.5]], [[0.2, 0.6, 0.5]]]])
    instances = torch.tensor([[[1, 1, 0]]])
    assert var_ce(probs, instances).item() == pytest.approx(0.08)


def test_criterion_adds_weighted_ce_and_var_ce():
    # Pixel logits (0, ln 3) -> p1 = 3/4; (0, 0) -> p1 = 1/2. Both class 1, one instance.
    logits = torch.tensor([[[[0.0, 0.0]], [[math.log(3), 0.0]]]])
    target = torch.tensor([[[1, 1]]])
    weight = torch.tensor([[[1.0, 3.0]]])
    total, parts = FullNetCriterion(alpha=1.0)({"logits": logits},
                                               {"target": target, "pixel_weight": weight})
    ce = (math.log(4 / 3) + 3 * math.log(2)) / 4
    var = 2 * (0.125**2)  # both classes: probabilities 1/4 apart, variance (1/8)^2
    assert parts["weighted_ce"] == pytest.approx(ce)
    assert parts["var_ce"] == pytest.approx(var)
    assert total.item() == pytest.approx(ce + var)
