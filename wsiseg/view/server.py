"""A local web viewer of results: the class map over its slide, in the browser.

The server is the standard library's :class:`http.server.ThreadingHTTPServer`, so viewing adds
no runtime dependency; it serves one user's browser on the local machine (or a few, with
``host``), which needs no asynchronous framework. The page uses OpenSeadragon (shipped in
``static/``) to show two Deep Zoom images of the same size: ``/slide`` (JPEG tiles of the slide,
from OpenSlide's :class:`~openslide.deepzoom.DeepZoomGenerator`) and ``/map`` (PNG tiles of the
label map in the classes' colours, background transparent, placed in the slide's level-0 frame),
so the overlay lines up with the slide at every zoom. A result holding the map's uncertainty
also has ``/uncertainty`` (PNG tiles of it, from its mean pyramid, through
:data:`UNCERTAINTY_COLOUR`), and one holding artefact labels (``labels/qc``) has ``/qc`` (PNG
tiles of them in the artefacts' colours, hatched, from their mode pyramid): layers the page shows
on request.

Paths served: ``/`` (a result's viewer, or a folder's index), ``/static/NAME``, ``/info.json``,
``/class?x=&y=`` and, per result, ``/slide.dzi``, ``/slide_files/L/C_R.jpeg``, ``/map.dzi``,
``/map_files/L/C_R.png`` and, where the result holds its uncertainty, ``/uncertainty.dzi`` and
``/uncertainty_files/L/C_R.png``, and where it holds artefact labels, ``/qc.dzi`` and
``/qc_files/L/C_R.png``; in a folder's index each result's paths are under
``/r/NAME/`` and its thumbnail is ``/thumb/NAME.png`` (NAME percent-encoded in links, decoded
once here and looked up by exact name); the index is the folder's cohort table, each name linking to its viewer. Anything else is 404; a malformed query is 400.

Who may ask: on a loopback address the server answers only requests whose Host header names
this machine (``127.0.0.1``, ``localhost``, ``[::1]`` or the host given, with the served port or
none), so a web page whose name an attacker rebinds to 127.0.0.1 gets 403, not the slide. On a
network address a LAN client names the machine as it knows it, which the server cannot list, so
there every request must bear a random token instead (``?token=``, Jupyter's way), which sets
an HttpOnly, SameSite=Strict cookie for the page's later requests; a rebound page knows neither.
Each connection has a deadline for its request and is closed when idle; connections beyond
:data:`MAX_CONNECTIONS` are answered 503.
"""

from __future__ import annotations

import functools
import hmac
import io
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote

import numpy as np
import numpy.typing as npt
import zarr

from wsiseg.errors import ResultError, SlideError, WsisegError
from wsiseg.export.cohort import cohort_page, cohort_rows, folder_results
from wsiseg.naming import RESULT_SUFFIX
from wsiseg.result.pyramid import (
    QC_LABEL,
    label_level_path,
    result_layout,
    uncertainty_level_path,
)
from wsiseg.result.reading import result_reads
from wsiseg.result.store import (
    label_pyramid,
    open_result,
    open_result_group,
    qc_array,
    uncertainty_array,
)
from wsiseg.slide.artefacts import QC_COLOURS, QC_NAMES, QC_NONE
from wsiseg.slide.reader import open_slide

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
TILE_SIZE = 254
OVERLAP = 1
TILE_CACHE = 4096  # tiles per image kept in memory
THUMB_SIZE = 256
#: Connections waiting to be accepted (socketserver's default of 5 drops a browser's burst).
LISTEN_BACKLOG = max(socket.SOMAXCONN, 128)
#: Connections served at once, one thread each; more are answered 503 at once.
MAX_CONNECTIONS = 256
#: Seconds a new connection has to send its request line and headers, and a write may take.
REQUEST_TIMEOUT = 30.0
#: Seconds a kept-alive connection may wait for its next request before it is closed.
KEEPALIVE_TIMEOUT = 15.0
#: How long closing a result waits for the slide reads in flight (a read takes milliseconds).
CLOSE_WAIT = 30.0

#: The uncertainty layer's ramp: this colour, its alpha rising linearly with the uncertainty
#: from 0 (certain: clear, the slide and map show as they are) to 255 (uniform: opaque); one hue
#: with a linear alpha reads the same in every part of the range.
UNCERTAINTY_COLOUR = (255, 0, 255)
#: The artefact layer: each artefact's colour (``wsiseg.slide.artefacts.QC_COLOURS``, as the
#: result's ``labels/qc`` metadata gives them) at this alpha, so the slide shows through...
QC_FILL_ALPHA = 96
#: ... crossed by opaque diagonal lines, QC_HATCH_WIDTH tile pixels wide every QC_HATCH_PERIOD
#: (x + y of the Deep Zoom level, so they run on across tiles at every zoom): an artefact reads
#: as one under the class map's flat colours too.
QC_HATCH_PERIOD, QC_HATCH_WIDTH = 8, 2

