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

On a GPU a whole batch is added without a loop over its windows, where each operation would
be a kernel launch. Windows lie on a grid of step ``stride``, so with ``g = gcd(patch_size,
stride)`` each window's columns split into ``patch_size / g`` column blocks of ``g`` on one
lattice of block columns. The accumulators' columns are kept on that lattice, and for each
block position within a window the weighted blocks of all the windows of a grid row go in with
one ``index_add_``, overlapping windows included. On the CPU, where an operation costs little
more than its arithmetic, adding each window with ``addcmul_`` measures twice as fast: the
batched form needs a weighted copy of the batch first. Both add into the same accumulators, in
the same order, and give the same sums. The weight sum is one more plane of the accumulator.

Each finished row also gets its uncertainty (:func:`uncertainty`), computed where the blend
lives from the same normalised sums that give the labels: the entropy of the blended
probabilities over its maximum, ``log C``, and with test-time augmentation the views'
disagreement too, from one more blended plane (each window's mutual information between class
and view, :func:`wsiseg.inference.tta.view_information`). It streams with the labels, as uint8
``round(255 u)``; pixels no kept window covers are background with certainty, 0.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch

from wsiseg.inference.grid import PatchGrid
from wsiseg.inference.tta import entropy
from wsiseg.result.rows import FinishedRows


def gaussian_weight(patch_size: int, sigma: float) -> npt.NDArray[np.float32]:
    """(P, P) float32 Gaussian centred on the window, peak 1, no floor."""
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    c = (patch_size - 1) / 2
    d = np.arange(patch_size, dtype=np.float64) - c
    g = np.exp(-(d**2) / (2 * sigma**2))
    w = np.outer(g, g)
    weight: npt.NDArray[np.float32] = (w / w.max()).astype(np.float32)
    return weight


def uncertainty(prob: torch.Tensor, information: torch.Tensor | None = None, views: int = 1
                ) -> torch.Tensor:
    """Per-pixel uncertainty in [0, 1] of (C, ...) class probabilities ``prob``.

    Without ``information``: the normalised entropy ``H(p) / log C`` (0 one-hot, 1 uniform).
    With it, the mutual information between class and view of ``views`` test-time views
    (BALD's ``H(mean) - mean H(view)``, shape ``prob.shape[1:]``), the larger of that entropy
    and the views' normalised mutual information ``I / sqrt(H(p) log views)`` (Strehl and
    Ghosh's NMI; 1 when each view is sure of another class): at the same mean, views that
    disagree are less certain than views that agree, which the entropy of the mean alone
    cannot tell apart. Pure.
    """
    c = prob.shape[0]
    if c < 2:
        return torch.zeros(prob.shape[1:], dtype=torch.float32, device=prob.device)
    total = entropy(prob.unsqueeze(0))[0]  # nats
    u = total / math.log(c)
    if information is not None and views > 1:
        scale = torch.sqrt(total * math.log(views))
        nmi = torch.where(scale > 0, information / torch.where(scale > 0, scale, 1.0), 0.0)
        u = torch.maximum(u, nmi)
    return u.clamp_(0, 1)


def uncertainty_u8(u: torch.Tensor) -> torch.Tensor:
    """``round(255 u)`` as uint8, of an uncertainty in [0, 1]."""
    return torch.round(u * 255).clamp_(0, 255).to(torch.uint8)


#: Rows normalised and handed on at a time, at most. Each step's blend, labels and uncertainty
#: take a few float32 planes of its rows, as wide as the stripe; emitting a whole stride of
#: rows at once (400 with ``--stride 400``) made them about 100 MB on a 5000-column stripe.
EMIT_ROWS = 128


class CopyDone(Protocol):
    """What the stitcher asks of a ``torch.cuda.Event`` marking a copy to the host."""

    def record(self) -> None: ...

    def query(self) -> bool: ...

    def synchronize(self) -> None: ...


