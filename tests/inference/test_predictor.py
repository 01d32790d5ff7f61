"""The predictor's own arithmetic: normalisation from uint8 and the class decision."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from wsiseg.inference.predictor import Normalisation, Predictor
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


@pytest.mark.slow
def test_a_compiled_network_gives_the_eager_probabilities_for_full_and_short_batches():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 4, 1)).eval()
    norm = Normalisation((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    eager = Predictor(net, 4, norm, torch.device("cpu"))
    compiled = Predictor(net, 4, norm, torch.device("cpu"), compile=True)
    rng = np.random.default_rng(3)
    for n in (4, 3, 4):  # the short batch is padded to the compiled shape, not recompiled
        patches = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        got, want = compiled(patches), eager(patches)
        assert got.shape == want.shape == (n, 4, 32, 32)
        assert torch.allclose(got, want, atol=1e-5)
    assert compiled._compiled_batch == 4


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_torchscript_network_is_run_as_it_is_when_compiling_is_asked():
    net = torch.jit.script(torch.nn.Conv2d(3, 2, 1).eval())
    logger = logging.getLogger("wsiseg.inference.predictor")
    records = _Records()
    logger.addHandler(records)  # the command line may have stopped propagation to the root
    try:
        predictor = Predictor(net, 2, Normalisation((0, 0, 0), (1, 1, 1)), torch.device("cpu"),
                              compile=True)
    finally:
        logger.removeHandler(records)
    assert any("cannot be compiled" in m for m in records.messages)
    out = predictor(np.zeros((2, 8, 8, 3), dtype=np.uint8))
    assert out.shape == (2, 2, 8, 8)
