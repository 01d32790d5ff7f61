"""The batch size a machine favours, measured rather than guessed.

When ``--batch-size`` is not given and a slide has enough windows for a measurement to pay for
itself, :func:`tuned_batch_size` runs the network on a few batches of random patches at each of
a few sizes and keeps the one with the most windows per second; a larger size has to beat the
smaller ones by :data:`MARGIN` to be taken, as each window of a batch costs memory (about
100 MB for the installed model on the CPU). On CUDA only sizes whose measured peak stays under
:data:`DEVICE_SHARE` of the device's free memory are tried. The answer is kept for the process,
per network, device and patch size: a batch measures once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch

from wsiseg.inference.predictor import Predictor

__all__ = ["CPU_SIZES", "CUDA_SIZES", "DEVICE_SHARE", "MARGIN", "tuned_batch_size"]

logger = logging.getLogger(__name__)

#: Sizes tried, smallest first.
CPU_SIZES = (1, 2, 4)
CUDA_SIZES = (32, 64, 128, 256)
#: Windows a slide needs before it is worth measuring (a CPU measures for some seconds).
MIN_WINDOWS = {"cpu": 500, "cuda": 2000}
#: How much faster a larger size must be than the best smaller one to be taken.
MARGIN = 1.1
#: The share of the device's free memory a batch's measured peak may take.
DEVICE_SHARE = 0.6
#: Seconds each size is timed for (after one call to warm it up), and the fewest calls.
SECONDS_PER_SIZE, MIN_CALLS = 0.5, 2

_CHOSEN: dict[tuple[int, str, int], tuple[int, dict[int, float]]] = {}


def tuned_batch_size(predictor: Predictor, patch_size: int, windows: int, default: int,
                     sizes: Sequence[int] | None = None) -> int:
    """The batch size to predict ``windows`` windows of ``patch_size`` px with: ``default``
    for a slide too small to be worth measuring, else the measured best (see the module)."""
    device = predictor.device
    if windows < MIN_WINDOWS.get(device.type, 10**9):
        return default
    key = (id(predictor.module), str(device), patch_size)
    if key not in _CHOSEN:
        tried = sizes or (CUDA_SIZES if device.type == "cuda" else CPU_SIZES)
        _CHOSEN[key] = _measure(predictor, patch_size, [s for s in tried if s <= windows])
        size, rates = _CHOSEN[key]
        logger.info("batch size %d measured on %s (%s windows/s)", size, device,
                    ", ".join(f"{s}: {r:.3g}" for s, r in rates.items()))
    return _CHOSEN[key][0]


def _measure(predictor: Predictor, patch_size: int, sizes: Sequence[int]
             ) -> tuple[int, dict[int, float]]:
    rng = np.random.default_rng(0)
    rates: dict[int, float] = {}
    best = sizes[0] if sizes else 1
    cuda = predictor.device.type == "cuda"
    free = torch.cuda.mem_get_info(predictor.device)[0] if cuda else 0
    for size in sizes:
        patches = rng.integers(0, 256, (size, patch_size, patch_size, 3), dtype=np.uint8)
        if cuda:
            torch.cuda.reset_peak_memory_stats(predictor.device)
        try:
            predictor(patches)  # warm-up: kernels chosen, memory taken
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            break
        if cuda and torch.cuda.max_memory_allocated(predictor.device) > DEVICE_SHARE * free:
            break
        calls, started = 0, time.perf_counter()
        while calls < MIN_CALLS or time.perf_counter() - started < SECONDS_PER_SIZE:
            predictor(patches)
            calls += 1
        if cuda:
            torch.cuda.synchronize(predictor.device)
        rates[size] = calls * size / (time.perf_counter() - started)
        if size != best and rates[size] > MARGIN * rates[best]:
            best = size
    predictor.check_outputs()
    return best, rates
