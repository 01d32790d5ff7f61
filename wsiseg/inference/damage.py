"""Where a slide could not be decoded, in the frames a result records it: level-0 boxes for
the attributes and map pixels for the ``damaged`` mask. Pure, but for reading the regions a
:class:`~wsiseg.slide.reader.Slide` found."""

from __future__ import annotations

import math

from wsiseg.result.info import DamagedArea
from wsiseg.slide.geometry import Geometry, Level0Box, MapBox
from wsiseg.slide.reader import DamagedRegion, Slide


def damaged_areas(regions: list[DamagedRegion]) -> tuple[DamagedArea, ...]:
    """The damaged tiles as they are recorded in a result: tiles side by side in one row of a
    level joined into one box, so a badly damaged slide keeps short attributes."""
    out: list[DamagedArea] = []
    for r in regions:  # sorted by level, row, column
        x, y, w, h = r.box_level0
        if out:
            last = out[-1]
            lx, ly, lw, lh = last.box_level0
            if last.level == r.level and (ly, lh) == (y, h) and lx + lw == x:
                out[-1] = DamagedArea(r.level, Level0Box((lx, ly, lw + w, lh)), last.reason)
                continue
        out.append(DamagedArea(r.level, Level0Box((x, y, w, h)), r.reason))
    return tuple(out)


def map_boxes(slide: Slide, geometry: Geometry) -> list[MapBox]:
    """The map boxes of every damaged region found (at any level) that lie on the map."""
    boxes = (map_box(geometry, r) for r in slide.damaged_regions())
    return [box for box in boxes if box is not None]


def map_box(geometry: Geometry, region: DamagedRegion | DamagedArea) -> MapBox | None:
    """The map pixels ``(x, y, width, height)`` whose area overlaps ``region``; None when it
    lies outside the map. Pure."""
    if isinstance(region, DamagedRegion) and region.level == geometry.level:
        # In read-level pixels, as they were read: exact, whatever the rounding to level 0.
        bx, by, bw, bh = region.box
        (lox, loy), (rx, ry) = geometry.level_origin, geometry.resample
        if geometry.is_direct:  # the reader rounds the origin (RegionReader)
            lox, loy = round(lox), round(loy)
    else:
        bx, by, bw, bh = region.box_level0
        (lox, loy), (rx, ry) = geometry.offset_level0, geometry.scale
    x0 = max(0, math.floor((bx - lox) / rx))
    y0 = max(0, math.floor((by - loy) / ry))
    x1 = min(geometry.width, math.ceil((bx + bw - lox) / rx))
    y1 = min(geometry.height, math.ceil((by + bh - loy) / ry))
    if x1 <= x0 or y1 <= y0:
        return None
    return MapBox((x0, y0, x1 - x0, y1 - y0))
