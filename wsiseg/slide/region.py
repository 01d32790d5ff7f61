"""Reading rectangles of an output grid (analysis or tissue-mask pixels) from a slide.

Memory never follows the size of what is asked for: every read is cut into blocks of at most
:data:`MAX_READ_PIXELS` read-level pixels, each decoded, resampled into place and dropped
before the next. :func:`read_grid` reads a whole grid (the tissue mask's low-resolution image,
a thumbnail) that way, in strips of rows, from a pool of threads, and can be interrupted
between blocks.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from wsiseg.progress import NoProgress, ProgressBar
from wsiseg.slide.geometry import Geometry, overview_geometry
from wsiseg.slide.reader import GLASS, Slide
from wsiseg.slide.resample import area_weights, resample_area

#: Read-level pixels decoded by one read at most (2048 x 2048): 12 MB of RGB, plus what the
#: decoder holds alongside (OpenSlide's 32-bit ARGB copy, 16 MB), per reading thread. The
#: loader's reads (1024 x 256 analysis pixels) stay whole from x40 to x10 on whole pixels.
MAX_READ_PIXELS = 1 << 22
#: Read-level rows of a strip of :func:`read_grid` at most. Strips are tall so that the tile row
#: two strips share, and decode once each, is a small part of their work (256-pixel tiles: 6%).
STRIP_ROWS = 4096
#: Seconds between looks at :func:`read_grid`'s progress (and at a Ctrl-C) while blocks are read.
POLL_SECONDS = 0.2


def input_span(start: int, count: int, origin: float, ratio: float) -> int:
    """Read-level pixels that output pixels ``[start, start + count)`` are averaged from.

    The same interval as :func:`~wsiseg.slide.resample.area_weights` takes; ``ratio`` 1.0 with
    an integer ``origin`` is a direct read of ``count`` pixels.
    """
    if ratio == 1.0:
        return count
    return math.ceil(origin + (start + count) * ratio) - math.floor(origin + start * ratio)


def _span_bound(count: int, ratio: float) -> int:
    """An upper bound of :func:`input_span` of ``count`` pixels, wherever they start."""
    return count if ratio == 1.0 else math.ceil(count * ratio) + 2


def _fit(span: int, ratio: float) -> int:
    """The most output pixels whose read spans at most ``span`` read-level pixels (may be 0)."""
    if ratio == 1.0:
        return max(0, span)
    return max(0, math.floor((span - 2) / ratio))


def _balanced(total: int, most: int) -> int:
    """A size of at most ``most`` cutting ``total`` into as few, nearly equal, pieces."""
    most = max(1, min(most, total))
    pieces = -(-total // most)
    return -(-total // pieces)


def block_shape(width: int, height: int, resample: tuple[float, float],
                max_pixels: int) -> tuple[int, int]:
    """(columns, rows) of output pixels per block so that no block reads more than
    ``max_pixels`` read-level pixels. Pure.

    Whole rows when a block of full-width rows fits, else blocks about square on the level.
    A block is at least one output pixel, even where that one pixel spans more.
    """
    rx, ry = resample
    if _span_bound(width, rx) * _span_bound(height, ry) <= max_pixels:
        return width, height
    rows = _fit(max_pixels // _span_bound(width, rx), ry)
    if rows >= 1:
        return width, _balanced(height, rows)
    cols = _balanced(width, max(1, _fit(math.isqrt(max_pixels), rx)))
    rows = _balanced(height, max(1, _fit(max_pixels // _span_bound(cols, rx), ry)))
    return cols, rows


def level_tile_height(slide: Slide, level: int) -> int | None:
    """The height of ``level``'s tiles from OpenSlide's properties, when it reports one."""
    try:
        return int(slide.properties[f"openslide.level[{level}].tile-height"])
    except (KeyError, ValueError):
        return None


class RegionReader:
    """Reads regions of ``geometry``'s grid from ``slide``.

    Coordinates are output pixels; anything outside ``[0, width) x [0, height)`` is glass
    (white), which is how the grid's padding is filled. A region whose read would decode more
    than :data:`MAX_READ_PIXELS` read-level pixels is read in blocks (see :func:`block_shape`);
    since resampling in pieces is exact, the pixels are the same.
    """

    def __init__(self, slide: Slide, geometry: Geometry, max_pixels: int | None = None) -> None:
        self.slide = slide
        self.geometry = geometry
        self.max_pixels = MAX_READ_PIXELS if max_pixels is None else max_pixels
        ox, oy = geometry.level_origin
        self._direct_origin = (round(ox), round(oy))
        self.pixels_decoded = 0  # read-level pixels decoded, for the read-once accounting

    @property
    def origin(self) -> tuple[float, float]:
        """Output pixel (0, 0)'s corner in read-level pixels, as reads place it."""
        if self.geometry.is_direct:
            return (float(self._direct_origin[0]), float(self._direct_origin[1]))
        return self.geometry.level_origin

    def tile_grid(self) -> tuple[int, int, int] | None:
        """(tile size, phase x, phase y) in output pixels when output pixels are level pixels.

        Reads whose edges fall on ``phase + k * tile`` cut no JPEG tile in two, so no tile is
        decoded twice. None when the level is resampled (tiles then do not map to whole output
        pixels) or its tile size is unknown.
        """
        g = self.geometry
        props = self.slide.properties
        try:
            tw = int(props[f"openslide.level[{g.level}].tile-width"])
            th = int(props[f"openslide.level[{g.level}].tile-height"])
        except (KeyError, ValueError):
            return None
        if not g.is_direct or tw != th:
            return None
        lx, ly = self._direct_origin
        return tw, (-lx) % tw, (-ly) % tw

    def read(
        self, x: int, y: int, width: int, height: int,
        out: npt.NDArray[np.uint8] | None = None,
    ) -> npt.NDArray[np.uint8]:
        """uint8 (height, width, 3) RGB of the grid rectangle at ``(x, y)``.

        Written into ``out`` (which may be a view of a larger array) when given; returned.
        """
        g = self.geometry
        if out is None:
            out = np.empty((height, width, 3), dtype=np.uint8)
        cx0, cy0 = max(x, 0), max(y, 0)
        cx1, cy1 = min(x + width, g.width), min(y + height, g.height)
        if (cx0, cy0, cx1, cy1) != (x, y, x + width, y + height):
            out[...] = GLASS
        if cx1 > cx0 and cy1 > cy0:
            self._read_inside(cx0, cy0, cx1 - cx0, cy1 - cy0,
                              out[cy0 - y : cy1 - y, cx0 - x : cx1 - x])
        return out

    def _read_inside(self, x: int, y: int, width: int, height: int,
                     out: npt.NDArray[np.uint8]) -> None:
        (ox, oy), (rx, ry) = self.origin, self.geometry.resample
        if input_span(x, width, ox, rx) * input_span(y, height, oy, ry) <= self.max_pixels:
            self._read_block(x, y, width, height, out)
            return
        cols, rows = block_shape(width, height, self.geometry.resample, self.max_pixels)
        for by in range(0, height, rows):
            h = min(rows, height - by)
            for bx in range(0, width, cols):
                w = min(cols, width - bx)
                self._read_block(x + bx, y + by, w, h, out[by : by + h, bx : bx + w])

    def _read_block(self, x: int, y: int, width: int, height: int,
                    out: npt.NDArray[np.uint8]) -> None:
        g = self.geometry
        if g.is_direct:
            lx, ly = self._direct_origin
            self.pixels_decoded += width * height
            self.slide.read_level(g.level, lx + x, ly + y, width, height, out=out)
            return
        ox, oy = g.level_origin
        fx, nx, wx = area_weights(x, width, ox, g.resample[0])
        fy, ny, wy = area_weights(y, height, oy, g.resample[1])
        self.pixels_decoded += nx * ny
        raw = self.slide.read_level(g.level, fx, fy, nx, ny)
        resample_area(raw, wy, wx, out=out)