_CONTENT_TYPES = {".js": "application/javascript", ".css": "text/css", ".html": "text/html",
                  ".png": "image/png", ".txt": "text/plain; charset=utf-8"}
_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


class ResultView:
    """One result and its slide, as Deep Zoom images and JSON. Thread-safe."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from openslide.deepzoom import DeepZoomGenerator

        from wsiseg.slide.backends import open_backend

        self.path = Path(path)
        with result_reads(self.path):
            labels, self.info = open_result(self.path)
        group = open_result_group(self.path)
        self.levels = label_pyramid(group)
        self.labels = labels
        slide_path = self.info.slide.path
        if not slide_path.exists():
            raise SlideError(f"the slide of {self.path}, {slide_path}, is not there; put the "
                             "slide back at that path (the result names it) to view the result")
        with open_slide(slide_path) as slide:  # says in one line why a slide cannot be read
            slide_file = slide.file
        if not slide_file.is_dir():  # an OME-Zarr slide is a folder
            _regular_file(slide_file, self.path)  # opened again here, so checked again
        self.osr = open_backend(slide_file)
        if slide.ycbcr_as_rgb:  # Deep Zoom reads through the backend: give it true colours
            from wsiseg.slide.dicom_colour import true_colour

            self.osr = true_colour(self.osr)
        self.dz = DeepZoomGenerator(self.osr, tile_size=TILE_SIZE, overlap=OVERLAP,
                                    limit_bounds=False)
        self.width, self.height = self.osr.dimensions
        self._lock = threading.Lock()
        self._slide_reads = _SlideReads()
        self._stats: dict[str, Any] | None = None
        self.slide_tile = functools.lru_cache(maxsize=TILE_CACHE)(self._slide_tile)
        self.map_tile = functools.lru_cache(maxsize=TILE_CACHE)(self._map_tile)
        self.uncertainty_tile = functools.lru_cache(maxsize=TILE_CACHE)(self._uncertainty_tile)
        self.qc_tile = functools.lru_cache(maxsize=TILE_CACHE)(self._qc_tile)
        with result_reads(self.path):
            uncertainty0 = uncertainty_array(group, self.info)
            qc0 = qc_array(group, self.info)
        #: The levels of the map's uncertainty, level 0 first; None for a result without it.
        self.uncertainty_levels = _pyramid(self.path, group, uncertainty0,
                                           uncertainty_level_path, len(self.levels))
        #: The levels of the artefact labels, level 0 first; None for a result without them.
        self.qc_levels = _pyramid(self.path, group, qc0,
                                  lambda k: label_level_path(QC_LABEL, k), len(self.levels))
        # A colour per class with alpha; class 0 (background) stays transparent.
        lut = np.zeros((256, 4), dtype=np.uint8)
        for c in self.info.classes:
            if c.index > 0:
                lut[c.index] = (*c.color[:3], 255)
        self._lut = lut
        ramp = np.zeros((256, 4), dtype=np.uint8)
        ramp[:, :3] = UNCERTAINTY_COLOUR
        ramp[:, 3] = np.arange(256)
        self._ramp = ramp
        qc_lut = np.zeros((256, 4), dtype=np.uint8)
        for value, colour in QC_COLOURS.items():
            if value != QC_NONE:
                qc_lut[value] = (*colour, QC_FILL_ALPHA)
        self._qc_lut = qc_lut

    # -- Deep Zoom geometry (the same for slide and map) --------------------------------------
    @property
    def max_level(self) -> int:
        return self.dz.level_count - 1

    def dzi(self, fmt: str) -> str:
        """The Deep Zoom descriptor of the slide (``jpeg``) or the map, uncertainty and
        artefacts (``png``)."""
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
                f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{fmt}" '
                f'Overlap="{OVERLAP}" TileSize="{TILE_SIZE}"><Size Width="{self.width}" '
                f'Height="{self.height}"/></Image>')

    def _tile_box(self, level: int, col: int, row: int) -> tuple[int, int, int, int, float]:
        """(x, y, w, h) in the level's pixels, and the level's downsample from level 0."""
        if not 0 <= level <= self.max_level:
            raise KeyError(level)
        w_l, h_l = self.dz.level_dimensions[level]
        cols, rows = self.dz.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise KeyError((col, row))
        x = col * TILE_SIZE - (OVERLAP if col else 0)
        y = row * TILE_SIZE - (OVERLAP if row else 0)
        x1 = min(w_l, (col + 1) * TILE_SIZE + OVERLAP)
        y1 = min(h_l, (row + 1) * TILE_SIZE + OVERLAP)
        return x, y, x1 - x, y1 - y, 2.0 ** (self.max_level - level)

    # -- tiles ---------------------------------------------------------------------------------
    def _slide_tile(self, level: int, col: int, row: int) -> bytes:
        self._tile_box(level, col, row)  # KeyError when out of range
        with self._slide_reads:
            image = self.dz.get_tile(level, (col, row)).convert("RGB")
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        return out.getvalue()

    def _map_tile(self, level: int, col: int, row: int) -> bytes:
        x, y, w, h, down = self._tile_box(level, col, row)
        return _png(self.map_rgba(x, y, w, h, down))

    def _uncertainty_tile(self, level: int, col: int, row: int) -> bytes:
        if self.uncertainty_levels is None:
            raise KeyError("uncertainty")
        x, y, w, h, down = self._tile_box(level, col, row)
        return _png(self.uncertainty_rgba(x, y, w, h, down))

    def _qc_tile(self, level: int, col: int, row: int) -> bytes:
        if self.qc_levels is None:
            raise KeyError("qc")
        x, y, w, h, down = self._tile_box(level, col, row)
        return _png(self.qc_rgba(x, y, w, h, down))

    def map_rgba(self, x: int, y: int, w: int, h: int, down: float) -> npt.NDArray[np.uint8]:
        """(h, w, 4) colours of the map over level pixels ``[x, x+w) x [y, y+h)`` of a Deep
        Zoom level ``down`` times smaller than level 0, from the pyramid level that matches."""
        return self._pyramid_rgba(self.levels, self._lut, x, y, w, h, down)

    def uncertainty_rgba(self, x: int, y: int, w: int, h: int, down: float
                         ) -> npt.NDArray[np.uint8]:
        """(h, w, 4) colours of the map's uncertainty (:data:`UNCERTAINTY_COLOUR`, alpha the
        uncertainty) over the same pixels as :meth:`map_rgba`, clear outside the map."""
        if self.uncertainty_levels is None:
            raise KeyError("uncertainty")
        return self._pyramid_rgba(self.uncertainty_levels, self._ramp, x, y, w, h, down)

    def qc_rgba(self, x: int, y: int, w: int, h: int, down: float) -> npt.NDArray[np.uint8]:
        """(h, w, 4) colours of the artefact labels over the same pixels as :meth:`map_rgba`:
        each artefact's colour at :data:`QC_FILL_ALPHA`, opaque on the hatch lines, clear where
        there is none and outside the labels' grid (the tissue mask's)."""
        if self.qc_levels is None:
            raise KeyError("qc")
        t = self.info.tissue
        rgba = self._pyramid_rgba(self.qc_levels, self._qc_lut, x, y, w, h, down,
                                  grid=(t.scale_to_level0, t.offset_level0))
        hatch = (np.add.outer(np.arange(y, y + h), np.arange(x, x + w)) % QC_HATCH_PERIOD
                 < QC_HATCH_WIDTH)
        rgba[..., 3][hatch & (rgba[..., 3] > 0)] = 255
        return rgba

    def _pyramid_rgba(self, levels: list[zarr.Array[Any]], lut: npt.NDArray[np.uint8], x: int,
                      y: int, w: int, h: int, down: float,
                      grid: tuple[tuple[float, float], tuple[int, int]] | None = None
                      ) -> npt.NDArray[np.uint8]:
        """``lut`` of a pyramid over a tile's pixels, reading only the window of the level that
        matches (only the chunks the tile covers). Its level 0 is on the map's grid, or on
        ``grid`` ((scale, offset) to level 0) where given."""
        (sx, sy), (ox, oy) = grid or (self.info.scale_to_level0, self.info.offset_level0)
        # The coarsest level whose pixels are still no larger than a tile pixel.
        k = math.floor(math.log2(max(down / max(sx, sy), 1.0)))
        k = min(k, len(levels) - 1)
        array = levels[k]
        mh, mw = array.shape
        x0 = (np.arange(x, x + w) + 0.5) * down  # level-0 centres of the tile's pixels
        y0 = (np.arange(y, y + h) + 0.5) * down
        mx = np.floor((x0 - ox) / (sx * 2 ** k)).astype(np.int64)
        my = np.floor((y0 - oy) / (sy * 2 ** k)).astype(np.int64)
        inx = (mx >= 0) & (mx < mw)
        iny = (my >= 0) & (my < mh)
        rgba = np.zeros((h, w, 4), dtype=np.uint8)
        if not inx.any() or not iny.any():
            return rgba
        cx0, cx1 = int(mx[inx].min()), int(mx[inx].max()) + 1
        cy0, cy1 = int(my[iny].min()), int(my[iny].max()) + 1
        with result_reads(self.path):
            window = np.asarray(array[cy0:cy1, cx0:cx1])
        picked = window[np.ix_(my[iny] - cy0, mx[inx] - cx0)]
        rgba[np.ix_(iny, inx)] = lut[picked]
        return rgba

    def _map_pixel(self, x0: float, y0: float) -> tuple[int, int] | None:
        """The map pixel (x, y) holding level-0 pixel (x0, y0); None outside the map."""
        sx, sy = self.info.scale_to_level0
        ox, oy = self.info.offset_level0
        mx, my = math.floor((x0 - ox) / sx), math.floor((y0 - oy) / sy)
        mh, mw = self.labels.shape
        if not (0 <= mx < mw and 0 <= my < mh):
            return None
        return mx, my

    def class_at(self, x0: float, y0: float) -> int | None:
        """The class index at level-0 pixel (x0, y0); None outside the map."""
        pixel = self._map_pixel(x0, y0)
        if pixel is None:
            return None
        with result_reads(self.path):
            return int(np.asarray(self.labels[pixel[1], pixel[0]]))

    def confidence_at(self, x0: float, y0: float) -> float | None:
        """1 - uncertainty / 255 at level-0 pixel (x0, y0), to 2 decimals; None outside the
        map or for a result without the uncertainty."""
        pixel = self._map_pixel(x0, y0)
        if pixel is None or self.uncertainty_levels is None:
            return None
        with result_reads(self.path):
            u = int(np.asarray(self.uncertainty_levels[0][pixel[1], pixel[0]]))
        return round(1 - u / 255, 2)

    def qc_at(self, x0: float, y0: float) -> int | None:
        """The artefact label (``wsiseg.slide.artefacts.QC_NAMES``) at level-0 pixel (x0, y0),
        from level 0 of the labels; None outside their grid or for a result without them."""
        if self.qc_levels is None:
            return None
        t = self.info.tissue
        (sx, sy), (ox, oy) = t.scale_to_level0, t.offset_level0
        qx, qy = math.floor((x0 - ox) / sx), math.floor((y0 - oy) / sy)
        qh, qw = self.qc_levels[0].shape
        if not (0 <= qx < qw and 0 <= qy < qh):
            return None
        with result_reads(self.path):
            return int(np.asarray(self.qc_levels[0][qy, qx]))

    def artefact_at(self, x0: float, y0: float) -> str | None:
        """The name of the artefact at level-0 pixel (x0, y0); None where there is none."""
        value = self.qc_at(x0, y0)
        return None if value is None or value == QC_NONE else QC_NAMES.get(value)

    def thumbnail(self) -> bytes:
        """A small PNG of the slide."""
        out = io.BytesIO()
        with self._slide_reads:
            thumb = self.osr.get_thumbnail((THUMB_SIZE, THUMB_SIZE)).convert("RGB")
        thumb.save(out, "PNG")
        return out.getvalue()

    # -- numbers -------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Classes, colours, areas (mm^2), resolution and slide size, and the artefacts
        present with theirs; computed once."""
        with self._lock:
            if self._stats is None:
                self._stats = self._compute_stats()
            return self._stats

    def _compute_stats(self) -> dict[str, Any]:

        n = max(c.index for c in self.info.classes) + 1
        counts = np.zeros(n, dtype=np.int64)
        band = int(self.labels.chunks[0]) if getattr(self.labels, "chunks", None) else 512
        with result_reads(self.path):
            for top in range(0, self.labels.shape[0], band):
                block = np.asarray(self.labels[top:top + band])
                counts += np.bincount(block.ravel(), minlength=n)[:n]
        mpp_x, mpp_y = self.info.analysis_mpp
        pixel_mm2 = mpp_x * mpp_y / 1e6
        return {
            "name": self.path.name.removesuffix(RESULT_SUFFIX),
            "result": str(self.path),
            "slide": str(self.info.slide.path),
            "width": self.width, "height": self.height,
            "mpp": list(self.info.slide.mpp),
            "map_mpp": list(self.info.analysis_mpp),
            "uncertainty": self.uncertainty_levels is not None,
            "qc": self.qc_levels is not None,
            "classes": [{"index": c.index, "name": c.name, "color": list(c.color[:3]),
                         "area_mm2": float(counts[c.index] * pixel_mm2)}
                        for c in self.info.classes],
            "artefacts": self._artefacts(),
        }

    def _artefacts(self) -> list[dict[str, Any]]:
        """The artefacts the labels hold (none for a result without them), by value: name,
        colour and area (mm^2), from level 0 of the labels, band by band."""
        if self.qc_levels is None:
            return []
        level0 = self.qc_levels[0]
        counts = np.zeros(256, dtype=np.int64)
        band = int(level0.chunks[0]) if getattr(level0, "chunks", None) else 512
        with result_reads(self.path):
            for top in range(0, level0.shape[0], band):
                counts += np.bincount(np.asarray(level0[top:top + band]).ravel(),
                                      minlength=256)[:256]
        mpp_x, mpp_y = self.info.tissue.mpp
        return [{"value": v, "name": name, "color": list(QC_COLOURS[v]),
                 "area_mm2": float(counts[v] * mpp_x * mpp_y / 1e6)}
                for v, name in QC_NAMES.items() if v != QC_NONE and counts[v]]

    def close(self) -> None:
        """Close the slide once the reads in flight have ended; later reads are refused.

        OpenSlide frees a slide's decoders on close, so a read running in another thread
        then would crash the process: a server shut down while a page still loads tiles.
        Closing again does nothing.
        """
        if self._slide_reads.closed:
            return
        if self._slide_reads.close(CLOSE_WAIT):
            self.osr.close()
        else:  # a read still running: leave the handle to the process's exit
            logger.warning("%s: slide reads still running after %.0f s; the slide is left open",
                           self.path, CLOSE_WAIT)