def recorded_event() -> CopyDone:
    """A CUDA event recorded on the current stream: done once the work queued before it is."""
    # torch leaves Event's constructor and methods unannotated: typed as CopyDone from here.
    done: CopyDone = torch.cuda.Event()  # type: ignore[no-untyped-call]
    done.record()
    return done


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
        batched: bool | None = None,
        views: int = 1,
    ) -> None:
        self.grid = grid
        self.num_classes = num_classes
        # With test-time views, each window's mutual information between class and view is
        # blended as one more plane (see uncertainty).
        self.views = views
        self._planes = num_classes + (views > 1)
        self.sink = sink
        self.keep_probabilities = keep_probabilities
        self.device = torch.device(device)
        # One index_add_ per block position for a whole grid row on a GPU; per window elsewhere.
        self.batched = self.device.type == "cuda" if batched is None else batched
        p, s = grid.patch_size, grid.stride
        self.ring_rows = math.ceil(p / s) * s
        # Output columns [x0, x1) are blended (all of the image by default); windows reaching
        # beyond them add only their part inside.
        self.x0, self.x1 = columns if columns is not None else (0, grid.width)
        if not 0 <= self.x0 < self.x1 <= grid.width:
            raise ValueError(f"columns {columns} outside the image width {grid.width}")
        self.columns = self.x1 - self.x0
        # Column blocks of g on the grid's lattice (origin, origin + g, ...), over [x0, x1).
        g = self.block = math.gcd(p, s)
        self._per_side, self._per_stride = p // g, s // g
        self._first_block = (self.x0 - grid.origin) // g  # counted from the origin
        self._left = self.x0 - (grid.origin + self._first_block * g)  # x0 inside its block
        self._blocks = -(-(self.x1 - grid.origin) // g) - self._first_block
        self.weight = torch.from_numpy(gaussian_weight(p, sigma)).to(self.device)
        # Class planes (and the views' information) and the weight sum; one more block column
        # takes the blocks of windows outside the blended columns (cheaper than leaving them
        # out of the batch).
        self.acc = torch.zeros((self._planes + 1, self.ring_rows, (self._blocks + 1) * g),
                               dtype=torch.float32, device=self.device)
        self._buffer: torch.Tensor | None = None
        self._ys = grid.ys
        self._row = 0  # next grid row whose windows may still arrive
        self._done = grid.origin  # rows above _done are emitted (or were padding) and cleared
        # On CUDA: (copy done, y, labels, probabilities, uncertainty) on their way to the host,
        # in row order.
        self._pending: collections.deque[
            tuple[CopyDone, int, torch.Tensor, torch.Tensor | None, torch.Tensor]
        ] = collections.deque()

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
    def add(self, rows: np.ndarray, cols: np.ndarray, probs: torch.Tensor,
            information: torch.Tensor | None = None) -> None:
        """Add windows at grid ``rows``/``cols`` (non-decreasing rows) with (n, C, P, P) probs
        and, with test-time views, their (n, P, P) mutual information between class and view
        (:func:`wsiseg.inference.tta.view_information`)."""
        self._deliver(wait=False)
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        if len(rows) == 0:
            return
        if (information is not None) != (self.views > 1):
            raise ValueError(f"the views' information is needed with {self.views} views, and "
                             "only then")
        back = np.flatnonzero(np.diff(rows) < 0)
        if rows[0] < self._row - 1 or len(back):
            late = int(rows[back[0] + 1]) if len(back) else int(rows[0])
            raise ValueError(f"window row {late} arrived after a later row was added")
        # A batch may span grid rows, and the ring holds one grid row's windows at a time: the
        # rows above each grid row are finished before its windows go in.
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        for a, b in zip(starts, np.r_[starts[1:], len(rows)]):
            self._advance(int(rows[a]))
            self._add_row(int(rows[a]), cols[a:b], probs[a:b],
                          None if information is None else information[a:b])

    def finish(self) -> None:
        """Emit every remaining row. Call once, after the last window."""
        self._advance(len(self._ys))
        self._flush_until(self.grid.height)
        self._deliver(wait=True)

    # -- adding ---------------------------------------------------------------------------------
    def _add_row(self, row: int, cols: np.ndarray, probs: torch.Tensor,
                 information: torch.Tensor | None) -> None:
        """Add the windows of one grid row (the views' information as one more plane)."""
        if not self.batched:
            self._add_each(row, cols, probs, information)
            return
        if information is not None:
            probs = torch.cat([probs.float(), information.float().unsqueeze(1)], dim=1)
        n, c, p = len(cols), self._planes, self.grid.patch_size
        k, g = self._per_side, self.block
        need = n * c * p * p
        if self._buffer is None or self._buffer.numel() < need:
            self._buffer = torch.empty(need, dtype=torch.float32, device=self.device)
        # w * p in one pass, into a reused buffer.
        weighted = torch.mul(probs.float(), self.weight, out=self._buffer[:need].view(n, c, p, p))
        # (C, P, n, k, g): a window's column blocks side by side, as views.
        blocks = weighted.view(n, c, p, k, g).permute(1, 2, 0, 3, 4)
        weights = self.weight.view(1, p, 1, k, g).expand(1, p, n, k, g)
        # Accumulator block of each of the windows' column blocks, the last one if outside.
        target = cols[:, None] * self._per_stride + np.arange(k) - self._first_block
        target = np.where((target >= 0) & (target < self._blocks), target, self._blocks)
        index = torch.from_numpy(target)  # (n, k)
        if self.device.type == "cuda":
            # From pageable memory a copy waits for the work queued before it: pinned, it
            # does not.
            index = index.pin_memory()
        index = index.to(self.device, non_blocking=True)
        for ring, src in self._slices(int(self._ys[row]), p):
            acc = self.acc[:, ring].view(c + 1, -1, self._blocks + 1, g)
            for j in range(k):
                acc[:c].index_add_(2, index[:, j], blocks[:, src, :, j])
                acc[c:].index_add_(2, index[:, j], weights[:, src, :, j])

    def _add_each(self, row: int, cols: np.ndarray, probs: torch.Tensor,
                  information: torch.Tensor | None) -> None:
        """Add the windows of one grid row one by one."""
        p, c = self.grid.patch_size, self.num_classes
        block_x0 = self.x0 - self._left  # output column of the accumulator's first column
        pieces = self._slices(int(self._ys[row]), p)
        xs = self.grid.xs
        for i in range(len(cols)):
            x = int(xs[int(cols[i])])
            a, b = max(x, self.x0), min(x + p, self.x1)
            if b <= a:
                continue
            window = probs[i]
            for ring, src in pieces:
                weight = self.weight[src, a - x : b - x]
                at = self.acc[:, ring, a - block_x0 : b - block_x0]
                # w * p added in one pass, without a weighted copy of the window.
                at[:c].addcmul_(window[:, src, a - x : b - x], weight)
                if information is not None:
                    at[c].addcmul_(information[i, src, a - x : b - x], weight)
                at[self._planes] += weight

    # -- emitting -------------------------------------------------------------------------------
    def _advance(self, row: int) -> None:
        """Windows of grid rows before ``row`` are all in: emit the rows they finished."""
        if row < self._row:
            return
        self._row = row + 1
        if row < len(self._ys):
            self._flush_until(int(self._ys[row]))

    def _flush_until(self, y_end: int) -> None:
        y_end = min(y_end, self.grid.height)
        # In steps no taller than the ring (grid rows without kept windows can be skipped),
        # nor than EMIT_ROWS: the blend's temporaries are a few planes of the step's rows.
        step = min(self.grid.stride, EMIT_ROWS)
        while y_end - self._done > step:
            self._flush_step(self._done + step)
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

    def _emit(self, y: int, height: int) -> None:
        c = self.num_classes
        parts = [self.acc[:, ring, self._left : self._left + self.columns]
                 for ring, _ in self._slices(y, height)]
        planes = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        wsum = planes[self._planes]
        covered = wsum > 0
        blended = planes[: self._planes] / torch.where(covered, wsum, torch.ones_like(wsum))
        prob = blended[:c]
        labels = first_argmax(prob)
        # masked_fill_, not labels[~covered] = 0: a boolean index waits for the device.
        labels.masked_fill_(~covered, 0)
        information = blended[c] if self.views > 1 else None
        # Pixels no kept window covers are background with certainty: 0.
        uncertain = uncertainty_u8(uncertainty(prob, information, self.views))
        uncertain.masked_fill_(~covered, 0)
        probabilities = None
        if self.keep_probabilities:
            # Pixels no kept window covers are background with certainty.
            prob[0] = torch.where(covered, prob[0], torch.ones_like(wsum))
            probabilities = torch.round(prob * 255).clamp_(0, 255).to(torch.uint8)
        if self.device.type != "cuda":
            self.sink(FinishedRows(y, labels.numpy(), _numpy(probabilities), self.x0,
                                   uncertain.numpy()))
            return
        # On a GPU the rows come back without stopping the host: copied into pinned memory
        # behind the work already queued, and handed to the sink once the copy is done.
        labels = _to_pinned(labels)
        probabilities = None if probabilities is None else _to_pinned(probabilities)
        uncertain = _to_pinned(uncertain)
        done = recorded_event()
        self._pending.append((done, y, labels, probabilities, uncertain))
        self._deliver(wait=False)

    def _deliver(self, wait: bool) -> None:
        """Hand finished rows whose copy is done (all of them with ``wait``) to the sink."""
        while self._pending and (wait or self._pending[0][0].query()):
            done, y, labels, probabilities, uncertain = self._pending.popleft()
            done.synchronize()
            self.sink(FinishedRows(y, labels.numpy(), _numpy(probabilities), self.x0,
                                   uncertain.numpy()))


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
