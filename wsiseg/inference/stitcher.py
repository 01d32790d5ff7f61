"""Gaussian-weighted blending of overlapping window predictions into finished rows.

For each kept window ``w * softmax(logits)`` is added into a float32 probability accumulator
and ``w`` into a weight accumulator; a pixel's probabilities are the ratio. The weight map is a
Gaussian with peak 1 and no floor: clamping it would make every window near a border weigh the
same, and blending there would silently fall back to plain averaging. Only an exact zero weight
sum (no kept window covers the pixel) is special: that pixel is background.

The accumulators are a ring of rows as wide as the columns being blended (the image, or one
column stripe of it): once the windows of the grid row with top ``t`` are added, rows above
``t + stride`` receive nothing more, so they are normalised, handed to ``sink`` and their slots
reused. Memory depends on the stripe's width only.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from wsiseg.inference.grid import PatchGrid


def gaussian_weight(patch_size: int, sigma: float) -> np.ndarray:
    """(P, P) float32 Gaussian centred on the window, peak 1, no floor."""
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    c = (patch_size - 1) / 2
    d = np.arange(patch_size, dtype=np.float64) - c
    g = np.exp(-(d**2) / (2 * sigma**2))
    w = np.outer(g, g)
    return (w / w.max()).astype(np.float32)


@dataclass
class FinishedRows:
    """Rows ``[y, y + labels.shape[0])`` of the output, complete."""

    y: int
    labels: np.ndarray  # uint8 (h, w)
    probabilities: np.ndarray | None  # uint8 (C, h, w), round(255 p)
    x: int = 0  # output column of the first column


class Stitcher:
    """Blends window probabilities in grid-row order and emits finished rows to ``sink``."""

    def __init__(
        self,
        grid: PatchGrid,
        num_classes: int,
        sigma: float,
        sink: Callable[[FinishedRows], None],
        device: torch.device | str = "cpu",
        keep_probabilities: bool = False,
        columns: tuple[int, int] | None = None,
    ) -> None:
        self.grid = grid
        self.num_classes = num_classes
        self.sink = sink
        self.keep_probabilities = keep_probabilities
        self.device = torch.device(device)
        p, s = grid.patch_size, grid.stride
        self.ring_rows = math.ceil(p / s) * s
        # Output columns [x0, x1) are blended (all of the image by default); windows reaching
        # beyond them add only their part inside.
        self.x0, self.x1 = columns if columns is not None else (0, grid.width)
        if not 0 <= self.x0 < self.x1 <= grid.width:
            raise ValueError(f"columns {columns} outside the image width {grid.width}")
        self.columns = self.x1 - self.x0
        self.weight = torch.from_numpy(gaussian_weight(p, sigma)).to(self.device)
        self.acc = torch.zeros(
            (num_classes, self.ring_rows, self.columns), dtype=torch.float32, device=self.device
        )
        self.wsum = torch.zeros((self.ring_rows, self.columns), dtype=torch.float32, device=self.device)
        self._ys = grid.ys
        self._row = 0  # next grid row whose windows may still arrive
        self._done = grid.origin  # rows above _done are emitted (or were padding) and cleared
        # On CUDA: (copy done, y, labels, probabilities) on their way to the host, in row order.
        self._pending: collections.deque = collections.deque()

    # -- ring addressing ------------------------------------------------------------------------
    def _slices(self, y: int, height: int) -> list[tuple[slice, slice]]:
        """(ring slice, source slice) pieces covering output rows [y, y + height)."""
        start = (y - self.grid.origin) % self.ring_rows
        first = min(height, self.ring_rows - start)
        pieces = [(slice(start, start + first), slice(0, first))]
        if first < height:
            pieces.append((slice(0, height - first), slice(first, height)))
        return pieces

    # -- public ---------------------------------------------------------------------------------
    def add(self, rows: np.ndarray, cols: np.ndarray, probs: torch.Tensor) -> None:
        """Add windows at grid ``rows``/``cols`` (non-decreasing rows) with (n, C, P, P) probs."""
        self._deliver(wait=False)
        p = self.grid.patch_size
        probs = probs.float()
        xs = self.grid.xs
        for i in range(len(rows)):
            r = int(rows[i])
            if r < self._row - 1:
                raise ValueError(f"window row {r} arrived after row {self._row - 1} was finished")
            self._advance(r)
            y = int(self._ys[r])
            x = int(xs[int(cols[i])])
            a, b = max(x, self.x0), min(x + p, self.x1)
            if b <= a:
                continue
            for ring, src in self._slices(y, p):
                weight = self.weight[src, a - x : b - x]
                # w * p added in one pass, without a weighted copy of the batch.
                self.acc[:, ring, a - self.x0 : b - self.x0].addcmul_(
                    probs[i, :, src, a - x : b - x], weight)
                self.wsum[ring, a - self.x0 : b - self.x0] += weight

    def finish(self) -> None:
        """Emit every remaining row. Call once, after the last window."""
        self._advance(len(self._ys))
        self._flush_until(self.grid.height)
        self._deliver(wait=True)

    # -- internals ------------------------------------------------------------------------------
    def _advance(self, row: int) -> None:
        """Windows of grid rows before ``row`` are all in: emit the rows they finished."""
        if row < self._row:
            return
        self._row = row + 1
        if row < len(self._ys):
            self._flush_until(int(self._ys[row]))

    def _flush_until(self, y_end: int) -> None:
        y_end = min(y_end, self.grid.height)
        # In steps no taller than the ring (grid rows without kept windows can be skipped).
        while y_end - self._done > self.grid.stride:
            self._flush_step(self._done + self.grid.stride)
        self._flush_step(y_end)

    def _flush_step(self, y_end: int) -> None:
        if y_end <= self._done:
            return
        # Rows above the image are padding: their slots are cleared, nothing is emitted.
        pad_end = min(y_end, 0)
        if pad_end > self._done:
            self._clear(self._done, pad_end - self._done)
        lo = max(self._done, 0)
        if y_end > lo:
            self._emit(lo, y_end - lo)
            self._clear(lo, y_end - lo)
        self._done = y_end

    def _clear(self, y: int, height: int) -> None:
        for ring, _ in self._slices(y, height):
            self.acc[:, ring].zero_()
            self.wsum[ring].zero_()

    def _emit(self, y: int, height: int) -> None:
        acc_parts, wsum_parts = [], []
        for ring, _ in self._slices(y, height):
            acc_parts.append(self.acc[:, ring])
            wsum_parts.append(self.wsum[ring])
        acc = torch.cat(acc_parts, dim=1)
        wsum = torch.cat(wsum_parts, dim=0)
        covered = wsum > 0
        prob = acc / torch.where(covered, wsum, torch.ones_like(wsum))
        labels = first_argmax(prob)
        labels[~covered] = 0
        probabilities = None
        if self.keep_probabilities:
            # Pixels no kept window covers are background with certainty.
            prob[0] = torch.where(covered, prob[0], torch.ones_like(wsum))
            probabilities = torch.round(prob * 255).clamp_(0, 255).to(torch.uint8)
        if self.device.type != "cuda":
            self.sink(FinishedRows(y, labels.numpy(), _numpy(probabilities), self.x0))
            return
        # On a GPU the rows come back without stopping the host: copied into pinned memory
        # behind the work already queued, and handed to the sink once the copy is done.
        labels = _to_pinned(labels)
        probabilities = None if probabilities is None else _to_pinned(probabilities)
        done = torch.cuda.Event()
        done.record()
        self._pending.append((done, y, labels, probabilities))
        self._deliver(wait=False)

    def _deliver(self, wait: bool) -> None:
        """Hand finished rows whose copy is done (all of them with ``wait``) to the sink."""
        while self._pending and (wait or self._pending[0][0].query()):
            done, y, labels, probabilities = self._pending.popleft()
            done.synchronize()
            self.sink(FinishedRows(y, labels.numpy(), _numpy(probabilities), self.x0))


def _to_pinned(t: torch.Tensor) -> torch.Tensor:
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t, non_blocking=True)
    return host


def _numpy(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.numpy()


def first_argmax(prob: torch.Tensor) -> torch.Tensor:
    """uint8 index of the largest of ``prob``'s planes (C, h, w), the first one on ties.

    The same as ``prob.argmax(0)``, which reduces across planes with a large stride and is
    about 6x slower on the CPU than these C - 1 elementwise passes.
    """
    best = prob[0].clone()
    index = torch.zeros(prob.shape[1:], dtype=torch.uint8, device=prob.device)
    for c in range(1, prob.shape[0]):
        better = prob[c] > best
        best = torch.maximum(best, prob[c])
        index.masked_fill_(better, c)
    return index
