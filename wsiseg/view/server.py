"""A local web viewer of results: the class map over its slide, in the browser.

The server is the standard library's :class:`http.server.ThreadingHTTPServer`, so viewing adds
no runtime dependency; it serves one user's browser on the local machine (or a few, with
``host``), which needs no asynchronous framework. The page uses OpenSeadragon (shipped in
``static/``) to show two Deep Zoom images of the same size: ``/slide`` (JPEG tiles of the slide,
from OpenSlide's :class:`~openslide.deepzoom.DeepZoomGenerator`) and ``/map`` (PNG tiles of the
label map in the classes' colours, background transparent, placed in the slide's level-0 frame),
so the overlay lines up with the slide at every zoom.

Paths served: ``/`` (a result's viewer, or a folder's index), ``/static/NAME``, ``/info.json``,
``/class?x=&y=`` and, per result, ``/slide.dzi``, ``/slide_files/L/C_R.jpeg``, ``/map.dzi``,
``/map_files/L/C_R.png``; in a folder's index each result's paths are under ``/r/NAME/`` and its
thumbnail is ``/thumb/NAME.png``. Anything else is 404.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import os
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import numpy.typing as npt
import zarr

from wsiseg.errors import ResultError, SlideError, WsisegError
from wsiseg.naming import RESULT_SUFFIX
from wsiseg.result.reading import result_reads
from wsiseg.result.store import label_pyramid, open_result
from wsiseg.slide.reader import open_slide

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
TILE_SIZE = 254
OVERLAP = 1
TILE_CACHE = 4096  # tiles per image kept in memory
THUMB_SIZE = 256

_CONTENT_TYPES = {".js": "application/javascript", ".css": "text/css", ".html": "text/html",
                  ".png": "image/png", ".txt": "text/plain; charset=utf-8"}
_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


class ResultView:
    """One result and its slide, as Deep Zoom images and JSON. Thread-safe."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import openslide
        from openslide.deepzoom import DeepZoomGenerator

        self.path = Path(path)
        with result_reads(self.path):
            labels, self.info = open_result(self.path)
        group = zarr.open_group(str(self.path), mode="r")
        self.levels = label_pyramid(group)
        self.labels = labels
        slide_path = self.info.slide.path
        if not slide_path.exists():
            raise SlideError(f"the slide of {self.path}, {slide_path}, is not there; put the "
                             "slide back at that path (the result names it) to view the result")
        with open_slide(slide_path) as slide:  # says in one line why a slide cannot be read
            slide_file = slide.file
        self.osr = openslide.OpenSlide(str(slide_file))
        self.dz = DeepZoomGenerator(self.osr, tile_size=TILE_SIZE, overlap=OVERLAP,
                                    limit_bounds=False)
        self.width, self.height = self.osr.dimensions
        self._lock = threading.Lock()
        self._stats: dict[str, Any] | None = None
        self.slide_tile = functools.lru_cache(maxsize=TILE_CACHE)(self._slide_tile)
        self.map_tile = functools.lru_cache(maxsize=TILE_CACHE)(self._map_tile)
        # A colour per class with alpha; class 0 (background) stays transparent.
        lut = np.zeros((256, 4), dtype=np.uint8)
        for c in self.info.classes:
            if c.index > 0:
                lut[c.index] = (*c.color[:3], 255)
        self._lut = lut

    # -- Deep Zoom geometry (the same for slide and map) --------------------------------------
    @property
    def max_level(self) -> int:
        return self.dz.level_count - 1

    def dzi(self, fmt: str) -> str:
        """The Deep Zoom descriptor of the slide (``jpeg``) or map (``png``)."""
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
        image = self.dz.get_tile(level, (col, row)).convert("RGB")
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        return out.getvalue()

    def _map_tile(self, level: int, col: int, row: int) -> bytes:
        from PIL import Image

        x, y, w, h, down = self._tile_box(level, col, row)
        rgba = self.map_rgba(x, y, w, h, down)
        out = io.BytesIO()
        Image.fromarray(rgba, "RGBA").save(out, "PNG", compress_level=1)
        return out.getvalue()

    def map_rgba(self, x: int, y: int, w: int, h: int, down: float) -> npt.NDArray[np.uint8]:
        """(h, w, 4) colours of the map over level pixels ``[x, x+w) x [y, y+h)`` of a Deep
        Zoom level ``down`` times smaller than level 0, from the pyramid level that matches."""

        sx, sy = self.info.scale_to_level0
        ox, oy = self.info.offset_level0
        # The coarsest map level whose pixels are still no larger than a tile pixel.
        k = math.floor(math.log2(max(down / max(sx, sy), 1.0)))
        k = min(k, len(self.levels) - 1)
        array = self.levels[k]
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
        rgba[np.ix_(iny, inx)] = self._lut[picked]
        return rgba

    def class_at(self, x0: float, y0: float) -> int | None:
        """The class index at level-0 pixel (x0, y0); None outside the map."""

        sx, sy = self.info.scale_to_level0
        ox, oy = self.info.offset_level0
        mx, my = math.floor((x0 - ox) / sx), math.floor((y0 - oy) / sy)
        mh, mw = self.labels.shape
        if not (0 <= mx < mw and 0 <= my < mh):
            return None
        with result_reads(self.path):
            return int(np.asarray(self.labels[my, mx]))

    def thumbnail(self) -> bytes:
        """A small PNG of the slide."""
        out = io.BytesIO()
        self.osr.get_thumbnail((THUMB_SIZE, THUMB_SIZE)).convert("RGB").save(out, "PNG")
        return out.getvalue()

    # -- numbers -------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Classes, colours, areas (mm^2), resolution and slide size; computed once."""
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
            "classes": [{"index": c.index, "name": c.name, "color": list(c.color[:3]),
                         "area_mm2": float(counts[c.index] * pixel_mm2)}
                        for c in self.info.classes],
        }

    def close(self) -> None:
        self.osr.close()