class _SlideReads:
    """Counts the reads of a slide in flight, so that the slide is closed only after them.

    ``with reads:`` around each read; :meth:`close` refuses new reads and waits for the
    running ones.
    """

    def __init__(self) -> None:
        self._idle = threading.Condition()
        self._running = 0
        self._closed = False

    def __enter__(self) -> None:
        with self._idle:
            if self._closed:
                raise _Closing("the viewer is shutting down")
            self._running += 1

    def __exit__(self, *exc: object) -> None:
        with self._idle:
            self._running -= 1
            if not self._running:
                self._idle.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, timeout: float) -> bool:
        """Refuse new reads; True once none runs, False if some still run after ``timeout``."""
        with self._idle:
            self._closed = True
            return self._idle.wait_for(lambda: not self._running, timeout)


def _pyramid(path: Path, group: zarr.Group, level0: zarr.Array[Any] | None,
             level_path: Callable[[int], str], count: int) -> list[zarr.Array[Any]] | None:
    """``level0`` and the levels below it at ``level_path(k)`` in the result ``group`` (as many
    as the map's, as :func:`~wsiseg.result.store.open_result` checked; layout 1 has none
    below), or None where the result has no ``level0``."""
    if level0 is None:
        return None
    levels = [level0]
    if result_layout(group) < 2:
        return levels
    with result_reads(path):
        for k in range(1, count):
            node = group[level_path(k)]
            if not isinstance(node, zarr.Array):  # open_result checked it; changed since
                raise ResultError(f"{path}: {level_path(k)} is not an array; predict the "
                                  "slide again to rebuild the result")
            levels.append(node)
    return levels


