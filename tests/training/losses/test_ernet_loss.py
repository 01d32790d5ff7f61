"""ERNet's joint loss on tiny inputs, worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from wsiseg.training.losses.ernet import ERNetCriterion


def test_joint_loss_skips_unknown_grades():
    logits = torch.tensor([[[[0.0, 0.0]], [[math.log(3), 0.0]]]]).repeat(2, 1, 1, 1)
    target = torch.tensor([[[1, 1]]]).repeat(2, 1, 1)  # no class change: no edges
    grade_logits = torch.tensor([[0.0, math.log(3)], [5.0, -5.0]])
    edge = torch.zeros(2, 1, 1, 2)  # sigmoid 1/2 against no edges: BCE ln 2
    total, parts = ERNetCriterion(grade_weight=0.5)(
        {"logits": logits, "grade": grade_logits, "edge": edge},
        {"target": target, "grade": torch.tensor([1, -1])})
    seg = (math.log(4 / 3) + math.log(2)) / 2
    grade = math.log(4 / 3)  # only the first image: p(grade 1) = 3/4
    assert parts["seg"] == pytest.approx(seg)
    assert parts["grade"] == pytest.approx(grade)
    assert parts["edge"] == pytest.approx(math.log(2))
    assert total.item() == pytest.approx(seg + 0.5 * grade + math.log(2))
    _, none_known = ERNetCriterion()({"logits": logits, "grade": grade_logits},
                                     {"target": target, "grade": torch.tensor([-1, -1])})
    assert none_known["grade"] == 0.0
