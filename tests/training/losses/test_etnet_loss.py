"""ET-Net's criterion against values worked out by hand on tiny inputs."""

from __future__ import annotations

import math

import pytest
import torch

from wsiseg.errors import ConfigError
from wsiseg.training.losses.etnet import ETNetCriterion


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def test_one_by_two_image_worked_by_hand():
    # Pixel 0 is class 0, pixel 1 class 1; both are edges (their classes differ).
    logits = torch.tensor([[[[2.0, 0.0]], [[0.5, 1.0]]]])  # (1, 2, 1, 2)
    edge = torch.tensor([[[[0.3, -0.7]]]])  # (1, 1, 1, 2)
    target = torch.tensor([[[0, 1]]])

    # Softmax: a = P(class 1 | pixel 0), b = P(class 0 | pixel 1).
    a = math.exp(0.5) / (math.exp(2.0) + math.exp(0.5))
    b = math.exp(0.0) / (math.exp(0.0) + math.exp(1.0))
    assert b > a
    # Class 0: foreground pixel 0 with error a, background pixel 1 with error b. Sorted, b comes
    # first: mispredicting {1} gives Jaccard loss 1 - 1/2, {1, 0} gives 1 - 0/2.
    class0 = b * 0.5 + a * (1.0 - 0.5)
    # Class 1: foreground pixel 1 with error b comes first: {1} gives 1 - 0/1 = 1, then
    # {1, 0} gives 1 - 0/2 = 1, an increment of 0.
    class1 = b * 1.0 + a * 0.0
    seg = (class0 + class1) / 2

    # Edges: only the edge class is present, both pixels foreground (2 of them). Errors
    # 1 - sigmoid(z); the Jaccard loss goes 1/2 then 1 whatever the order.
    e0, e1 = 1 - sigmoid(0.3), 1 - sigmoid(-0.7)
    edge_softmax = 0.5 * e0 + 0.5 * e1
    # The Lovasz hinge has errors 1 - z (target 1): 0.7 and 1.7, with the same increments.
    edge_hinge = 0.5 * (1 - 0.3) + 0.5 * (1 + 0.7)

    total, parts = ETNetCriterion()({"logits": logits, "edge": edge}, {"target": target})
    assert parts["seg"] == pytest.approx(seg, abs=1e-6)
    assert parts["edge"] == pytest.approx(edge_softmax, abs=1e-6)
    assert float(total) == pytest.approx(0.3 * seg + 0.7 * edge_softmax, abs=1e-6)

    total, parts = ETNetCriterion(alpha=0.5, edge_loss="lovasz_hinge")(
        {"logits": logits, "edge": edge}, {"target": target})
    assert parts["edge"] == pytest.approx(edge_hinge, abs=1e-6)
    assert float(total) == pytest.approx(0.5 * seg + 0.5 * edge_hinge, abs=1e-6)


def test_edge_loss_on_mixed_edges_with_an_ignored_pixel_worked_by_hand():
    # Classes 0 0 1 ignore: edge target 0 1 1 ignore (the ignored pixel is no class and its
    # own edge status is unknown, so its huge edge logit must not count).
    target = torch.tensor([[[0, 0, 1, 255]]])
    z = [-1.0, 2.0, 0.5]
    edge = torch.tensor([[[z + [50.0]]]])
    logits = torch.zeros(1, 2, 1, 4)
    s0, s1, s2 = (sigmoid(v) for v in z)

    # Edge class: foreground {1, 2}. Errors: pixel 0 (background) s0 = 0.269, pixel 1
    # 1 - s1 = 0.119, pixel 2 1 - s2 = 0.378. Order 2, 0, 1; Jaccard loss of the prefixes:
    # {2}: 1 - 1/2; {2, 0}: 1 - 1/3; {2, 0, 1}: 1 - 0/3.
    edge_class = (1 - s2) * (1 / 2) + s0 * (2 / 3 - 1 / 2) + (1 - s1) * (1 - 2 / 3)
    # Non-edge class: foreground {0}, the same errors, the same order:
    # {2}: 1 - 1/2; {2, 0}: 1 - 0/2; {2, 0, 1}: 1 - 0/3.
    other_class = (1 - s2) * (1 / 2) + s0 * (1 - 1 / 2) + (1 - s1) * 0.0
    expected_softmax = (edge_class + other_class) / 2

    # Hinge errors 1 - z * (2t - 1): pixel 0 1 + z0 = 0, pixel 1 1 - 2 = -1, pixel 2 0.5.
    # Order 2, 0, 1; Jaccard loss of the prefixes (2 foreground): 1/2, 2/3, 1.
    expected_hinge = 0.5 * (1 / 2) + 0.0 * (2 / 3 - 1 / 2) + max(0.0, -1.0) * (1 - 2 / 3)

    outputs, batch = {"logits": logits, "edge": edge}, {"target": target}
    _, parts = ETNetCriterion()(outputs, batch)
    assert parts["edge"] == pytest.approx(expected_softmax, abs=1e-6)
    _, parts = ETNetCriterion(edge_loss="lovasz_hinge")(outputs, batch)
    assert parts["edge"] == pytest.approx(expected_hinge, abs=1e-6)
    # Equal logits: both classes present, each with errors 1/2 on every pixel, so the
    # Lovasz-softmax is 1/2 per class.
    assert parts["seg"] == pytest.approx(0.5, abs=1e-6)


def test_alpha_weights_the_parts_and_gradients_reach_both_outputs():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 6, requires_grad=True)
    edge = torch.randn(2, 1, 5, 6, requires_grad=True)
    target = torch.randint(0, 3, (2, 5, 6))
    target[0, 0] = 255
    outputs, batch = {"logits": logits, "edge": edge}, {"target": target}
    seg_only, parts = ETNetCriterion(alpha=1.0)(outputs, batch)
    assert float(seg_only.detach()) == pytest.approx(parts["seg"], abs=1e-6)
    edge_only, parts = ETNetCriterion(alpha=0)(outputs, batch)
    assert float(edge_only.detach()) == pytest.approx(parts["edge"], abs=1e-6)

    total, parts = ETNetCriterion()(outputs, batch)
    expected = 0.3 * parts["seg"] + 0.7 * parts["edge"]
    assert float(total.detach()) == pytest.approx(expected, abs=1e-6)
    total.backward()
    assert logits.grad.abs().sum() > 0 and edge.grad.abs().sum() > 0
    # Ignored pixels get no gradient from either part.
    assert logits.grad[0, :, 0].abs().sum() == 0 and edge.grad[0, :, 0].abs().sum() == 0


def test_all_ignored_batch_gives_zero_with_a_gradient():
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    edge = torch.randn(1, 1, 3, 3, requires_grad=True)
    target = torch.full((1, 3, 3), 255)
    total, parts = ETNetCriterion()({"logits": logits, "edge": edge}, {"target": target})
    assert float(total.detach()) == 0.0 and parts == {"seg": 0.0, "edge": 0.0}
    total.backward()
    assert logits.grad is not None and edge.grad is not None


@pytest.mark.parametrize("kwargs, match", [
    ({"alpha": 1.5}, "alpha = 1.5"),
    ({"alpha": "0.3"}, "alpha"),
    ({"edge_loss": "bce"}, "edge_loss = 'bce'.*lovasz_hinge"),
])
def test_bad_options_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ETNetCriterion(**kwargs)
