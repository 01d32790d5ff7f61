"""Resolution arithmetic: from a slide's pyramid to an output pixel grid. Pure functions.

Three frames are involved (see the README): level 0 (the slide's full resolution), the read
level (the pyramid level pixels are decoded from) and an output grid (the analysis grid of the
network, or the coarser grid of the tissue mask). An output pixel ``(x, y)`` covers level-0
``[ox + x * sx, ox + (x + 1) * sx)`` horizontally, and likewise vertically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NewType

from wsiseg.errors import ResolutionError

#: Relative tolerance when matching a pyramid level to a resolution: a level within 2% of the
#: requested pixel size is read as it is rather than resampled by a factor such as 1.003.
LEVEL_TOLERANCE = 0.02

# Plausible sizes. A value outside these is a typo or a broken file, not a slide or a model:
# refused in one line before it costs minutes or all the memory. Scanners give 0.1-1 um/px
# (x100 oil to x10), overview cameras up to about 50; analyses run at 0.25-4 um/px.
#: Level-0 resolution a slide may declare, um/px (inclusive).
SLIDE_MPP_RANGE = (0.01, 100.0)
#: Analysis resolution (a model card's, or --target-mpp), um/px (inclusive).
ANALYSIS_MPP_RANGE = (0.05, 100.0)
#: Window size in analysis pixels (inclusive): the networks' deepest stride is 32, and a
#: batch of 4 windows of 4096 px already needs gigabytes of activations.
PATCH_SIZE_RANGE = (16, 4096)
#: Longest side of an analysis map, pixels: a 75 mm glass slide at 0.05 um/px is 1.5 million.
MAX_MAP_SIDE = 2_000_000

# Boxes are ``(x, y, width, height)``; one type per frame so that a box of one frame cannot be
# passed where another is meant. NewType keeps them plain tuples at run time.

#: A box in level-0 pixels of the slide (the slide's full-resolution frame).
Level0Box = NewType("Level0Box", tuple[int, int, int, int])
#: A box in the own pixels of one pyramid level (the level it is read from).
LevelBox = NewType("LevelBox", tuple[int, int, int, int])
#: A box in pixels of the analysis grid, the frame of the result's map.
MapBox = NewType("MapBox", tuple[int, int, int, int])


@dataclass(frozen=True)
class Geometry:
    """Where an output grid lies on a slide and how it is read.

    ``scale`` is level-0 pixels per output pixel (per axis), ``offset_level0`` the level-0
    position of output pixel (0, 0)'s corner, ``resample`` the read-level pixels per output
    pixel (1.0: the level is read as it is; above 1: area-averaged down), ``mpp`` the resulting
    output resolution in um/px.
    """

    width: int
    height: int
    level: int
    level_downsample: float
    scale: tuple[float, float]
    offset_level0: tuple[int, int]
    resample: tuple[float, float]
    mpp: tuple[float, float]

    @property
    def is_direct(self) -> bool:
        """True when output pixels are read-level pixels (no resampling)."""
        return self.resample == (1.0, 1.0)

    @property
    def level_origin(self) -> tuple[float, float]:
        """Position of output pixel (0, 0)'s corner in read-level pixels."""
        d = self.level_downsample
        return (self.offset_level0[0] / d, self.offset_level0[1] / d)

    def coarser(self, factor: int, level_downsamples: tuple[float, ...]) -> Geometry:
        """The grid whose pixels are ``factor x factor`` blocks of this one, same origin."""
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        scale = (self.scale[0] * factor, self.scale[1] * factor)
        level, d, resample, scale = _choose_level(level_downsamples, scale)
        return Geometry(
            width=math.ceil(self.width / factor),
            height=math.ceil(self.height / factor),
            level=level,
            level_downsample=d,
            scale=scale,
            offset_level0=self.offset_level0,
            resample=resample,
            mpp=(self.mpp[0] * factor, self.mpp[1] * factor),
        )


def _choose_level(
    level_downsamples: tuple[float, ...], scale: tuple[float, float]
) -> tuple[int, float, tuple[float, float], tuple[float, float]]:
    """Pick the coarsest level at least as fine as ``scale``; return level, d, resample, scale.

    When the level matches ``scale`` within :data:`LEVEL_TOLERANCE` it is read directly and the
    returned scale is the level's own downsample (so coordinates stay exact).
    """
    finest = min(scale)
    tol = 1 + LEVEL_TOLERANCE
    candidates = [(d, i) for i, d in enumerate(level_downsamples) if d <= finest * tol]
    d, level = max(candidates)  # level 0 (d = 1) always qualifies since finest >= 1 / tol
    if all(abs(s / d - 1) <= LEVEL_TOLERANCE for s in scale):
        return level, d, (1.0, 1.0), (d, d)
    return level, d, (scale[0] / d, scale[1] / d), scale


