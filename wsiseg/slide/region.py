"""Reading rectangles of an output grid (analysis or tissue-mask pixels) from a slide."""

from __future__ import annotations

import numpy as np

from wsiseg.slide.geometry import Geometry
from wsiseg.slide.resample import area_weights, resample_area
from wsiseg.slide.reader import GLASS, Slide


class RegionReader:
    """Reads regions of ``geometry``'s grid from ``slide``.

    Coordinates are output pixels; anything outside ``[0, width) x [0, height)`` is glass
    (white), which is how the grid's padding is filled.
    """

    def __init__(self, slide: Slide, geometry: Geometry) -> None:
        self.slide = slide
        self.geometry = geometry
        ox, oy = geometry.level_origin
        self._direct_origin = (int(round(ox)), int(round(oy)))
        self.pixels_decoded = 0  # read-level pixels decoded, for the read-once accounting

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
        self, x: int, y: int, width: int, height: int, out: np.ndarray | None = None
    ) -> np.ndarray:
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

    def _read_inside(self, x: int, y: int, width: int, height: int, out: np.ndarray) -> None:
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
        out[...] = resample_area(raw, wy, wx)
