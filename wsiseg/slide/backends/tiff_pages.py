"""Slides whose levels are tiled pages of a TIFF, decoded by tifffile: what the OME-TIFF reader
and the reader of TIFFs at URLs share. A subclass gives the pages and where their bytes come
from (:meth:`TiffPagesSlide._read_bytes`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import numpy.typing as npt

from wsiseg.errors import SlideError, first_line
from wsiseg.slide.backends.base import MAX_CHUNK_PIXELS, ChunkedSlide, LevelGrid

if TYPE_CHECKING:
    import tifffile


class TiffPagesSlide(ChunkedSlide):
    """A :class:`ChunkedSlide` whose level ``n`` is the TIFF page ``_pages[n]``."""

    _pages: list[tifffile.TiffPage]
    #: The way out a refusal of the slide's codec gives.
    codec_way_out: ClassVar[str] = "export it again (JPEG or deflate)"

    def _read_bytes(self, page: tifffile.TiffPage, offset: int, count: int) -> bytes:
        raise NotImplementedError

    def _check_codec(self, level: int, tries: int = 8) -> None:
        """Refuse the slide unless one of the level's first written chunks decodes: the codec
        is there (a single damaged tile is reported when it is read, not here). The chunk
        decoded is kept for the reads."""
        page = self._pages[level]
        written = [i for i, n in enumerate(page.databytecounts) if n > 0][:tries]
        across = -(-self.levels[level].width // self.levels[level].chunk_width)
        errors: list[Exception] = []
        for index in written:
            try:
                self._chunk(level, index // across, index % across)
                return
            except SlideError:
                raise  # the file or the server, not the codec: no use trying the next chunk
            except Exception as err:  # noqa: BLE001 - tried on the next chunk
                errors.append(err)
        if errors:
            raise SlideError(
                f"{self.name}: the {compression_name(page)} tiles of level {level} cannot be "
                f"decoded ({first_line(errors[0])}); the file is damaged or its compression "
                f"is not one imagecodecs reads: {self.codec_way_out}") from errors[0]

    def _decode_chunk(self, level: int, cy: int, cx: int) -> npt.NDArray[np.uint8]:
        grid = self.levels[level]
        across = -(-grid.width // grid.chunk_width)
        index = cy * across + cx
        page = self._pages[level]
        count, offset = page.databytecounts[index], page.dataoffsets[index]
        if count == 0:  # a tile never written: glass, as OpenSlide shows it
            return np.full((grid.chunk_height, grid.chunk_width, 3), 255, dtype=np.uint8)
        data = self._read_bytes(page, offset, count)
        if len(data) != count:
            raise OSError(f"tile {index} is cut short ({len(data)} of {count} bytes)")
        tile, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
        if tile is None or tile.dtype != np.uint8:
            raise ValueError(f"tile {index} does not decode to 8-bit pixels")
        return np.asarray(tile).reshape(-1, grid.chunk_width, 3)

    def level_bytes(self, level: int) -> int:
        """The bytes of ``level``'s tiles in the file (their TileByteCounts)."""
        return int(sum(self._pages[level].databytecounts))


def level_grid(page: tifffile.TiffPage, name: str) -> LevelGrid:
    """The chunk grid of a level stored as ``page``; a :class:`SlideError` for chunks too
    large to read a part of."""
    if page.is_tiled:
        cw, ch = page.tilewidth, page.tilelength
    else:
        cw, ch = page.imagewidth, min(page.rowsperstrip, page.imagelength)
    if cw * ch > MAX_CHUNK_PIXELS:
        raise SlideError(
            f"{name}: a level of {page.imagewidth} x {page.imagelength} px is stored in pieces "
            f"of {cw} x {ch} px, too large to read a part of; export it tiled (e.g. bfconvert "
            "-tilex 512 -tiley 512, or QuPath's OME-TIFF export)")
    return LevelGrid(page.imagewidth, page.imagelength, cw, ch)


def compression_name(page: tifffile.TiffPage) -> str:
    """The name of ``page``'s compression, as tifffile knows it."""
    import tifffile

    try:
        return tifffile.COMPRESSION(page.compression).name
    except ValueError:
        return f"compression {page.compression}"