def _png(rgba: npt.NDArray[np.uint8]) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(out, "PNG", compress_level=1)
    return out.getvalue()


def _regular_file(slide_path: Path, result: Path) -> None:
    """Raise :class:`SlideError` unless ``slide_path`` is a regular file: opening a FIFO or a
    device could wait forever."""
    try:
        mode = os.stat(slide_path).st_mode
    except OSError as err:
        raise SlideError(f"the slide of {result}, {slide_path}, cannot be read "
                         f"({err.strerror}); put the slide back at that path") from err
    if not stat.S_ISREG(mode):
        raise SlideError(f"the slide of {result}, {slide_path}, is not a regular file; put the "
                         "slide file back at that path (the result names it) to view the result")


def find_results(path: Path) -> dict[str, Path]:
    """The results a path holds: itself, or the ``*.wsiseg.zarr`` in a folder, by name."""
    if path.name.endswith(".zarr") or (path / "zarr.json").exists():
        return {}
    found = folder_results(path)
    if not found:
        raise ResultError(f"{path} holds no *{RESULT_SUFFIX}; give a result or a folder of "
                          "results from wsiseg predict")
    return found


class Viewer:
    """What the server shows: one result, or the results of a folder."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        if not path.exists():
            raise ResultError(f"{path} does not exist; give a result .zarr or a folder of them")
        self.path = path
        found = find_results(path) if path.is_dir() else {}
        if found:
            self.single: ResultView | None = None
            self.results = {name: ResultView(p) for name, p in found.items()}
        else:
            self.single = ResultView(path)
            self.results = {}

    def close(self) -> None:
        for view in ([self.single] if self.single else list(self.results.values())):
            view.close()


_TILE = re.compile(r"^(slide|map|uncertainty|qc)_files/(\d{1,9})/(\d{1,9})_(\d{1,9})\.(jpeg|png)$")
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


class _Closing(Exception):
    """A slide read asked for while the viewer shuts down."""


class _NotFound(Exception):
    """The path names nothing the viewer serves (404)."""


class _BadRequest(Exception):
    """A malformed request (400); the message is the one-line answer."""


class _Refused(Exception):
    """A request the viewer will not answer: who sent it, not what it asks, is wrong."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class _HeadReader(io.RawIOBase):
    """The connection's bytes, read under a deadline for the request line and headers.

    A socket timeout alone bounds each ``recv``, so a client sending a byte now and then would
    hold its thread forever; the deadline bounds the whole head of a request instead.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request did not arrive in time")
            self._sock.settimeout(min(left, REQUEST_TIMEOUT))
        try:
            return self._sock.recv_into(buffer)
        finally:
            self._sock.settimeout(REQUEST_TIMEOUT)  # what writing the answer may take


class _Handler(BaseHTTPRequestHandler):
    viewer: Viewer  # set on the subclass the server makes
    server: ViewServer
    server_version = "wsiseg-view"
    protocol_version = "HTTP/1.1"  # keep-alive: every answer has its Content-Length
    disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(REQUEST_TIMEOUT)
        self.rfile.close()  # replaced by a reader under a deadline
        self._reader = _HeadReader(self.connection)
        self.rfile = io.BufferedReader(self._reader)
        self._requests = 0

    def handle_one_request(self) -> None:
        # The first request gets REQUEST_TIMEOUT to arrive; a kept-alive connection waits
        # KEEPALIVE_TIMEOUT for the next one, then is closed.
        wait = REQUEST_TIMEOUT if self._requests == 0 else KEEPALIVE_TIMEOUT
        self._requests += 1
        self._reader.deadline = time.monotonic() + wait
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self._reader.deadline = None

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._cookie: str | None = None
        target, _, query_string = self.path.partition("?")
        try:
            self._admit(query_string)
            query = parse_qs(query_string)
            self._route(_segments(target), query)
        except _Refused as err:
            self._send(err.status, f"{err}\n".encode(), "text/plain; charset=utf-8")
        except _BadRequest as err:
            self._send(HTTPStatus.BAD_REQUEST, f"{err}\n".encode(), "text/plain; charset=utf-8")
        except (_NotFound, KeyError):
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except _Closing as err:
            self.close_connection = True
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, f"{err}\n".encode(),
                       "text/plain; charset=utf-8")
        except WsisegError as err:  # e.g. a chunk of the result damaged since it was opened
            logger.warning("%s", err)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, f"{err}\n".encode(),
                       "text/plain; charset=utf-8")
        except Exception as err:  # one line in the log, never a traceback on stderr
            logger.error("wsiseg view: %s failed: %s: %s", target[:200], type(err).__name__, err)
            logger.debug("the failure of %s", target[:200], exc_info=True)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n",
                       "text/plain; charset=utf-8")

    # -- who may ask ---------------------------------------------------------------------------
    def _admit(self, query_string: str) -> None:
        """Raise :class:`_Refused` unless the Host header names this server (a web page
        rebound to this address by DNS sends its own name) and, on a network address, the
        request bears the token, in the query or in the cookie an earlier answer set."""
        server = self.server
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1:
            raise _Refused(HTTPStatus.BAD_REQUEST, "a request needs one Host header")
        if server.token is None:
            if not server.host_allowed(hosts[0]):
                raise _Refused(HTTPStatus.FORBIDDEN, "this viewer answers requests to "
                               f"{server.hosts_text()} only")
            return
        given = parse_qs(query_string).get("token")
        if given and _same(given[0], server.token):
            self._cookie = (f"{server.cookie_name}={server.token}; Path=/; HttpOnly; "
                            "SameSite=Strict")
            return
        cookie = _cookie(self.headers.get_all("Cookie") or [], server.cookie_name)
        if cookie is not None and _same(cookie, server.token):
            return
        raise _Refused(HTTPStatus.FORBIDDEN, "this viewer needs its token: open the URL "
                       "with ?token= that wsiseg view printed")

    # -- what is asked -------------------------------------------------------------------------
    def _route(self, parts: list[str], query: dict[str, list[str]]) -> None:
        viewer = self.viewer
        if parts[0] == "static" and len(parts) > 1:
            if not all(_NAME.match(p) for p in parts[1:]):
                raise _NotFound
            file = STATIC_DIR.joinpath(*parts[1:])
            if not file.is_file():  # regular files only
                raise _NotFound
            self._send(HTTPStatus.OK, file.read_bytes(),
                       _CONTENT_TYPES.get(file.suffix, "application/octet-stream"), cache=True)
            return
        if viewer.single is not None:
            self._result(viewer.single, parts, query)
            return
        if parts == [""]:
            self._send(HTTPStatus.OK, index_page(viewer).encode(), "text/html; charset=utf-8")
            return
        if len(parts) == 2 and parts[0] == "thumb" and parts[1].endswith(".png"):
            view = viewer.results[parts[1][:-len(".png")]]
            self._send(HTTPStatus.OK, _thumb(view), "image/png", cache=True)
            return
        if len(parts) > 2 and parts[0] == "r":
            self._result(viewer.results[parts[1]], parts[2:], query)
            return
        raise _NotFound

    def _result(self, view: ResultView, parts: list[str], query: dict[str, list[str]]) -> None:
        rest = "/".join(parts)
        if rest == "":
            self._send(HTTPStatus.OK, (STATIC_DIR / "viewer.html").read_bytes(),
                       "text/html; charset=utf-8")
        elif rest == "info.json":
            self._send(HTTPStatus.OK, json.dumps(view.stats()).encode(), "application/json")
        elif rest == "class":
            x0, y0 = _coordinate(query, "x"), _coordinate(query, "y")
            index = view.class_at(x0, y0)
            name = next((c.name for c in view.info.classes if c.index == index), None)
            answer = {"index": index, "name": name, "confidence": view.confidence_at(x0, y0),
                      "artefact": view.artefact_at(x0, y0)}
            self._send(HTTPStatus.OK, json.dumps(answer).encode(), "application/json")
        elif (rest == "uncertainty.dzi" and view.uncertainty_levels is None
              or rest == "qc.dzi" and view.qc_levels is None):
            raise _NotFound
        elif rest in ("slide.dzi", "map.dzi", "uncertainty.dzi", "qc.dzi"):
            fmt = "jpeg" if rest == "slide.dzi" else "png"
            self._send(HTTPStatus.OK, view.dzi(fmt).encode(), "application/xml")
        else:
            match = _TILE.match(rest)
            if not match:
                raise _NotFound
            kind, level, col, row, fmt = match.groups()
            if (kind == "slide") != (fmt == "jpeg"):
                raise _NotFound
            tile = {"slide": view.slide_tile, "map": view.map_tile,
                    "uncertainty": view.uncertainty_tile, "qc": view.qc_tile}[kind]
            body = tile(int(level), int(col), int(row))
            self._send(HTTPStatus.OK, body, "image/jpeg" if fmt == "jpeg" else "image/png",
                       cache=True)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str,
              cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")  # the token stays on this server
        if self._cookie is not None:
            self.send_header("Set-Cookie", self._cookie)
        self.end_headers()
        self.wfile.write(body)


def _segments(target: str) -> list[str]:
    """The request path's segments, each percent-decoded once; :class:`_NotFound` for one
    that could climb out of where it is looked up (``.``, ``..``, empty, or holding ``/``)."""
    raw = target.split("/")
    if raw[0] != "" or len(raw) < 2:  # not origin-form, e.g. "http://host/x" or "*"
        raise _NotFound
    try:
        parts = [unquote(p, errors="strict") for p in raw[1:]]
    except UnicodeDecodeError as err:
        raise _NotFound from err
    for i, part in enumerate(parts):
        if part in (".", "..") or "/" in part or "\0" in part or (
                part == "" and i != len(parts) - 1):
            raise _NotFound
    return parts


def _coordinate(query: dict[str, list[str]], key: str) -> float:
    """The finite number ``key`` of the query; :class:`_BadRequest` otherwise."""
    values = query.get(key)
    if not values:
        raise _BadRequest(f"{key} is missing; give ?x=&y= in level-0 pixels")
    try:
        value = float(values[0])
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise _BadRequest(f"{key} must be a finite number of level-0 pixels, not "
                          f"{values[0][:40]!r}")
    return value


def _same(given: str, token: str) -> bool:
    """Whether ``given`` is the token, in a time that does not tell how much of it matched."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode())


