"""EHANet's loss on a two-pixel input, worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from wsiseg.training.losses.ehanet import EHANetCriterion


def test_terms_by_hand():
    # Two pixels, classes (0, 1): a class change, so both are edge pixels.
    logits = torch.tensor([[[[0.0, 0.0]], [[math.log(3), 0.0]]]])  # p1 = 3/4, 1/2
    target = torch.tensor([[[1, 0]]])
    side = torch.tensor([[[[0.0, math.log(3)]]]])  # sigmoid 1/2, 3/4 against foreground (1, 0)
    edge = torch.tensor([[[[2.0, 0.5]]]])  # both pixels are edges: errors 1 - 2, 1 - 0.5
    total, parts = EHANetCriterion()({"logits": logits, "side": [side], "edge": edge},
                                     {"target": target})
    ce = (math.log(4 / 3) + math.log(2)) / 2
    dice0 = (2 * 0.5 + 1) / (0.75 + 1 + 1)
    dice1 = (2 * 0.75 + 1) / (1.25 + 1 + 1)
    seg = 0.5 * ce + 0.5 * (1 - (dice0 + dice1) / 2)
    bce = 1.5 * math.log(2)
    side_loss = 0.5 * bce + 0.5 * (1 - 2 / 3.25)
    # Lovasz hinge, all foreground: errors sorted (0.5, -1); Jaccard loss of {first} is 1/2,
    # of both 1: increments 1/2, 1/2 -> 0.5 * 0.5 + relu(-1) * 0.5.
    edge_loss = 0.25
    assert parts["seg"] == pytest.approx(seg)
    assert parts["side"] == pytest.approx(side_loss)
    assert parts["edge"] == pytest.approx(edge_loss)
    assert total.item() == pytest.approx(seg + side_loss + edge_loss)
