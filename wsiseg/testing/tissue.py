"""Synthetic H&E tissue: smooth random fields, the painter and exact area averaging.

Everything here is a function of its arguments and a seed: any region of a slide, painted at
any time and in any order, gets the same pixels, so large slides can be painted tile by tile.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from wsiseg.slide.tissue import drop_small_objects

# Glass and the two stains, RGB on 0..255.
GLASS_RGB = (240.0, 240.0, 240.0)
EOSIN_RGB = (233.0, 148.0, 192.0)
EOSIN_PALE_RGB = (243.0, 190.0, 220.0)
HAEMATOXYLIN_RGB = (92.0, 58.0, 148.0)


# -- resampling ---------------------------------------------------------------------------------
# -- smooth random fields -----------------------------------------------------------------------
def _bspline(u: npt.NDArray[np.float64]
             ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.floating[Any]]]:
    """Cubic B-spline lattice index and the 4 weights (for indices i-1..i+2) at positions u."""
    i = np.floor(u)
    t = (u - i).astype(np.float32)
    t2, t3 = t * t, t * t * t
    w = np.stack([
        (1 - t) ** 3 / 6,
        (3 * t3 - 6 * t2 + 4) / 6,
        (-3 * t3 + 3 * t2 + 3 * t + 1) / 6,
        t3 / 6,
    ])
    # Normalise to unit variance: a B-spline of white noise is less variable between lattice
    # points than on them, which would show the lattice as a faint grid.
    w /= np.sqrt((w * w).sum(axis=0))
    return i.astype(np.int64), w


def _spline_matrix(index: npt.NDArray[np.int64], weights: npt.NDArray[np.floating[Any]], n: int
                   ) -> npt.NDArray[np.float32]:
    """(len(index), n) float32 matrix with ``weights[k]`` at column ``index - 1 + k``."""
    m = np.zeros((len(index), n), dtype=np.float32)
    rows = np.arange(len(index))
    for k in range(4):
        m[rows, index - 1 + k] = weights[k]
    return m


class _LatticeNoise:
    """A smooth unit-variance random field over a ``width x height`` level-0 image.

    A cubic B-spline through normal random values on a lattice of ``cell_x x cell_y`` pixels.
    Each lattice row comes from its own seeded generator, so any region, sampled at any
    resolution, in any order, sees the same field: tiles never show seams.
    """

    def __init__(self, seed: int, tag: int, cell_x: float, cell_y: float, width: int,
                 height: int) -> None:
        self.seed, self.tag = seed, tag
        self.cell_x, self.cell_y = float(cell_x), float(cell_y)
        # Lattice columns -2 .. ceil(width / cell_x) + 5 (points just past the edge need
        # their 4 neighbours too), stored from index 0.
        self.ncols = math.ceil(width / self.cell_x) + 8
        self._rows: dict[int, npt.NDArray[np.float32]] = {}

    def _row(self, j: int) -> npt.NDArray[np.float32]:
        row = self._rows.get(j)
        if row is None:
            if len(self._rows) > 256:
                self._rows.clear()
            rng = np.random.default_rng([self.seed, self.tag, j + 2])
            row = rng.standard_normal(self.ncols, dtype=np.float32)
            self._rows[j] = row
        return row

    def _lattice(self, i0: int, i1: int, j0: int, j1: int) -> npt.NDArray[np.float32]:
        return np.stack([self._row(j)[i0 + 2 : i1 + 3] for j in range(j0, j1 + 1)])

    def grid(self, xs: npt.NDArray[np.floating[Any]], ys: npt.NDArray[np.floating[Any]]
             ) -> npt.NDArray[np.float32]:
        """The field on the grid ``ys x xs`` of level-0 coordinates: float32 (len(ys), len(xs))."""
        ix, wx = _bspline(np.asarray(xs, dtype=np.float64) / self.cell_x)
        iy, wy = _bspline(np.asarray(ys, dtype=np.float64) / self.cell_y)
        i0, i1 = int(ix.min()) - 1, int(ix.max()) + 2
        j0, j1 = int(iy.min()) - 1, int(iy.max()) + 2
        lattice = self._lattice(i0, i1, j0, j1)
        # Separable: (rows x lattice rows) @ lattice @ (lattice columns x columns), as dense
        # matrices with 4 weights a row, which BLAS multiplies faster than gathers would.
        rows = _spline_matrix(iy - j0, wy, j1 - j0 + 1)
        # float32 throughout; asarray only tells the type checker so (no copy).
        return np.asarray(rows @ lattice @ _spline_matrix(ix - i0, wx, i1 - i0 + 1).T,
                          dtype=np.float32)

    def blocks(self, x0: int, y0: int, w: int, h: int, step: int) -> npt.NDArray[np.float32]:
        """The field over the level-0 region ``(x0, y0, w, h)``, constant on ``step x step``
        blocks aligned to multiples of ``step`` (so regions agree wherever they overlap)."""
        bx0, by0 = (x0 // step) * step, (y0 // step) * step
        nx, ny = -(-(x0 + w - bx0) // step), -(-(y0 + h - by0) // step)
        g = self.grid(bx0 + step * np.arange(nx) + step / 2, by0 + step * np.arange(ny) + step / 2)
        g = np.broadcast_to(g[:, None, :, None], (ny, step, nx, step)).reshape(ny * step, nx * step)
        return g[y0 - by0 : y0 - by0 + h, x0 - bx0 : x0 - bx0 + w]

    def points(self, xs: npt.NDArray[np.float64], ys: npt.NDArray[np.float64]
               ) -> npt.NDArray[np.float32]:
        """The field at scattered level-0 points ``(xs[n], ys[n])``: float32 (n,)."""
        if len(xs) == 0:
            return np.zeros(0, dtype=np.float32)
        ix, wx = _bspline(np.asarray(xs, dtype=np.float64) / self.cell_x)
        iy, wy = _bspline(np.asarray(ys, dtype=np.float64) / self.cell_y)
        i0, i1 = int(ix.min()) - 1, int(ix.max()) + 2
        j0, j1 = int(iy.min()) - 1, int(iy.max()) + 2
        lattice = self._lattice(i0, i1, j0, j1)
        out = np.zeros(len(xs), dtype=np.float32)
        for ky in range(4):
            for kx in range(4):
                out += wy[ky] * wx[kx] * lattice[iy - j0 - 1 + ky, ix - i0 - 1 + kx]
        return out


class _BlobField:
    """Where the tissue is: a smooth field over the slide whose top ``tissue_fraction`` is tissue.

    Three octaves of lattice noise (``blob_scale``, and finer) give lobed, smooth outlines.
    """

    _OCTAVES = ((1.0, 1.0), (2.3, 0.45), (5.5, 0.15))  # (scale divisor, weight)

    def __init__(self, seed: int, width: int, height: int, blob_scale: float) -> None:
        self.width, self.height = width, height
        self.octaves = [
            (_LatticeNoise(seed, 1 + k, blob_scale / div, blob_scale / div, width, height), weight)
            for k, (div, weight) in enumerate(self._OCTAVES)
        ]

    def _sum(self, field: Callable[[_LatticeNoise], npt.NDArray[np.float32]]
             ) -> npt.NDArray[np.float32]:
        """The octaves' ``field`` weighted and added up in order."""
        (noise, weight), *rest = self.octaves
        total = weight * field(noise)
        for noise, weight in rest:
            total = total + weight * field(noise)
        return total

    def grid(self, xs: npt.NDArray[np.floating[Any]], ys: npt.NDArray[np.floating[Any]]
             ) -> npt.NDArray[np.float32]:
        return self._sum(lambda noise: noise.grid(xs, ys))

    def points(self, xs: npt.NDArray[np.float64], ys: npt.NDArray[np.float64]
               ) -> npt.NDArray[np.float32]:
        return self._sum(lambda noise: noise.points(xs, ys))

    def threshold(self, tissue_fraction: float, samples: int = 512) -> float:
        """The field value above which ``tissue_fraction`` of the slide lies (from a coarse grid)."""
        nx = min(self.width, samples)
        ny = min(self.height, samples)
        xs = (np.arange(nx) + 0.5) * (self.width / nx)
        ys = (np.arange(ny) + 0.5) * (self.height / ny)
        return _quantile_threshold(self.grid(xs, ys), tissue_fraction)


