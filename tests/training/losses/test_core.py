"""The shared loss building blocks against values worked out by hand on two-pixel inputs."""

from __future__ import annotations

import math

import pytest
import torch

from wsiseg.training.losses.core import (
    binary_cross_entropy,
    binary_dice_loss,
    cross_entropy,
    edge_target,
    lovasz_hinge,
    lovasz_softmax,
    soft_dice_loss,
)

# Two pixels, two classes. Pixel A: logits (0, ln 3) -> p = (1/4, 3/4), truth 1.
# Pixel B: logits (0, 0) -> p = (1/2, 1/2), truth 0.
LOGITS = torch.tensor([[[[0.0, 0.0]], [[math.log(3), 0.0]]]])  # (1, 2, 1, 2)
TARGET = torch.tensor([[[1, 0]]])  # (1, 1, 2)


def test_cross_entropy_mean_ignore_and_weights():
    assert cross_entropy(LOGITS, TARGET).item() == pytest.approx((math.log(4 / 3) + math.log(2)) / 2)
    ignored = torch.tensor([[[1, 255]]])
    assert cross_entropy(LOGITS, ignored).item() == pytest.approx(math.log(4 / 3))
    weight = torch.tensor([[[3.0, 1.0]]])
    expected = (3 * math.log(4 / 3) + math.log(2)) / 4
    assert cross_entropy(LOGITS, TARGET, pixel_weight=weight).item() == pytest.approx(expected)


def test_soft_dice_loss_by_hand():
    # class 0: sum p = 1/4 + 1/2, sum t = 1, sum p*t = 1/2; class 1: 5/4, 1, 3/4; eps = 1.
    dice0 = (2 * 0.5 + 1) / (0.75 + 1 + 1)
    dice1 = (2 * 0.75 + 1) / (1.25 + 1 + 1)
    assert soft_dice_loss(LOGITS, TARGET).item() == pytest.approx(1 - (dice0 + dice1) / 2)


def test_lovasz_softmax_by_hand():
    # Class 0 errors: B 1/2 (fg), A 1/4 (bg). Mispredicting {B} costs Jaccard loss 1, {B, A}
    # also 1: increments (1, 0) -> 1/2. Class 1 errors: B 1/2 (bg), A 1/4 (fg): {B} costs 1/2,
    # {B, A} costs 1: increments (1/2, 1/2) -> 1/2 * 1/2 + 1/4 * 1/2 = 3/8.
    probs = LOGITS.softmax(dim=1)
    assert lovasz_softmax(probs, TARGET).item() == pytest.approx((0.5 + 0.375) / 2)
    # Only classes present in the target count: with both pixels class 1, class 0 is left out.
    ones = torch.tensor([[[1, 1]]])
    # Class 1 errors: A 1/4, B 1/2, both fg. Sorted B, A: losses {B}: 1/2, {B, A}: 1.
    assert lovasz_softmax(probs, ones).item() == pytest.approx(0.5 * 0.5 + 0.25 * 0.5)


def test_lovasz_hinge_by_hand():
    # Errors 1 - logit * sign: pixel 1 (fg, logit 2) -> -1; pixel 2 (bg, logit 0.5) -> 1.5.
    # Sorted (1.5 bg, -1 fg): Jaccard loss of {2} is 1/2, of {2, 1} is 1 -> increments 1/2, 1/2.
    logits = torch.tensor([[[2.0, 0.5]]])
    target = torch.tensor([[[1, 0]]])
    assert lovasz_hinge(logits, target).item() == pytest.approx(1.5 * 0.5 + 0.0 * 0.5)


def test_binary_losses_by_hand():
    logits = torch.tensor([[[0.0, math.log(3)]]])  # sigmoid: 1/2, 3/4
    target = torch.tensor([[[1, 0]]])
    assert binary_cross_entropy(logits, target).item() == pytest.approx(1.5 * math.log(2))
    assert binary_dice_loss(logits, target).item() == pytest.approx(1 - 2 / 3.25)
    ignored = torch.tensor([[[1, 255]]])
    assert binary_cross_entropy(logits, ignored).item() == pytest.approx(math.log(2))


def test_edge_target_marks_both_sides_of_a_class_change_and_skips_ignore():
    t = torch.zeros(1, 3, 3, dtype=torch.long)
    t[0, 1, 1] = 1
    expected = torch.tensor([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.float32)
    assert torch.equal(edge_target(t)[0], expected)
    t[0, 0, :] = 255  # ignored pixels are no class: no edge along them
    expected[0, 1] = 0
    assert torch.equal(edge_target(t)[0], expected)


def test_all_ignored_gives_zero_with_a_gradient():
    logits = LOGITS.clone().requires_grad_(True)
    target = torch.full((1, 1, 2), 255)
    total = (cross_entropy(logits, target) + lovasz_softmax(logits.softmax(1), target)
             + lovasz_hinge(logits[:, 0], target) + binary_cross_entropy(logits[:, 0], target))
    assert total.item() == 0.0
    total.backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)


def test_segmentation_criterion_weights_ce_and_dice():
    from wsiseg.training.losses.segmentation import SegmentationCriterion

    ce = (math.log(4 / 3) + math.log(2)) / 2
    dice = 1 - ((2 * 0.5 + 1) / 2.75 + (2 * 0.75 + 1) / 3.25) / 2
    total, parts = SegmentationCriterion()({"logits": LOGITS}, {"target": TARGET})
    assert total.item() == pytest.approx(ce) and set(parts) == {"ce"}
    total, parts = SegmentationCriterion(ce_weight=2.0, dice_weight=0.5)(
        {"logits": LOGITS}, {"target": TARGET})
    assert parts["dice"] == pytest.approx(dice)
    assert total.item() == pytest.approx(2 * ce + 0.5 * dice)
