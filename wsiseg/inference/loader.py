"""Reading the slide once, in bands, and cutting the overlapping windows from memory.

The loader goes down the analysis image in bands of grid rows. Consecutive bands overlap by
``patch_size - stride`` rows; those rows are kept from the previous band instead of being read
again, so every pixel is decoded once. Within a band only the columns that kept windows need
are read, in chunks, by a pool of threads (OpenSlide releases the GIL while decoding). The
next band is read while the windows of the current one are being predicted; a bounded queue of
batches between the two keeps memory flat.

With a ``damaged`` source (a slide read with ``skip_damaged``), windows that touch a damaged
region are dropped: their pixels are partly glass standing in for what could not be decoded,
so they would blend a wrong prediction into the map. A band's windows are cut only once every
read they need has ended, so every damaged region under them is known by then.

With a ``focus`` accumulator, the bands' pixels also feed the slide's focus scores
(:class:`~wsiseg.slide.artefacts.FocusAccumulator`) as they are read: each pixel of the stripe's
own columns once, with the pixels around it that the band holds as the filters' context, so no
second read of the slide is needed.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from wsiseg.inference.grid import PatchGrid
from wsiseg.slide.artefacts import FOCUS_CONTEXT, PlacedEnergies
from wsiseg.slide.geometry import MapBox

if TYPE_CHECKING:
    from wsiseg.slide.artefacts import FocusAccumulator

logger = logging.getLogger(__name__)

Interval = tuple[int, int]


class RegionSource(Protocol):
    """What the loader reads pixels through: a :class:`~wsiseg.slide.region.RegionReader`, or
    anything else that reads rectangles of the analysis grid the same way."""

    def read(self, x: int, y: int, width: int, height: int,
             out: npt.NDArray[np.uint8] | None = None) -> npt.NDArray[np.uint8]: ...


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


def plan_bands(grid: PatchGrid, kept: npt.NDArray[np.bool_], band_height: int) -> list[Band]:
    """Bands of about ``band_height`` analysis rows holding every kept window. Pure."""
    p, s = grid.patch_size, grid.stride
    rows_per_band = max(1, -(-(p - s) // s), round(band_height / s))
    ys, xs = grid.ys, grid.xs
    bands = []
    for r0 in range(0, len(ys), rows_per_band):
        r1 = min(r0 + rows_per_band, len(ys))
        _, cc = np.nonzero(kept[r0:r1])
        if len(cc) == 0:
            continue
        cols = merge_intervals([(int(xs[c]), int(xs[c]) + p) for c in np.unique(cc)])
        bands.append(Band(r0, r1, int(ys[r0]), int(ys[r1 - 1]) + p, cols))
    return bands


@dataclass
class PatchBatch:
    """Windows at grid ``rows``/``cols`` (row-major order) and their pixels."""

    rows: npt.NDArray[np.int64]
    cols: npt.NDArray[np.int64]
    patches: npt.NDArray[np.uint8]  # (n, P, P, 3)


@dataclass
class LoaderStats:
    read_seconds: float = 0.0  # wall time with reads outstanding
    bands: int = 0
    analysis_pixels_read: int = 0
    level_pixels_decoded: int = 0
    patches: int = 0
    patches_dropped: int = 0  # windows left out because they touch a damaged region
    # CPU time feeding the focus accumulator: it runs beside the network, whose work its
    # wall time would count too.
    focus_seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


class _End:
    """What the reading thread puts on the queue after the last batch."""


_END = _End()


class BandLoader:
    """Iterates over :class:`PatchBatch` es of the kept windows, reading the slide once."""

    def __init__(
        self,
        reader: RegionSource,
        grid: PatchGrid,
        kept: npt.NDArray[np.bool_],
        batch_size: int = 16,
        band_height: int = 1000,
        threads: int = 2,
        chunk: int = 1024,
        strip: int = 256,
        queue_batches: int = 8,
        damaged: Callable[[], list[MapBox]] | None = None,
        focus: FocusAccumulator | None = None,
        focus_columns: Interval | None = None,
    ) -> None:
        """``damaged`` returns the analysis boxes known to be damaged so far; the windows
        that touch one are not emitted (see :attr:`LoaderStats.patches_dropped`). ``focus``
        is fed the pixels read in the analysis columns ``focus_columns`` (all by default: a
        column stripe's own, so that stripes whose windows overlap count each pixel once)."""
        self.reader = reader
        self.grid = grid
        self.kept = kept
        self.batch_size = batch_size
        self.bands = plan_bands(grid, kept, band_height)
        self.threads = threads
        # Only a reader of a slide (RegionReader) knows the tiles its reads decode.
        tile_grid: Callable[[], tuple[int, int, int] | None] = getattr(
            reader, "tile_grid", lambda: None)
        tiles = tile_grid()
        if tiles is None:
            self.chunk, self.strip, self.phase = chunk, strip, (0, 0)
        else:  # chunk and strip edges on tile edges, so no tile is decoded by two reads
            tile, px, py = tiles
            self.chunk = max(1, round(chunk / tile)) * tile
            self.strip = max(1, round(strip / tile)) * tile
            self.phase = (px, py)
        # Band buffers span only the columns of the kept windows (one column stripe, say).
        used = np.nonzero(kept.any(axis=0))[0]
        self.x_lo = int(grid.xs[used[0]]) if len(used) else grid.origin
        self.x_hi = int(grid.xs[used[-1]]) + grid.patch_size if len(used) else self.x_lo + 1
        self.damaged = damaged
        self.focus = focus
        self.focus_columns = focus_columns or (self.x_lo, self.x_hi)
        self._fed_to = 0  # rows above are in ``focus`` (the columns their band held)
        self.stats = LoaderStats()
        self._stats_lock = threading.Lock()  # focus pieces are added on the reading threads
        self._queue: queue.Queue[PatchBatch | BaseException | _End] = queue.Queue(
            maxsize=queue_batches)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._spare: npt.NDArray[np.uint8] | None = None

    # -- consumer side --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[PatchBatch]:
        self._thread = threading.Thread(target=self._produce, name="wsiseg-loader", daemon=True)
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if isinstance(item, _End):
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
    def _put(self, item: PatchBatch | BaseException | _End) -> bool:
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
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._put(err)

    def _run(self, pool: ThreadPoolExecutor) -> None:
        prev: _ReadBand | None = None
        batch = _BatchBuilder(self.batch_size, self.grid.patch_size)
        focusing: list[Future[PlacedEnergies | None]] = []  # the band before last's focus
        for band in self.bands:
            if self._stop.is_set():
                return
            t0 = time.perf_counter()
            self._focused(focusing)  # its band's buffer is the one about to be refilled
            current, futures = self._start_band(pool, band, prev)
            if prev is not None:
                self._emit(prev, batch)  # cut the last band's windows while this one is read
                focusing = self._feed(prev, band, pool)
            for f in futures:
                f.result()
            self.stats.read_seconds += time.perf_counter() - t0
            self.stats.bands += 1
            prev = current
        self._focused(focusing)
        if prev is not None:
            self._emit(prev, batch)
            self._focused(self._feed(prev, None, pool))  # all in before the end is told
        last = batch.take()
        if last is not None:
            self._put(last)

    def _start_band(
        self, pool: ThreadPoolExecutor, band: Band, prev: _ReadBand | None
    ) -> tuple[_ReadBand, list[Future[None]]]:
        """Start reading ``band``: rows shared with ``prev`` are copied, the rest is read.

        The band is cut into strips of ``strip`` rows (on tile edges), and each strip reads
        only the columns of the kept windows that overlap it, less what the previous band
        already holds there: no pixel is decoded twice, and few that no window needs.
        """
        width = self.x_hi - self.x_lo
        # Two band buffers, used in turn (the one before last has been cut by now): no fresh
        # pages to fault in for every band. Pixels no read fills are never cut into a window.
        self._spare, pixels = prev.pixels if prev is not None else None, self._spare
        shape = (band.y1 - band.y0, width, 3)
        if pixels is None or pixels.shape[1] != width or pixels.shape[0] < shape[0]:
            pixels = np.empty(shape, dtype=np.uint8)
        pixels = pixels[: shape[0]]
        carried_to = band.y0
        if prev is not None and prev.band.y1 > band.y0:
            carried_to = min(prev.band.y1, band.y1)
            pixels[: carried_to - band.y0] = prev.pixels[band.y0 - prev.band.y0 : carried_to - prev.band.y0]
        strips = [
            piece
            for a, b in ((band.y0, carried_to), (carried_to, band.y1))
            for piece in _split(a, b, self.strip, self.phase[1])
        ]
        held: list[tuple[int, int, list[Interval]]] = []
        fresh: list[list[Interval]] = []
        futures: list[Future[None]] = []
        for y, h in strips:
            need = self._columns(band, y, y + h)
            if y < carried_to and prev is not None:  # rows carried over come from ``prev``
                have = prev.columns_at(y)
                todo = subtract_intervals(need, have)
                held.append((y, y + h, merge_intervals(have + need)))
            else:
                todo = need
                held.append((y, y + h, need))
            fresh.append(todo)
            for xa, xb in todo:
                for x, w in _split(xa, xb, self.chunk, self.phase[0]):
                    self.stats.analysis_pixels_read += h * w
                    futures.append(pool.submit(self._read_into, pixels, band.y0, x, y, w, h))
        return _ReadBand(band, pixels, held, fresh), futures

    def _columns(self, band: Band, ya: int, yb: int) -> list[Interval]:
        """Analysis x intervals of the band's kept windows that overlap rows ``[ya, yb)``."""
        p = self.grid.patch_size
        ys = self.grid.ys[band.r0 : band.r1]
        rows = np.nonzero((ys < yb) & (ys + p > ya))[0] + band.r0
        if len(rows) == 0:
            return []
        cols = np.nonzero(self.kept[rows].any(axis=0))[0]
        return merge_intervals([(int(self.grid.xs[c]), int(self.grid.xs[c]) + p) for c in cols])

    def _read_into(self, pixels: npt.NDArray[np.uint8], y0: int, x: int, y: int, w: int,
                   h: int) -> None:
        if self._stop.is_set():
            return
        c = x - self.x_lo
        self.reader.read(x, y, w, h, out=pixels[y - y0 : y - y0 + h, c : c + w])

    def _focused(self, pieces: list[Future[PlacedEnergies | None]]) -> None:
        """Add the energies of ``pieces`` to ``focus``, in the order they were cut: found on
        several threads, summed as one thread would."""
        for piece in pieces:
            placed = piece.result()
            if placed is not None and self.focus is not None:
                self.focus.add_energies(placed)

    def _feed(self, item: _ReadBand, following: Band | None, pool: ThreadPoolExecutor
              ) -> list[Future[PlacedEnergies | None]]:
        """Find the focus energies of the pixels of ``item`` that no later band reads, on
        ``pool``'s threads: the futures of the pieces (which read ``item``'s buffer), for
        :meth:`_focused` to add.

        Rows from :attr:`_fed_to` to :data:`FOCUS_CONTEXT` rows into ``following`` (which
        holds them too) go in with every column the band holds, and still have their context
        below; the rows above :attr:`_fed_to`, fed from the band before, only with the columns
        read fresh for this band. Each pixel of the own columns is added once.
        """
        if self.focus is None or self._stop.is_set():
            return []
        band = item.band
        until = band.y1
        if following is not None and following.y0 < band.y1:
            until = min(band.y1, following.y0 + FOCUS_CONTEXT)
        # Windows reach past the image's edges (read as padding): only its own pixels count.
        lo, hi = max(0, self.focus_columns[0]), min(self.grid.width, self.focus_columns[1])
        pieces: list[tuple[int, int, list[Interval], list[Interval]]] = []
        for (a, b, cols), new in zip(item.held, item.fresh):
            a, b = max(a, 0), min(b, self.grid.height)
            for ra, rb, intervals in ((a, min(b, self._fed_to), new),
                                      (max(a, self._fed_to), min(b, until), cols)):
                own = [(max(c, lo), min(d, hi)) for c, d in intervals if min(d, hi) > max(c, lo)]
                if rb <= ra or not own:
                    continue
                if pieces and pieces[-1][1] == ra and pieces[-1][2:] == (own, cols):
                    pieces[-1] = (pieces[-1][0], rb, own, cols)  # strips alike: one piece
                else:
                    pieces.append((ra, rb, own, cols))
        self._fed_to = max(self._fed_to, until)
        return [pool.submit(self._feed_piece, self.focus, item, ra, rb, ca, cb, cols)
                for ra, rb, own, cols in pieces for ca, cb in own]

    def _feed_piece(self, focus: FocusAccumulator, item: _ReadBand, ra: int, rb: int, ca: int,
                    cb: int, cols: list[Interval]) -> PlacedEnergies | None:
        """The energies of rows ``[ra, rb)``, columns ``[ca, cb)`` of ``item``, with up to
        :data:`FOCUS_CONTEXT` pixels around them that the band holds (``cols``: the columns
        held in those rows)."""
        band, reach = item.band, FOCUS_CONTEXT
        xa, xb = next((max(c, ca - reach, 0), min(d, cb + reach, self.grid.width))
                      for c, d in cols if c <= ca and cb <= d)
        top = max(band.y0, ra - reach, 0)
        bottom = min(band.y1, rb + reach, self.grid.height)
        for a, b, held in item.held:  # context only from rows that hold all of [xa, xb)
            if any(c <= xa and xb <= d for c, d in held):
                continue
            if top < b <= ra:
                top = b
            if rb <= a < bottom:
                bottom = a
        pixels = item.pixels[top - band.y0 : bottom - band.y0, xa - self.x_lo : xb - self.x_lo]
        t0 = time.thread_time()
        placed = focus.energies(pixels, top, xa, own=(ra - top, rb - top, ca - xa, cb - xa))
        with self._stats_lock:
            self.stats.focus_seconds += time.thread_time() - t0
        return placed

    def _emit(self, item: _ReadBand, batch: _BatchBuilder) -> None:
        band, pixels = item.band, item.pixels
        p, origin = self.grid.patch_size, self.x_lo
        ys, xs = self.grid.ys, self.grid.xs
        kept = self.kept[band.r0 : band.r1]
        if self.damaged is not None:
            drop = windows_touching(ys[band.r0 : band.r1], xs, p, self.damaged()) & kept
            if drop.any():
                self.stats.patches_dropped += int(drop.sum())
                kept = kept & ~drop
        rows, cols = np.nonzero(kept)
        for r, c in zip(rows + band.r0, cols):
            y = int(ys[r]) - band.y0
            x = int(xs[c]) - origin
            full = batch.add(int(r), int(c), pixels[y : y + p, x : x + p])
            self.stats.patches += 1
            if full is not None and not self._put(full):
                return


def windows_touching(ys: npt.NDArray[np.int64], xs: npt.NDArray[np.int64], patch_size: int,
                     boxes: list[MapBox]) -> npt.NDArray[np.bool_]:
    """(len(ys), len(xs)) bool: which windows at tops ``ys`` and lefts ``xs`` overlap any of
    ``boxes``. Pure."""
    out = np.zeros((len(ys), len(xs)), dtype=bool)
    for bx, by, bw, bh in boxes:
        rows = (ys < by + bh) & (ys + patch_size > by)
        cols = (xs < bx + bw) & (xs + patch_size > bx)
        out |= rows[:, None] & cols[None, :]
    return out


@dataclass
class _ReadBand:
    """A band's pixels and, per strip of rows, the column intervals they hold and those of
    them read for this band (the rest carried over from the band before)."""

    band: Band
    pixels: npt.NDArray[np.uint8]
    held: list[tuple[int, int, list[Interval]]]
    fresh: list[list[Interval]]

    def columns_at(self, y: int) -> list[Interval]:
        for a, b, cols in self.held:
            if a <= y < b:
                return cols
        return []


def _split(a: int, b: int, step: int, phase: int) -> list[tuple[int, int]]:
    """[a, b) cut at ``phase + k * step``: (start, length) pieces."""
    cuts = range(a + (phase - a) % step, b, step)
    edges = [a, *(c for c in cuts if c > a), b]
    return [(lo, hi - lo) for lo, hi in itertools.pairwise(edges)]


class _BatchBuilder:
    def __init__(self, size: int, patch_size: int) -> None:
        self.size, self.patch_size = size, patch_size
        self._new()

    def _new(self) -> None:
        self.patches = np.empty((self.size, self.patch_size, self.patch_size, 3), dtype=np.uint8)
        self.rows: list[int] = []
        self.cols: list[int] = []

    def add(self, r: int, c: int, patch: npt.NDArray[np.uint8]) -> PatchBatch | None:
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
