"""Opening and reading whole-slide images through OpenSlide.

:class:`Slide` wraps an ``openslide.OpenSlide`` handle, turns every failure into a
:class:`~wsiseg.errors.SlideError` that names the file, reads regions in the coordinates of one
pyramid level, and composites transparent pixels (outside the scanned area) onto white glass.

A tile that cannot be decoded is reported as the tile itself (:class:`DamagedRegion`), whichever
reader decodes it. OpenSlide's error state is sticky: once a read fails, every later read on
that handle fails with the first error, from whichever thread. So a failed OpenSlide read is
read again, alone and tile by tile, on a fresh handle of its own (re-opened after every tile
that fails): the tiles that fail there are the damaged ones, the others are good pixels, and a
read that only failed because another had broken the handle comes back whole. Reads that
follow use a fresh shared handle.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import numpy.typing as npt

from wsiseg.errors import (
    ConfigError,
    DamagedSlideError,
    ResolutionError,
    SlideError,
    first_line,
)
from wsiseg.slide.dicom_colour import (
    ycbcr_labelled_rgb,
    ycbcr_premultiplied_bgra_on_white,
    ycbcr_rgba_on_white,
)
from wsiseg.slide.dicom_series import (
    dicom_files,
    refuse_special_file,
    slide_size_bytes,
)
from wsiseg.slide.geometry import Level0Box, LevelBox
from wsiseg.slide.tiff_extent import check_complete

if TYPE_CHECKING:
    from typing import Self

    import openslide
    from openslide.lowlevel import _OpenSlide

    from wsiseg.slide.backends.base import ChunkedSlide
    from wsiseg.slide.remote import RemoteSource
    from wsiseg.slide.tiff_tiles import TiffTiles

    #: ``openslide_read_region`` through the binding: C handle, ARGB buffer, x, y, level, w, h.
    _ReadRegion = Callable[
        [_OpenSlide, ctypes._Pointer[ctypes.c_uint32], int, int, int, int, int], None]

logger = logging.getLogger(__name__)

#: OpenSlide's tile cache for each open slide, in bytes. Reads are cut on tile edges, so the
#: cache only has to bridge the tile row shared by consecutive strips or bands of one column
#: stripe (about 40 MB for an 8192-column stripe read at twice its resolution).
CACHE_BYTES = 64 * 1024 * 1024

GLASS = 255

#: The ways pixels can be decoded (see :func:`open_slide`).
#: The pixel decoders: OpenSlide (every format), tifffile (SVS and generic TIFF) or auto.
Reader = Literal["openslide", "tifffile", "auto"]
READERS: tuple[Reader, ...] = get_args(Reader)
#: Edge of the blocks a failed read is narrowed down to on a level without a known tile size.
PROBE_BLOCK = 256


@dataclass(frozen=True)
class DamagedRegion:
    """A part of a slide that cannot be decoded: one tile of one level.

    ``box`` is ``(x, y, width, height)`` in pixels of ``level``, ``box_level0`` the same area
    in level-0 pixels (clipped to the slide), ``reason`` the decoder's message.
    """

    level: int
    box: LevelBox
    box_level0: Level0Box
    reason: str

    def describe(self) -> str:
        x, y, w, h = self.box_level0
        return f"level-0 x {x}, y {y} ({w} x {h} px, level {self.level})"


@dataclass(frozen=True)
class SlideInfo:
    """What ``wsiseg info`` shows about a slide."""

    path: str
    size_bytes: int
    vendor: str
    level_count: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: tuple[float, float] | None
    objective_power: str | None
    bounds: Level0Box
    associated_images: dict[str, tuple[int, int]]
    opened: str = ""  # the file OpenSlide opened (differs from ``path`` for a DICOM folder)
    files: int = 1  # files the slide is stored in (a DICOM folder's instances)
    #: Which image of the file is the slide, when it holds several (OME-TIFF series, ...).
    image: str = ""


def _import_openslide() -> ModuleType:
    try:
        import openslide
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise SlideError(
            f"OpenSlide is not available ({err}); install it with `pip install openslide-python "
            "openslide-bin`"
        ) from err
    return openslide


class Slide:
    """An open whole-slide image.

    Use :func:`open_slide` to create one. ``mpp`` is the level-0 resolution in um/px per axis:
    from ``openslide.mpp-x``/``mpp-y``, or ``slide_mpp`` when given (which then wins, because the
    user knows better than missing or wrong metadata).
    """

    def __init__(self, path: str | os.PathLike[str], slide_mpp: float | None = None,
                 reader: str = "openslide", skip_damaged: bool = False) -> None:
        if reader not in READERS:  # before anything is opened
            raise ConfigError(f"unknown reader {reader!r}; use {', '.join(READERS)}")
        osl = _import_openslide()
        from wsiseg.slide.backends import open_backend, open_remote_backend, slide_file
        from wsiseg.slide.backends.base import ChunkedSlide
        from wsiseg.slide.remote import SlideUrl, slide_location

        #: The slide's path; for a URL a :class:`~wsiseg.slide.remote.SlideUrl`, which shows
        #: the URL without its credentials or signature.
        self.path = slide_location(path)
        self._remote: RemoteSource | None = None
        #: Read damaged tiles as glass and record them (:meth:`damaged_regions`) instead of
        #: raising :class:`DamagedSlideError`.
        self.skip_damaged = skip_damaged
        self._lock = threading.Lock()  # the shared handle and the damage record
        self._probe_lock = threading.Lock()  # one failed read narrowed down at a time
        self._damaged: dict[tuple[int, LevelBox], DamagedRegion] = {}
        osr: openslide.AbstractSlide
        if isinstance(self.path, SlideUrl):  # read by wsiseg, a byte range at a time
            self.file: Path = self.path
            osr, self._remote = open_remote_backend(self.path.url)
        else:
            if not self.path.exists():
                raise SlideError(f"{self.path}: no such file; check the path")
            refuse_special_file(self.path)  # before anything opens it: a FIFO blocks in open()
            #: What the backend opens: the slide file itself, an OME-Zarr folder itself, or for
            #: a folder holding one DICOM series, its level-0 instance (OpenSlide gathers the
            #: rest of the series from there).
            self.file = slide_file(self.path)
            osr = open_backend(self.file)
        #: The backend reads into numpy itself (OME-TIFF, OME-Zarr), without OpenSlide's
        #: sticky error state, so a failed read needs no fresh handle.
        self._chunked: ChunkedSlide | None = osr if isinstance(osr, ChunkedSlide) else None
        try:
            if self.file.is_file():
                check_complete(self.file)
        except SlideError as err:
            if not skip_damaged:
                osr.close()
                raise
            logger.warning("%s; the missing part is read as damaged", err)
        self._cache: openslide.OpenSlideCache | None
        try:  # one cache for every handle of this slide (see _retire)
            self._cache = osl.OpenSlideCache(CACHE_BYTES)
        except (AttributeError, osl.OpenSlideError):  # pragma: no cover - old OpenSlide
            self._cache = None
        self._current = self._handle_of(osr)
        props = self._osr.properties
        self.properties: dict[str, str] = dict(props)
        self.vendor: str = props.get("openslide.vendor", "unknown")
        #: DICOM frames that are YCbCr by their own JPEG markers but labelled RGB, which OpenSlide
        #: then shows as Y, Cb and Cr: converted to true colour as they are read.
        self.ycbcr_as_rgb = self.vendor == "dicom" and ycbcr_labelled_rgb(self.file)
        if self.ycbcr_as_rgb:
            logger.info("%s: its JPEG frames are YCbCr though labelled RGB; they are read in "
                        "true colour", self.path)
        self.level_count: int = self._osr.level_count
        self.level_dimensions: tuple[tuple[int, int], ...] = tuple(self._osr.level_dimensions)
        self.level_downsamples: tuple[float, ...] = tuple(self._osr.level_downsamples)
        self.dimensions: tuple[int, int] = self.level_dimensions[0]
        self.bounds: Level0Box = self._read_bounds()
        self.metadata_mpp = self._read_mpp()
        if slide_mpp is not None:
            if not slide_mpp > 0:
                raise ResolutionError(f"--slide-mpp must be positive, got {slide_mpp}")
            self.mpp: tuple[float, float] | None = (float(slide_mpp), float(slide_mpp))
            if self.metadata_mpp and abs(self.metadata_mpp[0] / slide_mpp - 1) > 0.01:
                logger.warning(
                    "%s: using --slide-mpp %g instead of the %g um/px in the slide's metadata",
                    self.path, slide_mpp, self.metadata_mpp[0],
                )
        else:
            self.mpp = self.metadata_mpp
        self._tiles = self._tile_reader(reader)

    @property
    def backend(self) -> str:
        """Who reads the slide: ``openslide``, ``ome-tiff``, ``ome-zarr``, or ``tiff-stream``
        (an SVS or generic TIFF at a URL)."""
        if self._chunked is None:
            return "openslide"
        return {"OmeTiffSlide": "ome-tiff", "OmeZarrSlide": "ome-zarr",
                "TiffStreamSlide": "tiff-stream"}.get(type(self._chunked).__name__,
                                                      type(self._chunked).__name__)

    @property
    def _osr(self) -> openslide.AbstractSlide:
        """The shared handle: an ``openslide.OpenSlide`` (replaced after a failed read), or
        a backend wsiseg reads itself."""
        return self._current.osr

    def _handle_of(self, osr: openslide.AbstractSlide) -> _Handle:
        if self._cache is not None and self._chunked is None:
            # The shared cache only saves decoding: whatever refuses it (an old binding or
            # library), the slide is read without it.
            try:
                osr.set_cache(self._cache)
            except Exception:  # noqa: BLE001, S110  # pragma: no cover - old OpenSlide
                pass
        # The C handle, for reading straight into numpy (see _direct_reader); None: public API.
        c_handle = getattr(osr, "_osr", None) if _DIRECT_READ is not None else None
        return _Handle(osr, c_handle)

    def _open_handle(self) -> _Handle:
        from wsiseg.slide.backends import open_backend

        try:
            return self._handle_of(open_backend(self.file))
        except Exception as err:  # the file changed or vanished while being read
            raise SlideError(f"{self.path}: cannot be opened again after a failed read "
                             f"({err}); check the file is still there and unchanged") from err

    def _tile_reader(self, reader: str) -> TiffTiles | None:
        """tifffile's tile reader when ``reader`` asks for it and the slide allows it."""
        if reader == "openslide" or self._chunked is not None:
            if self._chunked is not None and reader != "auto":
                logger.debug("%s: read by wsiseg's %s reader whatever --reader says (%s)",
                             self.path, self.vendor, reader)
            return None
        from wsiseg.slide.tiff_tiles import TiffTiles

        tiles = TiffTiles.open(self.file, self.vendor, self.level_dimensions)
        if tiles is None and reader == "tifffile":
            self.close()
            raise ConfigError(
                f"{self.path}: its tiles cannot be read with tifffile (vendor {self.vendor}, "
                "or a level that is not plain 8-bit RGB tiles); use --reader openslide or auto"
            )
        return tiles

    # -- metadata -----------------------------------------------------------------------------
    def _read_mpp(self) -> tuple[float, float] | None:
        props = self._osr.properties
        try:
            mx = float(props["openslide.mpp-x"])
            my = float(props["openslide.mpp-y"])
        except (KeyError, ValueError):
            return None
        if not (mx > 0 and my > 0):
            return None
        return (mx, my)

    def _read_bounds(self) -> Level0Box:
        props = self._osr.properties
        w0, h0 = self.dimensions
        try:
            x = int(props.get("openslide.bounds-x", 0))
            y = int(props.get("openslide.bounds-y", 0))
            w = int(props.get("openslide.bounds-width", w0 - x))
            h = int(props.get("openslide.bounds-height", h0 - y))
        except ValueError:
            return Level0Box((0, 0, w0, h0))
        return Level0Box((x, y, w, h))

    def require_mpp(self) -> tuple[float, float]:
        """The level-0 resolution, or a :class:`ResolutionError` that offers ``--slide-mpp``."""
        if self.mpp is None:
            raise ResolutionError(
                f"{self.path} has no resolution metadata (openslide.mpp-x/mpp-y); pass "
                "--slide-mpp UM_PER_PX if you know it (0.25 for x40, 0.5 for x20 scans)"
            )
        return self.mpp

    @property
    def objective_power(self) -> str | None:
        return self._osr.properties.get("openslide.objective-power")

    @property
    def size_bytes(self) -> int:
        """The slide's bytes on disk: its file, or all the files of a DICOM series folder or
        an OME-Zarr folder."""
        if self._remote is not None:
            return self._remote.size
        size = slide_bytes(self.path)
        return self.path.stat().st_size if size is None else size

    def info(self) -> SlideInfo:
        if self._chunked is not None:  # their sizes, without decoding them
            assoc = dict(self._chunked.associated_images.sizes)
        else:
            assoc = {name: img.size for name, img in self._osr.associated_images.items()}
        return SlideInfo(
            path=str(self.path),
            size_bytes=self.size_bytes,
            vendor=self.vendor,
            level_count=self.level_count,
            level_dimensions=self.level_dimensions,
            level_downsamples=self.level_downsamples,
            mpp=self.metadata_mpp,
            objective_power=self.objective_power,
            bounds=self.bounds,
            associated_images=assoc,
            opened=str(self.file),
            files=(len(dicom_files(self.path)) if self.path.is_dir() and self._chunked is None
                   else 1),
            image=self._chunked.description if self._chunked is not None else "",
        )

    # -- pixels -------------------------------------------------------------------------------
    def read_level(
        self, level: int, x: int, y: int, width: int, height: int,
        out: npt.NDArray[np.uint8] | None = None,
    ) -> npt.NDArray[np.uint8]:
        """Read ``height x width`` RGB pixels of ``level`` starting at level pixel ``(x, y)``.

        Pixels outside the level, and transparent ones, come back as white glass. Writes into
        ``out`` (uint8 (height, width, 3), may be a view) when given, else into a new array;
        returns it.
        """
        if out is None:
            out = np.empty((height, width, 3), dtype=np.uint8)
        lw, lh = self.level_dimensions[level]
        # Clip to the level so OpenSlide is never asked for pixels that cannot exist.
        cx0, cy0 = max(x, 0), max(y, 0)
        cx1, cy1 = min(x + width, lw), min(y + height, lh)
        if cx1 <= cx0 or cy1 <= cy0:
            out[...] = GLASS
            return out
        if (cx0, cy0, cx1, cy1) != (x, y, x + width, y + height):
            out[...] = GLASS
        inside = out[cy0 - y : cy1 - y, cx0 - x : cx1 - x]
        if self._chunked is not None:
            bad = self._chunked.read_into(level, cx0, cy0, inside)
        elif self._tiles is not None:
            bad = self._tiles.read(level, cx0, cy0, inside)
        else:
            bad = self._read_openslide(level, cx0, cy0, inside)
        if bad:
            self._record_damage(level, bad)
        return out

    def damaged_regions(self) -> list[DamagedRegion]:
        """The damaged tiles found so far (read as glass when ``skip_damaged``), in order of
        level, then row, then column."""
        with self._lock:
            found = list(self._damaged.values())
        return sorted(found, key=lambda r: (r.level, r.box[1], r.box[0]))

    def _record_damage(self, level: int, bad: list[tuple[LevelBox, str]]) -> None:
        regions = [DamagedRegion(level, box, self._level0_box(level, box), reason)
                   for box, reason in bad]
        with self._lock:
            for region in regions:
                self._damaged.setdefault((level, region.box), region)
        if self.skip_damaged:
            for region in regions:
                logger.debug("%s: skipping the damaged tile at %s (%s)", self.path,
                             region.describe(), region.reason)
            return
        first = regions[0]
        x0, y0, w0, h0 = first.box_level0
        raise DamagedSlideError(
            f"{self.path}: cannot read pixels at level-0 x {x0}, y {y0}: the tile there "
            f"({w0} x {h0} level-0 px, level {first.level}) cannot be decoded ({first.reason}); "
            "the file is damaged: re-export or re-scan the slide, or pass --skip-damaged to "
            "map the rest of it", region=first)

    def _level0_box(self, level: int, box: LevelBox) -> Level0Box:
        d = self.level_downsamples[level]
        w0, h0 = self.dimensions
        x, y, w, h = box
        x0, y0 = min(int(x * d), w0), min(int(y * d), h0)
        x1, y1 = min(int(np.ceil((x + w) * d)), w0), min(int(np.ceil((y + h) * d)), h0)
        return Level0Box((x0, y0, x1 - x0, y1 - y0))

    def _tile_size(self, level: int) -> tuple[int, int]:
        """The level's tile size, or :data:`PROBE_BLOCK` where the slide does not say."""
        try:
            return (int(self.properties[f"openslide.level[{level}].tile-width"]),
                    int(self.properties[f"openslide.level[{level}].tile-height"]))
        except (KeyError, ValueError):
            return (PROBE_BLOCK, PROBE_BLOCK)

    # -- OpenSlide reads and their failures ----------------------------------------------------
    def _read_openslide(self, level: int, x: int, y: int, out: npt.NDArray[np.uint8]
                        ) -> list[tuple[LevelBox, str]]:
        """Level pixels from ``(x, y)`` into ``out`` through the shared handle; the damaged
        tiles (read as glass), if the read fails."""
        handle = self._acquire()
        try:
            self._decode(handle, level, x, y, out)
            return []
        # OpenSlideError, or a decoder failure surfacing as OSError; whatever it was, the
        # tile-by-tile read below tells the damaged tiles from a handle broken by another read.
        except Exception as err:  # noqa: BLE001
            error = err
        finally:
            self._release(handle)
        self._retire(handle)  # its error state is set for good
        bad = self._narrow_down(level, x, y, out)
        if not bad:
            logger.debug("%s: a read at level %d (%d, %d) failed on a handle broken by another "
                         "read (%s) and reads well alone", self.path, level, x, y, error)
        return bad

    def _narrow_down(self, level: int, x: int, y: int, out: npt.NDArray[np.uint8]
                     ) -> list[tuple[LevelBox, str]]:
        """Read ``out`` again tile by tile on a handle of its own; the tiles that fail (and
        are left as glass) with OpenSlide's message."""
        tw, th = self._tile_size(level)
        lw, lh = self.level_dimensions[level]
        h, w = out.shape[:2]
        bad: list[tuple[LevelBox, str]] = []
        with self._probe_lock:
            handle = self._open_handle()
            # The handle the end must close: none while a broken one is being replaced, as
            # closing one twice would raise over the error that stopped the replacing.
            unclosed: _Handle | None = handle
            try:
                for ty in range(y // th, (y + h - 1) // th + 1):
                    for tx in range(x // tw, (x + w - 1) // tw + 1):
                        ax, ay = max(x, tx * tw), max(y, ty * th)
                        bx, by = min(x + w, (tx + 1) * tw), min(y + h, (ty + 1) * th)
                        piece = out[ay - y : by - y, ax - x : bx - x]
                        try:
                            self._decode(handle, level, ax, ay, piece)
                        # Any failure here is this tile's: it is reported with its message.
                        except Exception as err:  # noqa: BLE001
                            piece[...] = GLASS
                            tile = LevelBox((tx * tw, ty * th, min(tw, lw - tx * tw),
                                             min(th, lh - ty * th)))
                            bad.append((tile, first_line(err)))
                            # Its error state is set: the next tile needs a new handle.
                            unclosed = None
                            handle.osr.close()
                            handle = unclosed = self._open_handle()
            finally:
                if unclosed is not None:
                    unclosed.osr.close()
        return bad

    def _acquire(self) -> _Handle:
        with self._lock:
            handle = self._current
            handle.users += 1
            return handle

    def _release(self, handle: _Handle) -> None:
        with self._lock:
            handle.users -= 1
            done = handle.retired and handle.users == 0
        if done:
            handle.osr.close()

    def _retire(self, handle: _Handle) -> None:
        """Replace a handle whose error state is set by a fresh one (once, whichever thread
        asks first); it is closed when the last read on it ends."""
        with self._lock:
            if self._current is not handle:
                return
            self._current = self._open_handle()
            handle.retired = True
            done = handle.users == 0
        if done:
            handle.osr.close()

    def _decode(self, handle: _Handle, level: int, x: int, y: int,
                out: npt.NDArray[np.uint8]) -> None:
        """OpenSlide's region at level pixel ``(x, y)``, the size of ``out``, composited into
        ``out``."""
        h, w = out.shape[:2]
        d = self.level_downsamples[level]
        # OpenSlide takes the origin in level-0 pixels. Where a level's downsample is not an
        # integer (e.g. 2.0005), level pixel i starts at i * d, which is rounded here: a shift
        # of under half a level-0 pixel, instead of OpenSlide interpolating between pixels.
        loc = (round(x * d), round(y * d))
        # A C handle is only taken when the direct reader exists (see _handle_of).
        if handle.c_handle is not None and _DIRECT_READ is not None:
            # OpenSlide's C call writes premultiplied ARGB straight into memory we own: no
            # PIL image, no RGBA conversion pass and no copies on the way to ``out``.
            argb = np.empty((h, w), dtype=np.uint32)
            _DIRECT_READ(handle.c_handle, argb.ctypes.data_as(_UINT32_P), loc[0], loc[1], level,
                         w, h)
            on_white = (ycbcr_premultiplied_bgra_on_white if self.ycbcr_as_rgb
                        else _premultiplied_bgra_on_white)
            on_white(argb.view(np.uint8).reshape(h, w, 4), out)
        else:
            rgba = np.asarray(handle.osr.read_region(loc, level, (w, h)))
            (ycbcr_rgba_on_white if self.ycbcr_as_rgb else _composite_on_white)(rgba, out)

    def close(self) -> None:
        # Also called before ``_tiles`` is set, when the tile reader is refused.
        tiles: TiffTiles | None = getattr(self, "_tiles", None)
        if tiles is not None:
            tiles.close()
            self._tiles = None
        self._osr.close()
        if self._remote is not None:
            self._remote.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Handle:
    """An ``openslide.OpenSlide`` handle, its C handle and the reads now running on it."""

    __slots__ = ("c_handle", "osr", "retired", "users")

    def __init__(self, osr: openslide.AbstractSlide, c_handle: _OpenSlide | None) -> None:
        self.osr, self.c_handle = osr, c_handle
        self.users = 0
        self.retired = False


def _composite_on_white(rgba: npt.NDArray[np.uint8], out: npt.NDArray[np.uint8]) -> None:
    """Write ``rgba`` (straight alpha, as ``OpenSlide.read_region`` gives) on white into ``out``."""
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        out[...] = rgba[..., :3]
        return
    a = alpha.astype(np.float32)[..., None] / 255.0
    out[...] = np.rint(rgba[..., :3] * a + GLASS * (1.0 - a)).astype(np.uint8)


def _premultiplied_bgra_on_white(bgra: npt.NDArray[np.uint8],
                                  out: npt.NDArray[np.uint8]) -> None:
    """Premultiplied BGRA bytes (OpenSlide's native ARGB words, little-endian) on white, as RGB.

    Over white, a premultiplied colour c with alpha a becomes c + (255 - a): exact in integers.
    """
    alpha = bgra[..., 3]
    out[...] = bgra[..., 2::-1]
    if alpha.min() != 255:
        out += (255 - alpha)[..., None]


def _direct_reader() -> _ReadRegion | None:
    """OpenSlide's ``openslide_read_region`` through openslide-python's ctypes binding.

    Used when the binding has the shape this code knows (openslide-python 1.x on a
    little-endian machine); otherwise None, and the public ``read_region`` is used.
    """
    if sys.byteorder != "little" or GLASS != 255:
        return None
    try:
        from openslide import lowlevel

        func = lowlevel._read_region
        if not callable(func) or getattr(func, "errcheck", None) is None:
            return None
        return func
    except (ImportError, AttributeError):  # pragma: no cover - depends on the installation
        return None


_DIRECT_READ: _ReadRegion | None = _direct_reader()
_UINT32_P = ctypes.POINTER(ctypes.c_uint32)


def slide_bytes(path: str | os.PathLike[str]) -> int | None:
    """A slide's size in bytes without opening it as a slide: its file, the files of a DICOM
    series or OME-Zarr folder together, or a URL's object; None when it cannot be told. What
    a result records as its slide's ``size_bytes``."""
    from wsiseg.slide.remote import SlideUrl, is_url

    text = path.url if isinstance(path, SlideUrl) else os.fspath(path)
    if is_url(text):
        from wsiseg.slide.remote import filesystem

        try:
            fs, where = filesystem(text)
            return int(fs.size(where))
        except Exception:  # noqa: BLE001 - unknown, and the caller says what that means
            return None
    local = Path(text)
    from wsiseg.slide.backends.ome_zarr import folder_bytes, is_ome_zarr

    if local.is_dir() and is_ome_zarr(local):
        return folder_bytes(local)
    return slide_size_bytes(local)


def open_slide(path: str | os.PathLike[str], slide_mpp: float | None = None,
               reader: str = "openslide", skip_damaged: bool = False) -> Slide:
    """Open a slide, raising :class:`SlideError` with a clear message when it cannot be.

    ``path`` is a local path, or the URL of a slide in a bucket or on a web server
    (``s3://``, ``gs://``, ``http(s)://``; see :mod:`wsiseg.slide.remote`), read without
    OpenSlide, a byte range at a time.

    ``reader`` decodes the pixels: ``openslide`` (every format), ``tifffile`` (Aperio SVS and
    generic tiled TIFF only, tiles decoded in parallel, several times faster) or ``auto``
    (tifffile where it can, else OpenSlide). A tile that cannot be decoded raises
    :class:`~wsiseg.errors.DamagedSlideError` naming it; with ``skip_damaged`` it reads as glass
    and is recorded instead (:meth:`Slide.damaged_regions`).
    """
    return Slide(path, slide_mpp=slide_mpp, reader=reader, skip_damaged=skip_damaged)