def plan_geometry(
    level_downsamples: tuple[float, ...],
    bounds: Level0Box,
    slide_mpp: tuple[float, float],
    target_mpp: float,
    source: str = "slide",
) -> Geometry:
    """The analysis grid of ``target_mpp`` um/px over the slide's ``bounds`` (x, y, w, h).

    Raises :class:`ResolutionError` when the slide is coarser than ``target_mpp``: wsiseg never
    upsamples silently.
    """
    if not target_mpp > 0:
        raise ResolutionError(f"target resolution must be positive, got {target_mpp} um/px")
    low, high = ANALYSIS_MPP_RANGE
    if not low <= target_mpp <= high:
        raise ResolutionError(
            f"analysis resolution {target_mpp:g} um/px is implausible (sensible: {low:g}-"
            f"{high:g} um/px); check the model card's mpp or --target-mpp")
    check_slide_mpp(slide_mpp, source)  # an implausible resolution is the likelier mistake
    scale = (target_mpp / slide_mpp[0], target_mpp / slide_mpp[1])
    if min(scale) < 1 / (1 + LEVEL_TOLERANCE):
        raise ResolutionError(
            f"{source} is scanned at {max(slide_mpp):g} um/px, coarser than the analysis "
            f"resolution {target_mpp:g} um/px; use a finer scan, or pass --slide-mpp if the "
            "slide's metadata is wrong"
        )
    level, d, resample, scale = _choose_level(level_downsamples, scale)
    bx, by, bw, bh = bounds
    width = max(1, math.ceil(bw / scale[0] - 1e-9))
    height = max(1, math.ceil(bh / scale[1] - 1e-9))
    if max(width, height) > MAX_MAP_SIDE:
        raise ResolutionError(
            f"{source} would need a {width} x {height} map at {target_mpp:g} um/px "
            f"({bw * slide_mpp[0] / 1e3:.4g} x {bh * slide_mpp[1] / 1e3:.4g} mm at its "
            f"{slide_mpp[0]:g} um/px), beyond the {MAX_MAP_SIDE} px a glass slide needs; its "
            "size or resolution metadata is wrong: pass --slide-mpp with the true resolution")
    return Geometry(
        width=width,
        height=height,
        level=level,
        level_downsample=d,
        scale=scale,
        offset_level0=(int(bx), int(by)),
        resample=resample,
        mpp=(slide_mpp[0] * scale[0], slide_mpp[1] * scale[1]),
    )


def check_slide_mpp(slide_mpp: tuple[float, float], source: str = "slide") -> None:
    """Refuse a level-0 resolution outside :data:`SLIDE_MPP_RANGE`, in one line."""
    low, high = SLIDE_MPP_RANGE
    for mpp in slide_mpp:
        if not low <= mpp <= high:  # NaN too
            raise ResolutionError(
                f"{source} has a resolution of {mpp:g} um/px, which no scanner gives "
                f"(sensible: {low:g}-{high:g} um/px); pass --slide-mpp with the true "
                "resolution (0.25 at x40, 0.5 at x20)")


def overview_geometry(
    level_downsamples: tuple[float, ...], dimensions: tuple[int, int], max_size: int
) -> Geometry:
    """A grid over the whole level-0 frame whose longer side is about ``max_size`` pixels.

    For thumbnails: read from the coarsest level fine enough (a level within
    :data:`LEVEL_TOLERANCE` of the size is read as it is). Pixel ``(x, y)`` covers level-0
    ``[x * sx, (x + 1) * sx)`` (likewise in y) with ``(sx, sy)`` the grid's ``scale``, about
    the level-0 size over the grid's. ``mpp`` is NaN: the slide's resolution is not needed.
    """
    if max_size < 1:
        raise ValueError(f"thumbnail size must be at least 1 pixel, got {max_size}")
    w0, h0 = dimensions
    f = max(1.0, max(w0, h0) / max_size)
    width, height = max(1, round(w0 / f)), max(1, round(h0 / f))
    level, d, resample, scale = _choose_level(level_downsamples, (w0 / width, h0 / height))
    if resample == (1.0, 1.0):  # a level of this size, read as it is
        width, height = math.ceil(w0 / d - 1e-9), math.ceil(h0 / d - 1e-9)
    return Geometry(
        width=width,
        height=height,
        level=level,
        level_downsample=d,
        scale=scale,
        offset_level0=(0, 0),
        resample=resample,
        mpp=(math.nan, math.nan),
    )