@dataclass(frozen=True)
class GridBlocks:
    """How :func:`read_grid` cuts a grid: strips of rows, each read left to right in blocks
    of columns. ``rows`` and ``columns`` are ``(start, count)`` in output pixels."""

    rows: tuple[tuple[int, int], ...]
    columns: tuple[tuple[int, int], ...]
    #: Read-level pixels all blocks decode together (the shared edges of blocks included).
    level_pixels: int

    def __len__(self) -> int:
        return len(self.rows) * len(self.columns)


def _edges(count: int, origin: float, ratio: float, step: int, tile: int | None) -> list[int]:
    """Cuts of ``[0, count)`` at most ``step`` apart; where a cut in the last half of a step
    falls exactly on a tile edge of the read level, it is taken, so no tile is cut there."""
    edges = [0]
    while edges[-1] < count:
        k0 = edges[-1]
        k1 = min(k0 + step, count)
        if k1 < count and tile:
            for k in range(k1, k0 + (step + 1) // 2 - 1, -1):
                pos = origin + k * ratio
                if abs(pos - round(pos)) < 1e-9 and round(pos) % tile == 0:
                    k1 = k
                    break
        edges.append(k1)
    return edges


def plan_grid_blocks(geometry: Geometry, origin: tuple[float, float] | None = None,
                     tile: int | None = None, max_pixels: int = MAX_READ_PIXELS,
                     strip_rows: int = STRIP_ROWS) -> GridBlocks:
    """The blocks :func:`read_grid` reads ``geometry``'s whole grid in. Pure.

    Strips are at most ``strip_rows`` read-level rows high (cut on a row of ``tile``-high
    tiles where one falls near the end of a strip) and blocks at most ``max_pixels`` read-level
    pixels (or one output pixel, where that spans more). ``origin`` is output pixel (0, 0)'s
    corner on the read level (default: the geometry's).
    """
    rx, ry = geometry.resample
    ox, oy = geometry.level_origin if origin is None else origin
    strip_span = min(strip_rows, max_pixels // _span_bound(1, rx))
    strip = max(1, min(geometry.height, _fit(strip_span, ry)))
    cols = _balanced(geometry.width, max(1, _fit(max_pixels // _span_bound(strip, ry), rx)))
    ys = _edges(geometry.height, oy, ry, strip, tile)
    xs = _edges(geometry.width, ox, rx, cols, None)
    rows = tuple((a, b - a) for a, b in itertools.pairwise(ys))
    columns = tuple((a, b - a) for a, b in itertools.pairwise(xs))
    level_pixels = (sum(input_span(x, w, ox, rx) for x, w in columns)
                    * sum(input_span(y, h, oy, ry) for y, h in rows))
    return GridBlocks(rows, columns, level_pixels)


def grid_blocks(slide: Slide, geometry: Geometry, max_pixels: int | None = None) -> GridBlocks:
    """The blocks :func:`read_grid` reads ``geometry``'s grid of ``slide`` in."""
    reader = RegionReader(slide, geometry, max_pixels)
    return plan_grid_blocks(geometry, reader.origin, level_tile_height(slide, geometry.level),
                            reader.max_pixels)


def _split_runs(columns: tuple[tuple[int, int], ...], runs: int
                ) -> list[tuple[tuple[int, int], ...]]:
    """``columns`` cut into at most ``runs`` contiguous runs of nearly equal length."""
    runs = max(1, min(runs, len(columns)))
    edges = [round(k * len(columns) / runs) for k in range(runs + 1)]
    return [columns[a:b] for a, b in itertools.pairwise(edges)]


def read_grid(slide: Slide, geometry: Geometry, threads: int = 1,
              progress: Callable[[int], ProgressBar] | None = None,
              max_pixels: int | None = None) -> npt.NDArray[np.uint8]:
    """The whole image of ``geometry``'s grid, uint8 (height, width, 3), read in blocks.

    Strips of rows (see :func:`plan_grid_blocks`) are read by ``threads`` threads, each strip
    left to right (in a few runs of blocks when there are fewer strips than threads), so the
    tile column two neighbouring blocks share is still in the tile cache when the second one
    needs it. Memory is the image plus one block per thread, whatever the slide's size or
    pyramid. ``progress``, when given, is called once with the read-level pixels to decode and
    returns a bar (a context manager with ``update(n)``, such as
    :func:`wsiseg.progress.progress_bar` makes), updated in the calling thread as blocks are
    read. Any exception, a KeyboardInterrupt included, stops the reading after the blocks in
    progress, before it propagates.
    """
    reader = RegionReader(slide, geometry, max_pixels)
    blocks = grid_blocks(slide, geometry, reader.max_pixels)
    image = np.empty((geometry.height, geometry.width, 3), dtype=np.uint8)
    (ox, oy), (rx, ry) = reader.origin, geometry.resample
    stop = threading.Event()
    lock = threading.Lock()
    decoded = [0]

    def read_run(y: int, h: int, columns: tuple[tuple[int, int], ...]) -> None:
        span_y = input_span(y, h, oy, ry)
        for x, w in columns:
            if stop.is_set():
                return
            reader.read(x, y, w, h, out=image[y : y + h, x : x + w])
            with lock:
                decoded[0] += span_y * input_span(x, w, ox, rx)

    # Fewer strips than threads (a wide, short slide): each strip in a few runs of blocks.
    threads = max(1, threads)
    runs = _split_runs(blocks.columns, -(-2 * threads // len(blocks.rows)))

    bar: ProgressBar = progress(blocks.level_pixels) if progress is not None else NoProgress()
    pool = ThreadPoolExecutor(threads, thread_name_prefix="wsiseg-grid")
    try:
        with bar:
            reported = 0
            pending = {pool.submit(read_run, y, h, run) for y, h in blocks.rows for run in runs}
            while pending:
                done, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_EXCEPTION)
                for future in done:
                    future.result()  # a reading thread's error, raised here
                with lock:
                    now = decoded[0]
                bar.update(now - reported)
                reported = now
    except BaseException:
        stop.set()
        raise
    finally:  # no read may outlive this call: the slide may be closed next
        pool.shutdown(wait=True, cancel_futures=True)
    return image


def read_thumbnail(slide: Slide, size: int, threads: int = 1) -> npt.NDArray[np.uint8]:
    """The slide's level-0 frame as an RGB image whose longer side is about ``size`` pixels.

    Each pixel is the area average of the pixels it covers on the coarsest level fine enough
    (see :func:`~wsiseg.slide.geometry.overview_geometry`), read in bounded blocks by
    :func:`read_grid`: memory is the thumbnail and one block per thread, even on a slide
    without a pyramid, where OpenSlide's ``get_thumbnail`` decodes all of level 0 at once.
    """
    geometry = overview_geometry(slide.level_downsamples, slide.dimensions, size)
    return read_grid(slide, geometry, threads)
