"""What the slide backends wsiseg reads itself share: a pyramid of chunked RGB levels.

A :class:`ChunkedSlide` is an ``openslide.AbstractSlide`` (so :class:`~wsiseg.slide.reader.Slide`
and OpenSlide's ``DeepZoomGenerator`` take it as they take an ``OpenSlide``) whose levels are
grids of chunks (TIFF tiles or strips, zarr chunks). Reads decode only the chunks they touch,
each once while it stays in a small cache, never a whole level. :meth:`ChunkedSlide.read_into`
writes RGB straight into a numpy array; a chunk that cannot be decoded is read as glass and
reported by its place, as :class:`~wsiseg.slide.tiff_tiles.TiffTiles` reports its tiles, so that
the caller decides whether that is an error.
"""

from __future__ import annotations

import collections
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import openslide
from PIL import Image

from wsiseg.errors import DamagedSlideError, first_line
from wsiseg.slide.geometry import LevelBox

GLASS = 255
#: Decoded chunks kept per slide: a chunk cut by two reads is decoded once.
CACHE_BYTES = 64 * 1024 * 1024
#: The largest chunk (tile, strip, zarr chunk) read, in pixels: reads stay bounded however a
#: level is stored; a level stored in larger pieces is refused with a way out.
MAX_CHUNK_PIXELS = 4096 * 4096

#: The chunks of a read that cannot be decoded: (box in level pixels, reason).
BadChunks = list[tuple[LevelBox, str]]


@dataclass(frozen=True)
class LevelGrid:
    """A level's size and the size of the chunks it is stored in, in pixels."""

    width: int
    height: int
    chunk_width: int
    chunk_height: int


class LazyImages(Mapping[str, Image.Image]):
    """Associated images by name, decoded when asked for; their sizes known beforehand."""

    def __init__(self, sizes: dict[str, tuple[int, int]],
                 load: Callable[[str], npt.NDArray[np.uint8]]) -> None:
        self.sizes = sizes
        self._load = load

    def __getitem__(self, name: str) -> Image.Image:
        if name not in self.sizes:
            raise KeyError(name)
        return Image.fromarray(np.ascontiguousarray(self._load(name)), "RGB")

    def __iter__(self) -> Iterator[str]:
        return iter(self.sizes)

    def __len__(self) -> int:
        return len(self.sizes)


