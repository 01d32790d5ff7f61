"""The predictor's own arithmetic: normalisation from uint8 and the class decision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsiseg.inference.predictor import Normalisation
from wsiseg.inference.stitcher import first_argmax


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_normalisation_is_the_card_formula_in_the_networks_channel_order(order):
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (3, 17, 11, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    got = Normalisation(mean, std, order).normaliser(torch.device("cpu"))(torch.from_numpy(patches))
    rgb = (patches / 255.0 - np.array(mean)) / np.array(std)  # (n, H, W, 3), RGB
    if order == "BGR":
        rgb = rgb[..., ::-1]
    assert got.dtype == torch.float32 and got.shape == (3, 3, 17, 11)
    assert np.allclose(got.numpy(), rgb.transpose(0, 3, 1, 2), atol=1e-5)
    # Laid out as the patches are (channels last): no copy, and fast convolutions.
    assert got.is_contiguous(memory_format=torch.channels_last)


def test_first_argmax_is_argmax_with_the_first_class_winning_ties():
    rng = np.random.default_rng(1)
    prob = rng.integers(0, 4, (6, 40, 50)).astype(np.float32)  # many ties
    got = first_argmax(torch.from_numpy(prob))
    assert got.dtype == torch.uint8
    assert np.array_equal(got.numpy(), prob.argmax(axis=0))