def _cookie(headers: list[str], name: str) -> str | None:
    """The value of cookie ``name`` in the Cookie headers, if any."""
    for header in headers:
        for pair in header.split(";"):
            key, sep, value = pair.strip().partition("=")
            if sep and key == name:
                return value.strip('"')
    return None


class ViewServer(ThreadingHTTPServer):
    """The viewer's HTTP server: a real listen backlog, a cap on connections served at once,
    and who may ask (:meth:`host_allowed`, :attr:`token`)."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, host: str, port: int, handler: type[_Handler]) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), handler)
        self.bound_host = host
        self.port: int = self.server_address[1]
        #: None on a loopback address, where only Host names of this machine are answered;
        #: on a network address, the secret every request must bear.
        self.token: str | None = None if _is_loopback(host) else secrets.token_urlsafe(32)
        self.cookie_name = f"wsiseg-view-{self.port}"  # one per viewer on a machine
        names = {*_LOOPBACK_NAMES, _bracketed(host.lower())}
        self._hosts = frozenset(names)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def host_allowed(self, value: str) -> bool:
        """Whether a Host header names this server: a loopback name or the ``host`` given,
        with the served port or none."""
        value = value.strip().lower()
        if value.startswith("["):
            name, _, rest = value.partition("]")
            name += "]"
            port = rest[1:] if rest.startswith(":") else None
            if rest and port is None:
                return False
        else:
            name, sep, port_text = value.partition(":")
            port = port_text if sep else None
        return name in self._hosts and (port is None or port == str(self.port))

    def hosts_text(self) -> str:
        return ", ".join(sorted(self._hosts))

    # -- connections ---------------------------------------------------------------------------
    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            _turn_away(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: the slot is free again
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-request; no traceback on stderr.
        logger.debug("connection from %s failed: %s", client_address, sys.exc_info()[1])


_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 17"
         b"\r\nRetry-After: 1\r\nConnection: close\r\n\r\nviewer too busy\r\n")


def _turn_away(request: socket.socket) -> None:
    """Answer 503 without waiting on the client, from the thread that accepts connections."""
    try:
        request.setblocking(False)
        request.send(_BUSY)
    except OSError:
        pass


def _is_loopback(host: str) -> bool:
    """Whether ``host`` listens on this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: whatever it resolves to, treat it as a network address


