"""Reading the slide once, in bands, and cutting the overlapping windows from memory.

The loader goes down the analysis image in bands of grid rows. Consecutive bands overlap by
``patch_size - stride`` rows; those rows are kept from the previous band instead of being read
again, so every pixel is decoded once. Within a band only the columns that kept windows need
are read, in chunks, by a pool of threads (OpenSlide releases the GIL while decoding). The
next band is read while the windows of the current one are being predicted; a bounded queue of
batches between the two keeps memory flat.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from .grid import PatchGrid
from .region import RegionReader
from .slide import GLASS

logger = logging.getLogger(__name__)

Interval = tuple[int, int]


def merge_intervals(intervals: list[Interval]) -> list[Interval]:
    """Union of half-open intervals, sorted and disjoint."""
    out: list[Interval] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def subtract_intervals(keep: list[Interval], remove: list[Interval]) -> list[Interval]:
    """Parts of disjoint sorted ``keep`` not covered by disjoint sorted ``remove``."""
    out: list[Interval] = []
    for a, b in keep:
        pos = a
        for c, d in remove:
            if d <= pos or c >= b:
                continue
            if c > pos:
                out.append((pos, c))
            pos = max(pos, d)
        if pos < b:
            out.append((pos, b))
    return out


@dataclass(frozen=True)
class Band:
    """Grid rows ``[r0, r1)`` and the analysis rows ``[y0, y1)`` their windows span."""

    r0: int
    r1: int
    y0: int
    y1: int
    columns: list[Interval]  # analysis x intervals the kept windows need


def plan_bands(grid: PatchGrid, kept: np.ndarray, band_height: int) -> list[Band]:
    """Bands of about ``band_height`` analysis rows holding every kept window. Pure."""
    p, s = grid.patch_size, grid.stride
    rows_per_band = max(1, -(-(p - s) // s), round(band_height / s))
    ys, xs = grid.ys, grid.xs
    bands = []
    for r0 in range(0, len(ys), rows_per_band):
        r1 = min(r0 + rows_per_band, len(ys))
        rr, cc = np.nonzero(kept[r0:r1])
        if len(cc) == 0:
            continue
        cols = merge_intervals([(int(xs[c]), int(xs[c]) + p) for c in np.unique(cc)])
        bands.append(Band(r0, r1, int(ys[r0]), int(ys[r1 - 1]) + p, cols))
    return bands


@dataclass
class PatchBatch:
    """Windows at grid ``rows``/``cols`` (row-major order) and their pixels."""

    rows: np.ndarray
    cols: np.ndarray
    patches: np.ndarray  # uint8 (n, P, P, 3)


@dataclass
class LoaderStats:
    read_seconds: float = 0.0  # wall time with reads outstanding
    bands: int = 0
    analysis_pixels_read: int = 0
    level_pixels_decoded: int = 0
    patches: int = 0
    extra: dict = field(default_factory=dict)


_END = object()


class BandLoader:
    """Iterates over :class:`PatchBatch` es of the kept windows, reading the slide once."""

    def __init__(
        self,
        reader: RegionReader,
        grid: PatchGrid,
        kept: np.ndarray,
        batch_size: int = 16,
        band_height: int = 1000,
        threads: int = 2,
        chunk: int = 1024,
        queue_batches: int = 8,
    ) -> None:
        self.reader = reader
        self.grid = grid
        self.kept = kept
        self.batch_size = batch_size
        self.bands = plan_bands(grid, kept, band_height)
        self.threads = threads
        tiles = getattr(reader, "tile_grid", lambda: None)()
        if tiles is None:
            self.chunk, self.phase = chunk, (0, 0)
        else:  # chunk edges on tile edges, so no tile is decoded by two chunks
            tile, px, py = tiles
            self.chunk, self.phase = max(1, round(chunk / tile)) * tile, (px, py)
        self.stats = LoaderStats()
        self._queue: queue.Queue = queue.Queue(maxsize=queue_batches)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- consumer side --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[PatchBatch]:
        self._thread = threading.Thread(target=self._produce, name="wsiseg-loader", daemon=True)
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the reading thread (after an error downstream, or at the end)."""
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:  # unblock a producer waiting on a full queue
                    self._queue.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._thread.join()
            self._thread = None

    # -- producer side --------------------------------------------------------------------------
    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            with ThreadPoolExecutor(self.threads, thread_name_prefix="wsiseg-read") as pool:
                self._run(pool)
            self._put(_END)
        except BaseException as err:  # handed to the consumer, which re-raises it
            self._put(err)

    def _run(self, pool: ThreadPoolExecutor) -> None:
        prev: tuple[Band, np.ndarray] | None = None
        pending: tuple[Band, np.ndarray] | None = None
        batch = _BatchBuilder(self.batch_size, self.grid.patch_size)
        for band in self.bands:
            if self._stop.is_set():
                return
            t0 = time.perf_counter()
            pixels, futures = self._start_band(pool, band, prev)
            if pending is not None:
                self._emit(pending, batch)  # predict the last band while this one is read
            for f in futures:
                f.result()
            self.stats.read_seconds += time.perf_counter() - t0
            self.stats.bands += 1
            prev = pending = (band, pixels)
        if pending is not None:
            self._emit(pending, batch)
        last = batch.take()
        if last is not None:
            self._put(last)

    def _start_band(
        self, pool: ThreadPoolExecutor, band: Band, prev: tuple[Band, np.ndarray] | None
    ) -> tuple[np.ndarray, list[Future]]:
        origin = self.grid.origin
        width = int(self.grid.xs[-1]) + self.grid.patch_size - origin
        pixels = np.full((band.y1 - band.y0, width, 3), GLASS, dtype=np.uint8)
        new_from = band.y0
        tasks: list[tuple[int, int, list[Interval]]] = []
        if prev is not None and prev[0].y1 > band.y0:
            pband, ppixels = prev
            new_from = min(pband.y1, band.y1)
            pixels[: new_from - band.y0] = ppixels[band.y0 - pband.y0 : new_from - pband.y0]
            # Carried rows hold only the columns the previous band needed; read the rest.
            missing = subtract_intervals(band.columns, pband.columns)
            tasks.append((band.y0, new_from, missing))
        tasks.append((new_from, band.y1, band.columns))
        futures = []
        for ya, yb, intervals in tasks:
            for xa, xb in intervals:
                for y, h in _split(ya, yb, self.chunk, self.phase[1]):
                    for x, w in _split(xa, xb, self.chunk, self.phase[0]):
                        self.stats.analysis_pixels_read += h * w
                        futures.append(pool.submit(self._read_into, pixels, band.y0, x, y, w, h))
        return pixels, futures

    def _read_into(self, pixels: np.ndarray, y0: int, x: int, y: int, w: int, h: int) -> None:
        if self._stop.is_set():
            return
        c = x - self.grid.origin
        pixels[y - y0 : y - y0 + h, c : c + w] = self.reader.read(x, y, w, h)

    def _emit(self, item: tuple[Band, np.ndarray], batch: "_BatchBuilder") -> None:
        band, pixels = item
        p, origin = self.grid.patch_size, self.grid.origin
        ys, xs = self.grid.ys, self.grid.xs
        rows, cols = np.nonzero(self.kept[band.r0 : band.r1])
        for r, c in zip(rows + band.r0, cols):
            y = int(ys[r]) - band.y0
            x = int(xs[c]) - origin
            full = batch.add(int(r), int(c), pixels[y : y + p, x : x + p])
            self.stats.patches += 1
            if full is not None and not self._put(full):
                return


def _split(a: int, b: int, step: int, phase: int) -> list[tuple[int, int]]:
    """[a, b) cut at ``phase + k * step``: (start, length) pieces."""
    cuts = range(a + (phase - a) % step, b, step)
    edges = [a, *(c for c in cuts if c > a), b]
    return [(lo, hi - lo) for lo, hi in zip(edges, edges[1:])]


class _BatchBuilder:
    def __init__(self, size: int, patch_size: int) -> None:
        self.size, self.patch_size = size, patch_size
        self._new()

    def _new(self) -> None:
        self.patches = np.empty((self.size, self.patch_size, self.patch_size, 3), dtype=np.uint8)
        self.rows: list[int] = []
        self.cols: list[int] = []

    def add(self, r: int, c: int, patch: np.ndarray) -> PatchBatch | None:
        self.patches[len(self.rows)] = patch
        self.rows.append(r)
        self.cols.append(c)
        return self.take() if len(self.rows) == self.size else None

    def take(self) -> PatchBatch | None:
        n = len(self.rows)
        if n == 0:
            return None
        out = PatchBatch(np.array(self.rows), np.array(self.cols), self.patches[:n])
        self._new()
        return out
