"""The batch size a run takes when none is given: measured on the machine, where a slide is
large enough to pay for the measurement."""

from __future__ import annotations

import time

import pytest
import torch

from wsiseg.inference import tuning
from wsiseg.inference.predictor import Normalisation, Predictor


class Timed(torch.nn.Module):
    """Logits of two classes, taking ``fixed`` seconds a call plus ``per_window`` a window."""

    def __init__(self, fixed: float, per_window: float) -> None:
        super().__init__()
        self.fixed, self.per_window = fixed, per_window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.fixed + self.per_window * x.shape[0])
        return torch.zeros(x.shape[0], 2, x.shape[2], x.shape[3])


def _predictor(module: torch.nn.Module) -> Predictor:
    return Predictor(module, 2, Normalisation((0.0,) * 3, (1.0,) * 3), torch.device("cpu"))


@pytest.fixture(autouse=True)
def _quick(monkeypatch):
    monkeypatch.setattr(tuning, "SECONDS_PER_SIZE", 0.05)
    monkeypatch.setattr(tuning, "_CHOSEN", {})


def test_a_network_whose_calls_cost_the_same_at_any_size_takes_the_largest():
    size = tuning.tuned_batch_size(_predictor(Timed(0.02, 0.0)), 32, windows=10_000, default=1)
    assert size == max(tuning.CPU_SIZES)


def test_a_network_whose_windows_cost_the_same_at_any_size_keeps_the_smallest():
    # Larger batches are no faster: the memory they take buys nothing.
    size = tuning.tuned_batch_size(_predictor(Timed(0.0, 0.01)), 32, windows=10_000, default=2)
    assert size == min(tuning.CPU_SIZES)


def test_a_small_slide_is_not_measured_and_a_measured_answer_is_kept():
    predictor = _predictor(Timed(0.02, 0.0))
    assert tuning.tuned_batch_size(predictor, 32, windows=10, default=3) == 3
    assert not tuning._CHOSEN
    first = tuning.tuned_batch_size(predictor, 32, windows=10_000, default=1)
    predictor.module.fixed = 0.0  # measured again, it would now keep the smallest
    predictor.module.per_window = 0.01
    assert tuning.tuned_batch_size(predictor, 32, windows=10_000, default=1) == first
