"""Reading the tiles of TIFF-family slides (Aperio SVS, generic tiled TIFF) with tifffile.

OpenSlide decodes every tile format there is, but on one thread per call and through its own
cache. For the two TIFF families the tiles are plain TIFF tiles, so they can be read with
``os.pread`` and decoded by imagecodecs (libjpeg-turbo for JPEG) from as many threads as the
loader runs, several times faster. The pixels are OpenSlide's: the same codec library decodes
the same bytes (checked tile for tile in the tests). Anything unusual (another vendor, a level
that is not a tiled 8-bit RGB page, a codec imagecodecs lacks) is left to OpenSlide.

A tile that cannot be decoded (garbage bytes, a file cut short) is read as glass and reported
by its place, so the caller decides whether that is an error; tiles are independent, so the
other tiles of the read are good.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from wsiseg.slide.dicom_series import special_kind
from wsiseg.slide.geometry import LevelBox

if TYPE_CHECKING:
    import tifffile

logger = logging.getLogger(__name__)

#: The vendors whose levels are plain tiled TIFF pages.
VENDORS = ("aperio", "generic-tiff")
#: Decoded tiles kept, as OpenSlide keeps them: a tile cut by two reads is decoded once.
CACHE_BYTES = 64 * 1024 * 1024


class TiffTiles:
    """Decodes regions of a slide's levels tile by tile; safe to call from several threads."""

    def __init__(self, path: Path, tif: tifffile.TiffFile,
                 pages: list[tifffile.TiffPage]) -> None:
        self.path = path
        self._tif = tif  # the open tifffile.TiffFile: its pages decode the tiles
        self._pages = pages  # one per OpenSlide level
        self._fd = os.open(path, os.O_RDONLY)
        self._cache: collections.OrderedDict[tuple[int, int], npt.NDArray[np.uint8]] = (
            collections.OrderedDict())
        self._cached_bytes = 0
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, vendor: str,
             level_dimensions: tuple[tuple[int, int], ...]) -> TiffTiles | None:
        """The tile reader for ``path``, or None when its levels are not all plain tiles."""
        if vendor not in VENDORS or special_kind(path) is not None:
            return None
        tif: tifffile.TiffFile | None = None
        try:
            import imagecodecs  # noqa: F401  (tifffile decodes JPEG and the rest through it)
            import tifffile

            tif = tifffile.TiffFile(path)
            found = [_level_page(tif.pages, w, h) for w, h in level_dimensions]
            pages = [p for p in found if p is not None]
            if len(pages) != len(found):
                raise ValueError("a level is not a tiled 8-bit RGB page")
            reader = cls(path, tif, pages)
            for level in range(len(pages)):  # the codec is there and works
                reader._check_codec(level)
            return reader
        except Exception as err:  # noqa: BLE001 - anything unexpected: OpenSlide reads it
            logger.debug("%s: tiles left to OpenSlide (%s)", path, err)
            if tif is not None:
                tif.close()
            return None

    def read(self, level: int, x: int, y: int, out: npt.NDArray[np.uint8]
             ) -> list[tuple[LevelBox, str]]:
        """Level pixels from ``(x, y)`` into ``out`` (h, w, 3); the region lies in the level.

        Returns the tiles that cannot be decoded, as ``((x, y, width, height) in level pixels,
        reason)``; their pixels in ``out`` are glass (255).
        """
        page = self._pages[level]
        tw, th = page.tilewidth, page.tilelength
        across = -(-page.imagewidth // tw)
        h, w = out.shape[:2]
        bad: list[tuple[LevelBox, str]] = []
        for ty in range(y // th, (y + h - 1) // th + 1):
            for tx in range(x // tw, (x + w - 1) // tw + 1):
                # The part of this tile inside the region, in tile and in ``out`` coordinates.
                x0, y0 = max(x, tx * tw), max(y, ty * th)
                x1, y1 = min(x + w, (tx + 1) * tw), min(y + h, (ty + 1) * th)
                try:
                    tile = self._tile(level, ty * across + tx)
                except Exception as err:  # noqa: BLE001 - any decoder failure is a bad tile
                    out[y0 - y : y1 - y, x0 - x : x1 - x] = 255
                    box = LevelBox((tx * tw, ty * th, min(tw, page.imagewidth - tx * tw),
                                    min(th, page.imagelength - ty * th)))
                    bad.append((box, _reason(err)))
                    continue
                out[y0 - y : y1 - y, x0 - x : x1 - x] = tile[
                    y0 - ty * th : y1 - ty * th, x0 - tx * tw : x1 - tx * tw]
        return bad

    def _check_codec(self, level: int, tries: int = 8) -> None:
        """Raise unless one of the level's first few written tiles decodes: the codec is there
        (a single damaged tile is no reason to leave the slide to OpenSlide)."""
        page = self._pages[level]
        written = [i for i, n in enumerate(page.databytecounts) if n > 0][:tries] or [0]
        errors: list[Exception] = []
        for index in written:
            try:
                self._tile(level, index)
                return
            except Exception as err:  # noqa: BLE001 - tried on the next tile
                errors.append(err)
        raise errors[0]

    def _tile(self, level: int, index: int) -> npt.NDArray[np.uint8]:
        key = (level, index)
        with self._lock:
            tile = self._cache.get(key)
            if tile is not None:
                self._cache.move_to_end(key)
                return tile
        tile = _decode(self._pages[level], self._fd, index)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = tile
                self._cached_bytes += tile.nbytes
                while self._cached_bytes > CACHE_BYTES and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._cached_bytes -= old.nbytes
        return tile

    def close(self) -> None:
        os.close(self._fd)
        self._tif.close()


def _reason(err: BaseException) -> str:
    lines = [s.strip() for s in str(err).splitlines() if s.strip()]
    return (lines[0] if lines else type(err).__name__)[:200]


def _level_page(pages: Iterable[tifffile.TiffPage | tifffile.TiffFrame], width: int,
                height: int) -> tifffile.TiffPage | None:
    """The tiled, 8-bit, 3-sample, interleaved page of ``width x height``, if there is one."""
    import tifffile

    for page in pages:
        # tifffile lists light frames instead of pages only when asked to (``useframes``).
        if (isinstance(page, tifffile.TiffPage) and page.is_tiled
                and page.imagewidth == width and page.imagelength == height
                and page.samplesperpixel == 3 and page.bitspersample == 8
                and page.planarconfig == 1 and page.imagedepth == 1):
            return page
    return None


def _decode(page: tifffile.TiffPage, fd: int, index: int) -> npt.NDArray[np.uint8]:
    """Tile ``index`` of ``page`` as (tilelength, tilewidth, 3) uint8 RGB."""
    count, offset = page.databytecounts[index], page.dataoffsets[index]
    if count == 0:  # a tile the scanner never wrote: glass, as OpenSlide shows it
        return np.full((page.tilelength, page.tilewidth, 3), 255, dtype=np.uint8)
    data = os.pread(fd, count, offset)  # positioned reads: no shared file offset to lock
    if len(data) != count:
        raise OSError(f"tile {index} is cut short ({len(data)} of {count} bytes)")
    tile, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
    if tile is None or tile.dtype != np.uint8:
        raise ValueError(f"tile {index} does not decode to 8-bit pixels")
    return tile.reshape(page.tilelength, page.tilewidth, 3)