def _bracketed(host: str) -> str:
    """``host`` as written in a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@functools.lru_cache(maxsize=256)
def _thumb(view: ResultView) -> bytes:
    return view.thumbnail()


@functools.lru_cache(maxsize=16)
def _cohort_rows(viewer: Viewer) -> list[dict[str, Any]]:
    # The results are fixed when the viewer starts, so their reports are made once.
    return cohort_rows(viewer.path, {n: v.path for n, v in viewer.results.items()})


def index_page(viewer: Viewer) -> str:
    """The index of a folder's results: the cohort table (:func:`~wsiseg.export.cohort.
    cohort_page`) with each result's thumbnail and name linking to its viewer."""
    # A name may hold spaces, "#", "?", "..", ...: percent-encoded, looked up decoded.
    links = {name: f"/r/{quote(name, safe='')}/" for name in viewer.results}
    thumbs = {name: f"/thumb/{quote(name, safe='')}.png" for name in viewer.results}
    return cohort_page(_cohort_rows(viewer), str(viewer.path), links=links, thumbnails=thumbs)


def make_server(path: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8000
                ) -> tuple[ViewServer, Viewer]:
    """A server (not yet serving) of the result or folder at ``path``; port 0 picks a free
    port. On a loopback ``host`` it answers requests naming this machine only; on any other
    (a network) it also wants its token, which :func:`server_url` carries. Raises
    :class:`ResultError` or :class:`SlideError` in one line."""
    viewer = Viewer(path)
    handler = type("Handler", (_Handler,), {"viewer": viewer})
    try:
        server = ViewServer(host, port, handler)
    except BaseException:
        viewer.close()
        raise
    return server, viewer


def server_url(server: ViewServer) -> str:
    """The URL the server answers at, with its token when it has one."""
    url = f"http://{_bracketed(server.bound_host)}:{server.port}/"
    return url if server.token is None else f"{url}?token={server.token}"