def find_results(path: Path) -> dict[str, Path]:
    """The results a path holds: itself, or the ``*.wsiseg.zarr`` in a folder, by name."""
    if path.name.endswith(".zarr") or (path / "zarr.json").exists():
        return {}
    found = {p.name.removesuffix(RESULT_SUFFIX): p for p in sorted(path.glob("*" + RESULT_SUFFIX))}
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


_TILE = re.compile(r"^(slide|map)_files/(\d+)/(\d+)_(\d+)\.(jpeg|png)$")


class _Handler(BaseHTTPRequestHandler):
    viewer: Viewer  # set on the subclass the server makes
    server_version = "wsiseg-view"
    protocol_version = "HTTP/1.1"  # keep-alive: every answer has its Content-Length
    disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        try:
            self._route(url.path, parse_qs(url.query))
        except (KeyError, ValueError):
            self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            pass
        except WsisegError as err:  # e.g. a chunk of the result damaged since it was opened
            logger.warning("%s", err)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, str(err).encode(), "text/plain")

    def _route(self, path: str, query: dict[str, list[str]]) -> None:
        viewer = self.viewer
        if ".." in path or "//" in path or "\\" in path:
            raise KeyError(path)
        if path.startswith("/static/"):
            name = path[len("/static/"):]
            parts = name.split("/")
            if not all(_NAME.match(p) for p in parts):
                raise KeyError(path)
            file = STATIC_DIR.joinpath(*parts)
            if not file.is_file():
                raise KeyError(path)
            self._send(HTTPStatus.OK, file.read_bytes(),
                       _CONTENT_TYPES.get(file.suffix, "application/octet-stream"), cache=True)
            return
        if viewer.single is not None:
            self._result(viewer.single, path.lstrip("/"), query)
            return
        if path == "/":
            self._send(HTTPStatus.OK, index_page(viewer).encode(), "text/html; charset=utf-8")
            return
        if path.startswith("/thumb/") and path.endswith(".png"):
            view = viewer.results[path[len("/thumb/"):-len(".png")]]
            self._send(HTTPStatus.OK, _thumb(view), "image/png", cache=True)
            return
        if path.startswith("/r/"):
            name, _, rest = path[len("/r/"):].partition("/")
            self._result(viewer.results[name], rest, query)
            return
        raise KeyError(path)

    def _result(self, view: ResultView, rest: str, query: dict[str, list[str]]) -> None:
        if rest == "":
            self._send(HTTPStatus.OK, (STATIC_DIR / "viewer.html").read_bytes(),
                       "text/html; charset=utf-8")
        elif rest == "info.json":
            self._send(HTTPStatus.OK, json.dumps(view.stats()).encode(), "application/json")
        elif rest == "class":
            x0, y0 = float(query["x"][0]), float(query["y"][0])
            index = view.class_at(x0, y0)
            name = next((c.name for c in view.info.classes if c.index == index), None)
            self._send(HTTPStatus.OK, json.dumps({"index": index, "name": name}).encode(),
                       "application/json")
        elif rest in ("slide.dzi", "map.dzi"):
            fmt = "jpeg" if rest == "slide.dzi" else "png"
            self._send(HTTPStatus.OK, view.dzi(fmt).encode(), "application/xml")
        else:
            match = _TILE.match(rest)
            if not match:
                raise KeyError(rest)
            kind, level, col, row, fmt = match.groups()
            if (kind == "slide") != (fmt == "jpeg"):
                raise KeyError(rest)
            tile = view.slide_tile if kind == "slide" else view.map_tile
            body = tile(int(level), int(col), int(row))
            self._send(HTTPStatus.OK, body, "image/jpeg" if fmt == "jpeg" else "image/png",
                       cache=True)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str,
              cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-cache")
        self.end_headers()
        self.wfile.write(body)


@functools.lru_cache(maxsize=256)
def _thumb(view: ResultView) -> bytes:
    return view.thumbnail()


def index_page(viewer: Viewer) -> str:
    """The HTML index of a folder's results: thumbnail, per-class areas, link to each."""
    from html import escape

    rows = []
    for name, view in viewer.results.items():
        stats = view.stats()
        areas = "".join(
            f'<li><span class="sw" style="background:rgb{tuple(c["color"])}"></span>'
            f'{escape(c["name"])}: {c["area_mm2"]:.3f} mm&sup2;</li>'
            for c in stats["classes"] if c["index"] > 0)
        rows.append(f'<tr><td><a href="/r/{escape(name)}/"><img src="/thumb/{escape(name)}.png" '
                    f'alt=""></a></td><td><a href="/r/{escape(name)}/">{escape(name)}</a>'
                    f'<ul>{areas}</ul></td></tr>')
    return (STATIC_DIR / "index.html").read_text().replace("{{title}}", escape(str(viewer.path))
                                                           ).replace("{{rows}}", "".join(rows))


def make_server(path: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8000
                ) -> tuple[ThreadingHTTPServer, Viewer]:
    """A server (not yet serving) of the result or folder at ``path``; port 0 picks a free
    port. Raises :class:`ResultError` or :class:`SlideError` in one line."""
    viewer = Viewer(path)
    handler = type("Handler", (_Handler,), {"viewer": viewer})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server, viewer


def server_url(server: ThreadingHTTPServer) -> str:
    """The URL the server answers at."""
    host, port = server.server_address[:2]
    if isinstance(host, bytes | bytearray):  # socketserver allows it; make_server gives a str
        host = host.decode()
    return f"http://{host}:{port}/"