class ChunkedSlide(openslide.AbstractSlide):
    """A slide of chunked 8-bit RGB levels, read by wsiseg itself. Thread-safe.

    Subclasses give the levels, the properties beyond OpenSlide's standard ones and
    :meth:`_decode_chunk`. ``description`` says what was opened (e.g. which series of several).
    """

    vendor: ClassVar[str] = "unknown"

    def __init__(self, name: str, levels: list[LevelGrid], downsamples: list[float],
                 mpp: tuple[float, float] | None, extra: dict[str, str],
                 description: str = "",
                 associated: LazyImages | None = None) -> None:
        super().__init__()
        self.name = name
        self.levels = levels
        self.description = description
        self._downsamples = tuple(downsamples)
        self._associated = associated or LazyImages({}, _no_image)
        props = {"openslide.vendor": self.vendor, "openslide.level-count": str(len(levels))}
        if mpp is not None:
            props["openslide.mpp-x"], props["openslide.mpp-y"] = repr(mpp[0]), repr(mpp[1])
        for n, (grid, d) in enumerate(zip(levels, downsamples)):
            props[f"openslide.level[{n}].width"] = str(grid.width)
            props[f"openslide.level[{n}].height"] = str(grid.height)
            props[f"openslide.level[{n}].downsample"] = repr(d)
            props[f"openslide.level[{n}].tile-width"] = str(grid.chunk_width)
            props[f"openslide.level[{n}].tile-height"] = str(grid.chunk_height)
        props.update(extra)
        self._properties = props
        self._cache: collections.OrderedDict[tuple[int, int, int], npt.NDArray[np.uint8]] = (
            collections.OrderedDict())
        self._cached_bytes = 0
        self._lock = threading.Lock()

    # -- the OpenSlide interface ---------------------------------------------------------------
    @classmethod
    def detect_format(cls, filename: object) -> str | None:
        return None  # backends are chosen by wsiseg.slide.backends.open_backend

    @property
    def level_count(self) -> int:
        return len(self.levels)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple((g.width, g.height) for g in self.levels)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._downsamples

    @property
    def properties(self) -> Mapping[str, str]:
        return self._properties

    @property
    def associated_images(self) -> LazyImages:
        return self._associated

    def get_best_level_for_downsample(self, downsample: float) -> int:
        """The level OpenSlide would pick: the last whose downsample is at most ``downsample``."""
        best = 0
        for n, d in enumerate(self._downsamples):
            if d <= downsample:
                best = n
        return best

    def read_region(self, location: tuple[int, int], level: int,
                    size: tuple[int, int]) -> Image.Image:
        """RGBA as ``OpenSlide.read_region`` gives it: ``location`` in level-0 pixels, pixels
        outside the level transparent. A chunk that cannot be decoded raises
        :class:`~wsiseg.errors.DamagedSlideError`."""
        if not 0 <= level < len(self.levels):
            raise ValueError(f"level {level} out of range (the slide has {len(self.levels)})")
        w, h = size
        d = self._downsamples[level]
        x, y = int(location[0] / d), int(location[1] / d)
        grid = self.levels[level]
        rgba = np.zeros((h, w, 4), dtype=np.uint8)
        cx0, cy0 = max(x, 0), max(y, 0)
        cx1, cy1 = min(x + w, grid.width), min(y + h, grid.height)
        if cx1 > cx0 and cy1 > cy0:
            inside = rgba[cy0 - y : cy1 - y, cx0 - x : cx1 - x]
            rgb = np.empty((cy1 - cy0, cx1 - cx0, 3), dtype=np.uint8)
            bad = self.read_into(level, cx0, cy0, rgb)
            if bad:
                (bx, by, bw, bh), reason = bad[0]
                raise DamagedSlideError(
                    f"{self.name}: the chunk at level {level} x {bx}, y {by} ({bw} x {bh} px) "
                    f"cannot be decoded ({reason}); the file is damaged: re-export it")
            inside[..., :3] = rgb
            inside[..., 3] = 255
        return Image.fromarray(rgba, "RGBA")

    def close(self) -> None:
        with self._lock:
            self._cache.clear()
            self._cached_bytes = 0

    # -- numpy reads ---------------------------------------------------------------------------
    def read_into(self, level: int, x: int, y: int, out: npt.NDArray[np.uint8]) -> BadChunks:
        """Level pixels from ``(x, y)`` into ``out`` (h, w, 3); the region lies in the level.

        Returns the chunks that cannot be decoded, as ``((x, y, width, height) in level
        pixels, reason)``; their pixels in ``out`` are glass.
        """
        grid = self.levels[level]
        cw, ch = grid.chunk_width, grid.chunk_height
        h, w = out.shape[:2]
        bad: BadChunks = []
        for cy in range(y // ch, (y + h - 1) // ch + 1):
            for cx in range(x // cw, (x + w - 1) // cw + 1):
                x0, y0 = max(x, cx * cw), max(y, cy * ch)
                x1, y1 = min(x + w, (cx + 1) * cw), min(y + h, (cy + 1) * ch)
                try:
                    chunk = self._chunk(level, cy, cx)
                    out[y0 - y : y1 - y, x0 - x : x1 - x] = chunk[
                        y0 - cy * ch : y1 - cy * ch, x0 - cx * cw : x1 - cx * cw]
                except Exception as err:  # noqa: BLE001 - any decoder failure is a bad chunk
                    out[y0 - y : y1 - y, x0 - x : x1 - x] = GLASS
                    box = LevelBox((cx * cw, cy * ch, min(cw, grid.width - cx * cw),
                                    min(ch, grid.height - cy * ch)))
                    bad.append((box, first_line(err) or type(err).__name__))
        return bad

    def _chunk(self, level: int, cy: int, cx: int) -> npt.NDArray[np.uint8]:
        key = (level, cy, cx)
        with self._lock:
            chunk = self._cache.get(key)
            if chunk is not None:
                self._cache.move_to_end(key)
                return chunk
        chunk = self._decode_chunk(level, cy, cx)
        grid = self.levels[level]
        need = (min(grid.chunk_height, grid.height - cy * grid.chunk_height),
                min(grid.chunk_width, grid.width - cx * grid.chunk_width))
        if (chunk.ndim != 3 or chunk.shape[2] != 3 or chunk.shape[0] < need[0]
                or chunk.shape[1] < need[1]):
            raise ValueError(f"chunk ({cx}, {cy}) decodes to shape {chunk.shape}, not "
                             f"{need[0]} x {need[1]} RGB")
        with self._lock:
            if key not in self._cache:
                self._cache[key] = chunk
                self._cached_bytes += chunk.nbytes
                while self._cached_bytes > CACHE_BYTES and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._cached_bytes -= old.nbytes
        return chunk

    @abstractmethod
    def _decode_chunk(self, level: int, cy: int, cx: int) -> npt.NDArray[np.uint8]:
        """Chunk ``(cx, cy)`` of ``level`` as (rows, columns, 3) uint8 RGB, covering at least
        the part of the chunk inside the level."""


def _no_image(name: str) -> npt.NDArray[np.uint8]:
    raise KeyError(name)


def downsamples_from_sizes(sizes: list[tuple[int, int]]) -> list[float]:
    """Level downsamples as OpenSlide derives them: the mean of the width and height ratios."""
    w0, h0 = sizes[0]
    return [(w0 / w + h0 / h) / 2 for w, h in sizes]