def _quantile_threshold(field: npt.NDArray[np.float32], tissue_fraction: float) -> float:
    if tissue_fraction <= 0:
        return math.inf
    if tissue_fraction >= 1:
        return -math.inf
    return float(np.quantile(field, 1.0 - tissue_fraction))


class _Painter:
    """Paints H&E-looking pixels for a region of a slide, given its tissue mask.

    Stroma is eosin pink varying between a deeper and a paler shade, with fibre-like streaks;
    nuclei are haematoxylin-purple ellipses with a soft edge at about ``nuclei_fraction`` of the
    tissue area; glass is light grey. Nuclei sit on a lattice of cells, each row of cells drawn
    from its own seeded generator, so they are the same whichever region is painted.
    """

    def __init__(
        self,
        seed: int,
        width: int,
        height: int,
        nucleus_radius: float,
        nuclei_fraction: float,
        in_tissue: Callable[[npt.NDArray[np.float64], npt.NDArray[np.float64]],
                            npt.NDArray[np.bool_]],
    ) -> None:
        self.seed, self.width, self.height = seed, width, height
        self.radius = float(nucleus_radius)
        self.in_tissue = in_tissue
        r = self.radius
        self.pale = _LatticeNoise(seed, 11, 5 * r, 5 * r, width, height)
        self.fibre = _LatticeNoise(seed, 12, 9 * r, 1.2 * r, width, height)
        self.cell = max(16, round(5 * r))
        # Sizes vary uniformly in [0.75, 1.25] r: E[s^2] = 1 + 0.5^2 / 12.
        mean_area = math.pi * r * r * (1 + 0.25 / 12)
        self.per_cell = nuclei_fraction * self.cell**2 / mean_area
        self.reach = math.ceil(1.25 * 1.35 * r) + 1  # largest half-axis, in pixels
        self._rows: dict[int, tuple[npt.NDArray[np.float64], ...]] = {}

    def _nuclei_row(self, cy: int) -> tuple[npt.NDArray[np.float64], ...]:
        """Nuclei whose centres fall in cell row ``cy``: x, y, radius, elongation, angle, shade."""
        row = self._rows.get(cy)
        if row is None:
            if len(self._rows) > 256:
                self._rows.clear()
            rng = np.random.default_rng([self.seed, 13, cy])
            ncx = math.ceil(self.width / self.cell)
            counts = rng.poisson(self.per_cell, ncx)
            n = int(counts.sum())
            x = (np.repeat(np.arange(ncx), counts) + rng.random(n)) * self.cell
            y = (cy + rng.random(n)) * self.cell
            radius = self.radius * rng.uniform(0.75, 1.25, n)
            elong = rng.uniform(0.0, 0.35, n)
            angle = rng.uniform(0.0, math.pi, n)
            shade = rng.uniform(0.82, 1.12, n)
            keep = self.in_tissue(x, y)
            row = tuple(a[keep] for a in (x, y, radius, elong, angle, shade))
            self._rows[cy] = row
        return row

    def _nuclei(self, x0: int, y0: int, w: int, h: int
                ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Nucleus coverage alpha (h, w) in [0, 1] and a per-nucleus shade image."""
        alpha = np.zeros(h * w, dtype=np.float32)
        shade = np.ones(h * w, dtype=np.float32)
        c, reach = self.cell, self.reach
        rows = [self._nuclei_row(cy) for cy in range(max(0, (y0 - reach) // c), (y0 + h + reach) // c + 1)]
        x, y, radius, elong, angle, tone = (np.concatenate(a) for a in zip(*rows))
        near = (x > x0 - reach) & (x < x0 + w + reach) & (y > y0 - reach) & (y < y0 + h + reach)
        x, y, radius, elong, angle, tone = (a[near] for a in (x, y, radius, elong, angle, tone))
        if len(x) == 0:
            return alpha.reshape(h, w), shade.reshape(h, w)
        oy, ox = np.mgrid[-reach : reach + 1, -reach : reach + 1]
        disc = ox * ox + oy * oy <= reach * reach
        oy, ox = oy[disc], ox[disc]
        px = np.floor(x).astype(np.int64)[:, None] + ox[None, :]
        py = np.floor(y).astype(np.int64)[:, None] + oy[None, :]
        dx = (px + 0.5 - x[:, None]).astype(np.float32)
        dy = (py + 0.5 - y[:, None]).astype(np.float32)
        cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
        u = (dx * cos + dy * sin) / (1 + elong[:, None])
        v = (dy * cos - dx * sin) / (1 - elong[:, None])
        a = np.clip(radius[:, None] + 0.5 - np.sqrt(u * u + v * v), 0.0, 1.0)
        inside = (a > 0) & (px >= x0) & (px < x0 + w) & (py >= y0) & (py < y0 + h)
        flat = ((py - y0) * w + (px - x0))[inside]
        np.maximum.at(alpha, flat, a[inside])
        shade[flat] = np.broadcast_to(tone[:, None], a.shape)[inside]
        return alpha.reshape(h, w), shade.reshape(h, w)

    def paint(self, tissue: npt.NDArray[np.bool_], x0: int, y0: int) -> npt.NDArray[np.uint8]:
        """RGB uint8 (h, w, 3) for the level-0 region at ``(x0, y0)`` with tissue mask ``tissue``."""
        h, w = tissue.shape
        rng = np.random.default_rng([self.seed, 17, y0, x0])
        grain = rng.random((h, w), dtype=np.float32) - 0.5  # uniform, sd 0.29
        out = np.empty((h, w, 3), dtype=np.uint8)
        # One plane at a time: numpy is slow at broadcasting over a trailing axis of 3.
        glass = 5.0 * grain + 0.5  # + 0.5: the truncation to uint8 then rounds
        if not tissue.any():
            for c in range(3):
                out[..., c] = np.clip(glass + GLASS_RGB[c], 0, 255)
            return out
        # The texture varies over tens of pixels: sampling it on 4 x 4 blocks is invisible
        # under the grain and 16 times cheaper.
        pale = np.clip(0.5 + 0.4 * self.pale.blocks(x0, y0, w, h, 4), 0.0, 1.0)
        # Clipped so that the palest stroma never saturates red at 255, which would wash it
        # out towards grey: every tissue pixel keeps a saturation above 0.15.
        fibre = np.clip(1.0 - 0.04 * self.fibre.blocks(x0, y0, w, h, 4), 0.88, 1.03)
        alpha, shade = self._nuclei(x0, y0, w, h)
        # plane_c = stroma_c (1 - alpha) + nucleus_c alpha + grain, with
        # stroma_c = (eosin_c + (pale_c - eosin_c) pale) fibre and nucleus_c = haem_c shade:
        # terms shared by the three planes are computed once, and everything in place.
        pale *= fibre
        shade *= 1 + 0.25 * grain
        shade *= alpha
        np.subtract(1.0, alpha, out=alpha)
        grain *= 8.0
        grain += 0.5
        glass_px = ~tissue
        plane = np.empty_like(fibre)
        tmp = np.empty_like(fibre)
        for c in range(3):
            np.multiply(fibre, EOSIN_RGB[c], out=plane)
            np.multiply(pale, EOSIN_PALE_RGB[c] - EOSIN_RGB[c], out=tmp)
            plane += tmp
            plane *= alpha
            np.multiply(shade, HAEMATOXYLIN_RGB[c], out=tmp)
            plane += tmp
            plane += grain
            np.add(glass, GLASS_RGB[c], out=tmp)
            np.copyto(plane, tmp, where=glass_px)
            np.clip(plane, 0, 255, out=plane)
            out[..., c] = plane
        return out


def _default_blob_scale(width: int, height: int) -> float:
    return max(32.0, min(width, height) / 4)


def synthetic_tissue(
    height: int,
    width: int,
    seed: int,
    tissue_fraction: float = 0.4,
    *,
    blob_scale: float | None = None,
    nucleus_radius: float = 6.0,
    nuclei_fraction: float = 0.15,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
    """An H&E-looking image and its tissue mask: ``(rgb uint8 (H, W, 3), tissue bool (H, W))``.

    Glass is light grey (about 240, with a little noise). Tissue lies in smooth, lobed blobs
    (thresholded smooth noise with features about ``blob_scale`` pixels across; default a
    quarter of the shorter side) covering about ``tissue_fraction`` of the image: eosin-pink
    stroma with texture and haematoxylin-purple nuclei (radius about ``nucleus_radius`` px,
    about ``nuclei_fraction`` of the tissue). Blobs smaller than ``(blob_scale / 4)^2`` pixels
    and holes of that size are removed, so the mask holds only pieces a tissue detector can
    see; the fraction is therefore approximate (within a few percent). ``tissue`` is exactly
    where tissue pixels were painted. The result depends only on the arguments.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {width} x {height}")
    if not 0 <= tissue_fraction <= 1:
        raise ValueError(f"tissue_fraction must be in [0, 1], got {tissue_fraction}")
    seed = _check_seed(seed)
    scale = _default_blob_scale(width, height) if blob_scale is None else float(blob_scale)
    field = _BlobField(seed, width, height, scale)
    values = field.grid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    threshold = _quantile_threshold(values, tissue_fraction)
    tissue = values > threshold
    min_px = (scale / 4) ** 2
    tissue = drop_small_objects(tissue, min_px)
    tissue = ~drop_small_objects(~tissue, min_px)

    def in_tissue(xs: npt.NDArray[np.float64], ys: npt.NDArray[np.float64]
                  ) -> npt.NDArray[np.bool_]:
        ix = np.clip(xs.astype(np.int64), 0, width - 1)
        iy = np.clip(ys.astype(np.int64), 0, height - 1)
        return tissue[iy, ix]

    painter = _Painter(seed, width, height, nucleus_radius, nuclei_fraction, in_tissue)
    return painter.paint(tissue, 0, 0), tissue


def _check_seed(seed: int) -> int:
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)
