"""Synthetic whole-slide images for tests and benchmarks.

Like :mod:`numpy.testing`, this module is public so that the test suite, the benchmarks and
users' own tests can make slides with known content and known metadata:

- :func:`synthetic_tissue` paints an H&E-looking image (pink stroma, purple nuclei, white
  glass) and returns the ground-truth tissue mask with it;
- :func:`write_svs` writes an in-memory image as an Aperio SVS that OpenSlide opens with
  vendor ``aperio``; :func:`write_generic_tiff` writes a tiled TIFF that it opens as
  ``generic-tiff``; :func:`write_scn` writes a Leica SCN that it opens as ``leica``, with the
  image placed in a larger scan, so that OpenSlide reports ``openslide.bounds-*``;
- :func:`write_large_svs` writes a gigapixel SVS tile by tile, in memory that does not grow
  with the slide, for benchmarks.

Every pyramid level written here is the area average of level 0 (the mean over ``d x d``
blocks, rounded to the nearest integer, blocks cut by the image edge averaging the pixels they
hold; see :func:`area_downsample`), of size ``ceil(W / d) x ceil(H / d)``. OpenSlide derives a
level's downsample from the level sizes, so it is exactly ``d`` when ``W`` and ``H`` are
multiples of ``d``, and a little less otherwise.

Compressions OpenSlide 4.0 reads in an Aperio SVS (checked by ``tests/testing/test_synthetic.py``):
``"jpeg"`` (what scanners write; 4:2:0 YCbCr, lossy) and the lossless ``"none"``,
``"deflate"``, ``"lzw"`` and ``"zstd"``, which read back bit-exact through
``OpenSlide.read_region`` at every level. WebP, PNG and JPEG XL tiles are refused by OpenSlide
("Unsupported TIFF compression"), so they are not offered.
"""

from __future__ import annotations

import base64
import math
import os
import struct
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import tifffile

from wsiseg.slide.tissue import drop_small_objects

__all__ = [
    "COMPRESSIONS",
    "area_downsample",
    "synthetic_tissue",
    "write_generic_tiff",
    "write_large_svs",
    "write_scn",
    "write_svs",
]

#: Tile compressions :func:`write_svs` and :func:`write_generic_tiff` accept, and their
#: tifffile names. All of them are read by OpenSlide; only ``"jpeg"`` is lossy.
COMPRESSIONS: dict[str, str | None] = {
    "jpeg": "jpeg",
    "none": None,
    "deflate": "zlib",
    "lzw": "lzw",
    "zstd": "zstd",
}

#: The first line of every ImageDescription written here; OpenSlide detects Aperio by the
#: "Aperio" prefix of the first image's description.
APERIO_LIBRARY = "Aperio Image Library v12.0.15"

#: The XML namespace by which OpenSlide detects a Leica SCN, and the device model written.
LEICA_SCN_XMLNS = "http://www.leica-microsystems.com/scn/2010/10/01"
LEICA_DEVICE = "WSISEG-SYNTHETIC"

GLASS_RGB = (240.0, 240.0, 240.0)
EOSIN_RGB = (233.0, 148.0, 192.0)
EOSIN_PALE_RGB = (243.0, 190.0, 220.0)
HAEMATOXYLIN_RGB = (92.0, 58.0, 148.0)

# Tags that carry a TIFF's resolution: XResolution, YResolution, ResolutionUnit.
_RESOLUTION_TAGS = frozenset({282, 283, 296})
# Largest side of the thumbnail image stored in an SVS.
_THUMBNAIL_MAX = 1024
# Largest side of the macro picture of the whole scan stored in a Leica SCN.
_MACRO_MAX = 512
# Columns rendered at once by write_large_svs: keeps float temporaries to a few MB.
_CHUNK_WIDTH = 4096


# -- resampling ---------------------------------------------------------------------------------
def area_downsample(rgb: np.ndarray, d: int) -> np.ndarray:
    """Area average of ``rgb`` (H, W, C) uint8 over ``d x d`` blocks: (ceil(H/d), ceil(W/d), C).

    Each output pixel is the mean of the input pixels in its block, rounded half up; a block cut
    by the right or bottom edge averages only the pixels it holds. ``d = 1`` returns a copy.
    """
    if rgb.ndim != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, C) image, got {rgb.dtype} {rgb.shape}")
    if int(d) != d or d < 1:
        raise ValueError(f"downsample must be a positive integer, got {d}")
    d = int(d)
    if d == 1:
        return rgb.copy()
    h, w, c = rgb.shape
    oh, ow = -(-h // d), -(-w // d)
    if h % d or w % d:
        padded = np.zeros((oh * d, ow * d, c), dtype=np.uint8)
        padded[:h, :w] = rgb
        rgb = padded
    # Sum the d rows of each block, then the d columns, by adding strided slices: much faster
    # than a reduction over two inner axes. uint16 holds up to 16 x 16 x 255.
    acc = np.uint16 if d <= 16 else np.uint32
    blocks = rgb.reshape(oh, d, ow * d * c)
    rows = blocks[:, 0].astype(acc)
    for k in range(1, d):
        rows += blocks[:, k]
    cols = rows.reshape(oh, ow, d, c)
    sums = cols[:, :, 0].astype(np.uint32)
    for k in range(1, d):
        sums += cols[:, :, k]
    ny = np.minimum(d, h - d * np.arange(oh)).astype(np.uint32)
    nx = np.minimum(d, w - d * np.arange(ow)).astype(np.uint32)
    counts = (ny[:, None] * nx[None, :])[:, :, None]
    return ((sums + counts // 2) // counts).astype(np.uint8)


# -- smooth random fields -----------------------------------------------------------------------
def _bspline(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _spline_matrix(index: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
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

    def __init__(self, seed: int, tag: int, cell_x: float, cell_y: float, width: int, height: int):
        self.seed, self.tag = seed, tag
        self.cell_x, self.cell_y = float(cell_x), float(cell_y)
        # Lattice columns -2 .. ceil(width / cell_x) + 5 (points just past the edge need
        # their 4 neighbours too), stored from index 0.
        self.ncols = math.ceil(width / self.cell_x) + 8
        self._rows: dict[int, np.ndarray] = {}

    def _row(self, j: int) -> np.ndarray:
        row = self._rows.get(j)
        if row is None:
            if len(self._rows) > 256:
                self._rows.clear()
            rng = np.random.default_rng([self.seed, self.tag, j + 2])
            row = rng.standard_normal(self.ncols, dtype=np.float32)
            self._rows[j] = row
        return row

    def _lattice(self, i0: int, i1: int, j0: int, j1: int) -> np.ndarray:
        return np.stack([self._row(j)[i0 + 2 : i1 + 3] for j in range(j0, j1 + 1)])

    def grid(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """The field on the grid ``ys x xs`` of level-0 coordinates: float32 (len(ys), len(xs))."""
        ix, wx = _bspline(np.asarray(xs, dtype=np.float64) / self.cell_x)
        iy, wy = _bspline(np.asarray(ys, dtype=np.float64) / self.cell_y)
        i0, i1 = int(ix.min()) - 1, int(ix.max()) + 2
        j0, j1 = int(iy.min()) - 1, int(iy.max()) + 2
        lattice = self._lattice(i0, i1, j0, j1)
        # Separable: (rows x lattice rows) @ lattice @ (lattice columns x columns), as dense
        # matrices with 4 weights a row, which BLAS multiplies faster than gathers would.
        return _spline_matrix(iy - j0, wy, j1 - j0 + 1) @ lattice @ _spline_matrix(ix - i0, wx, i1 - i0 + 1).T

    def blocks(self, x0: int, y0: int, w: int, h: int, step: int) -> np.ndarray:
        """The field over the level-0 region ``(x0, y0, w, h)``, constant on ``step x step``
        blocks aligned to multiples of ``step`` (so regions agree wherever they overlap)."""
        bx0, by0 = (x0 // step) * step, (y0 // step) * step
        nx, ny = -(-(x0 + w - bx0) // step), -(-(y0 + h - by0) // step)
        g = self.grid(bx0 + step * np.arange(nx) + step / 2, by0 + step * np.arange(ny) + step / 2)
        g = np.broadcast_to(g[:, None, :, None], (ny, step, nx, step)).reshape(ny * step, nx * step)
        return g[y0 - by0 : y0 - by0 + h, x0 - bx0 : x0 - bx0 + w]

    def points(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
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

    def __init__(self, seed: int, width: int, height: int, blob_scale: float):
        self.width, self.height = width, height
        self.octaves = [
            (_LatticeNoise(seed, 1 + k, blob_scale / div, blob_scale / div, width, height), weight)
            for k, (div, weight) in enumerate(self._OCTAVES)
        ]

    def grid(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        return sum(weight * noise.grid(xs, ys) for noise, weight in self.octaves)

    def points(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        return sum(weight * noise.points(xs, ys) for noise, weight in self.octaves)

    def threshold(self, tissue_fraction: float, samples: int = 512) -> float:
        """The field value above which ``tissue_fraction`` of the slide lies (from a coarse grid)."""
        nx = min(self.width, samples)
        ny = min(self.height, samples)
        xs = (np.arange(nx) + 0.5) * (self.width / nx)
        ys = (np.arange(ny) + 0.5) * (self.height / ny)
        return _quantile_threshold(self.grid(xs, ys), tissue_fraction)


def _quantile_threshold(field: np.ndarray, tissue_fraction: float) -> float:
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
        in_tissue: Callable[[np.ndarray, np.ndarray], np.ndarray],
    ):
        self.seed, self.width, self.height = seed, width, height
        self.radius = float(nucleus_radius)
        self.in_tissue = in_tissue
        r = self.radius
        self.pale = _LatticeNoise(seed, 11, 5 * r, 5 * r, width, height)
        self.fibre = _LatticeNoise(seed, 12, 9 * r, 1.2 * r, width, height)
        self.cell = max(16, int(round(5 * r)))
        # Sizes vary uniformly in [0.75, 1.25] r: E[s^2] = 1 + 0.5^2 / 12.
        mean_area = math.pi * r * r * (1 + 0.25 / 12)
        self.per_cell = nuclei_fraction * self.cell**2 / mean_area
        self.reach = int(math.ceil(1.25 * 1.35 * r)) + 1  # largest half-axis, in pixels
        self._rows: dict[int, tuple[np.ndarray, ...]] = {}

    def _nuclei_row(self, cy: int) -> tuple[np.ndarray, ...]:
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

    def _nuclei(self, x0: int, y0: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
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

    def paint(self, tissue: np.ndarray, x0: int, y0: int) -> np.ndarray:
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
) -> tuple[np.ndarray, np.ndarray]:
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

    def in_tissue(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        ix = np.clip(xs.astype(np.int64), 0, width - 1)
        iy = np.clip(ys.astype(np.int64), 0, height - 1)
        return tissue[iy, ix]

    painter = _Painter(seed, width, height, nucleus_radius, nuclei_fraction, in_tissue)
    return painter.paint(tissue, 0, 0), tissue


def _check_seed(seed: int) -> int:
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


# -- writing ------------------------------------------------------------------------------------
def _check_common(tile: int, compression: str, quality: int) -> str | None:
    if compression not in COMPRESSIONS:
        raise ValueError(
            f"compression {compression!r} is not one OpenSlide reads here; use one of "
            f"{', '.join(repr(c) for c in COMPRESSIONS)}"
        )
    if tile < 16 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16 (JPEG 4:2:0 blocks), got {tile}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    return COMPRESSIONS[compression]


def _check_downsamples(downsamples: Sequence[int]) -> tuple[int, ...]:
    ds = tuple(int(d) for d in downsamples)
    if (
        not ds
        or ds[0] != 1
        or any(int(d) != d for d in downsamples)
        or any(b <= a for a, b in zip(ds, ds[1:]))
    ):
        raise ValueError(
            f"downsamples must be increasing integers starting with 1, e.g. (1, 4, 16); got "
            f"{tuple(downsamples)}"
        )
    return ds


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb)


def _thumbnail_factor(width: int, height: int) -> int:
    """The smallest power of two that brings the image within the thumbnail size."""
    f = 1
    while max(width, height) > _THUMBNAIL_MAX * f:
        f *= 2
    return f


def _label_image(seed: int) -> np.ndarray:
    """A small slide-label picture: a light card with a made-up barcode."""
    h, w = 256, 320
    label = np.full((h, w, 3), 236, dtype=np.uint8)
    bars = np.random.default_rng([seed, 23]).integers(0, 2, 60).astype(bool)
    columns = np.repeat(bars, 4)
    label[40:140, 40 : 40 + columns.size][:, columns] = 20
    label[170:200, 40:280] = (60, 60, 160)
    return label


def _aperio_description(
    width: int,
    height: int,
    tile: int,
    compression: str,
    quality: int,
    mpp: float | None,
    app_mag: str | None,
    bounds: tuple[int, int, int, int] | None,
    filename: str,
) -> str:
    codec = "JPEG/RGB Q=%d" % quality if compression == "jpeg" else f"{compression.upper()}/RGB"
    if bounds is None:
        region = f"{width}x{height} [0,0 {width}x{height}]"
    else:
        bx, by = bounds[0], bounds[1]
        region = f"{bx + width}x{by + height} [{bx},{by} {width}x{height}]"
    fields = [f"{APERIO_LIBRARY}\r\n{region} ({tile}x{tile}) {codec}"]
    if app_mag is not None:
        fields.append(f"AppMag = {app_mag}")
    fields.append("ScanScope ID = WSISEG-SYNTHETIC")
    fields.append(f"Filename = {filename}")
    if mpp is not None:
        fields.append(f"MPP = {float(mpp)!r}")
    return "|".join(fields)


def _resolve_app_mag(
    mpp: float | None, objective_power: float | None, app_mag: str | None
) -> str | None:
    if objective_power is not None and app_mag is not None:
        raise ValueError(
            "give objective_power (a number) or app_mag (the AppMag text as written), not both"
        )
    if app_mag is not None:
        return str(app_mag)
    if objective_power is not None:
        return f"{objective_power:g}"
    if mpp is not None:
        # The nominal magnification of a scan: 0.25 um/px is x40, 0.5 um/px is x20.
        return f"{round(10.0 / mpp):d}"
    return None


def _write_aperio(
    path: Path,
    width: int,
    height: int,
    levels: Sequence[tuple[int, np.ndarray | Iterator[np.ndarray]]],
    thumbnail: Callable[[], np.ndarray],
    description: str,
    tile: int,
    compression: str,
    quality: int,
    label: np.ndarray | None,
) -> None:
    """Write an SVS: level 0, the thumbnail (stripped), the other levels, then the label.

    ``levels`` holds ``(d, data)`` with ``data`` an array or an iterator of tiles in row-major
    order; ``thumbnail`` is called once level 0 is written (streamed levels fill it then).
    """
    codec = COMPRESSIONS[compression]
    args: dict = {"compression": codec, "photometric": "rgb", "metadata": None}
    if compression == "jpeg":
        args["compressionargs"] = {"level": quality}
    raw_bytes = sum(3 * math.ceil(width / d) * math.ceil(height / d) for d, _ in levels)
    head, _, tail = description.partition("|")
    head = head.split("\r\n")[0]
    with tifffile.TiffWriter(path, bigtiff=raw_bytes > 2**31) as tif:
        for k, (d, data) in enumerate(levels):
            w, h = math.ceil(width / d), math.ceil(height / d)
            desc = description if k == 0 else f"{head}\r\n{width}x{height} -> {w}x{h} - |{tail}"
            shape = {} if isinstance(data, np.ndarray) else {"shape": (h, w, 3), "dtype": np.uint8}
            tif.write(data, tile=(tile, tile), description=desc, maxworkers=2, **shape, **args)
            if k == 0:
                thumb = thumbnail()
                tif.write(
                    thumb,
                    rowsperstrip=16,
                    description=f"{head}\n{width}x{height} -> {thumb.shape[1]}x{thumb.shape[0]} - ",
                    **args,
                )
        if label is not None:
            tif.write(
                label,
                rowsperstrip=16,
                subfiletype=1,
                description=f"{head}\nlabel {label.shape[1]}x{label.shape[0]}",
                compression="lzw",
                photometric="rgb",
                metadata=None,
            )


def write_svs(
    path: str | os.PathLike,
    rgb_level0: np.ndarray,
    mpp: float | None,
    downsamples: Sequence[int] = (1, 4, 16),
    tile: int = 256,
    compression: str = "jpeg",
    quality: int = 90,
    objective_power: float | None = None,
    app_mag: str | None = None,
    bounds: tuple[int, int, int, int] | None = None,
) -> Path:
    """Write ``rgb_level0`` as an Aperio SVS that OpenSlide opens with vendor ``aperio``.

    A tiled pyramid with one level per downsample (each the area average of level 0, see
    :func:`area_downsample`), a stripped thumbnail as the second image and a small label image,
    laid out as Aperio scanners do. The ImageDescription is Aperio's: ``"Aperio Image Library
    ...\\r\\nWxH [0,0 WxH] (256x256) JPEG/RGB Q=90|AppMag = 40|...|MPP = 0.25"``, which
    OpenSlide turns into ``openslide.mpp-x``/``mpp-y`` (from ``MPP``; left out when ``mpp`` is
    None) and ``openslide.objective-power`` (from ``AppMag``).

    ``AppMag`` is ``app_mag`` written as given (to test odd metadata), else
    ``objective_power``, else the nominal ``10 / mpp`` (40 for 0.25 um/px); it is left out when
    all three are None. ``compression`` is one of :data:`COMPRESSIONS`: ``"jpeg"`` (4:2:0,
    ``quality``) like real scanners, or a lossless one that OpenSlide reads back bit-exact.
    ``bounds = (x, y, w, h)`` places the image in a larger scan in the description, as Aperio
    writes a cut-out region (``"[x,y WxH]"``, with ``(w, h)`` the image size); OpenSlide does
    not report it as ``openslide.bounds-*``, which its aperio backend never sets. Returns the
    path written.
    """
    rgb = _check_rgb(rgb_level0)
    _check_common(tile, compression, quality)
    ds = _check_downsamples(downsamples)
    if mpp is not None and not mpp > 0:
        raise ValueError(f"mpp must be positive or None, got {mpp}")
    height, width = rgb.shape[:2]
    if bounds is not None and (len(bounds) != 4 or tuple(bounds[2:]) != (width, height)):
        raise ValueError(f"bounds must be (x, y, {width}, {height}) for this image, got {bounds}")
    path = Path(path)
    description = _aperio_description(
        width, height, tile, compression, quality, mpp,
        _resolve_app_mag(mpp, objective_power, app_mag), bounds, path.stem,
    )
    levels = [(d, rgb if d == 1 else area_downsample(rgb, d)) for d in ds]
    _write_aperio(
        path, width, height, levels,
        lambda: area_downsample(rgb, _thumbnail_factor(width, height)),
        description, tile, compression, quality, _label_image(0),
    )
    return path


def write_generic_tiff(
    path: str | os.PathLike,
    rgb: np.ndarray,
    mpp: float | None = None,
    tile: int = 256,
    levels: Sequence[int] = (1,),
    compression: str = "deflate",
) -> Path:
    """Write ``rgb`` as a tiled pyramidal TIFF that OpenSlide opens as ``generic-tiff``.

    One tiled image per downsample in ``levels`` (area averages of level 0). With ``mpp`` the
    images carry XResolution/YResolution in pixels per centimetre (``1e4 / mpp``), which
    OpenSlide reports as ``openslide.mpp-x``/``mpp-y``; with ``mpp=None`` the file has no
    resolution tags at all, so OpenSlide has no resolution. Returns the path written.
    """
    rgb = _check_rgb(rgb)
    codec = _check_common(tile, compression, 90)
    ds = _check_downsamples(levels)
    if mpp is not None and not mpp > 0:
        raise ValueError(f"mpp must be positive or None, got {mpp}")
    path = Path(path)
    args: dict = {"compression": codec, "photometric": "rgb", "metadata": None}
    if compression == "jpeg":
        args["compressionargs"] = {"level": 90}
    if mpp is not None:
        args["resolution"] = (1e4 / mpp, 1e4 / mpp)
        args["resolutionunit"] = "CENTIMETER"
    with tifffile.TiffWriter(path, bigtiff=rgb.nbytes * 4 // 3 > 2**31) as tif:
        for d in ds:
            data = rgb if d == 1 else area_downsample(rgb, d)
            tif.write(data, tile=(tile, tile), subfiletype=0 if d == 1 else 1, **args)
    if mpp is None:
        # tifffile always writes XResolution = YResolution = 1 (unit NONE); real files
        # without a resolution have no such tags, so remove them.
        _drop_tags(path, _RESOLUTION_TAGS)
    return path


# -- Leica SCN ----------------------------------------------------------------------------------
def _leica_nm(px: int, nm_per_px: float, to_int: Callable[[float], int]) -> int:
    """The whole number of nanometres that OpenSlide's leica backend turns back into ``px``.

    OpenSlide converts nanometres to pixels by a double division, ``to_int(nm / nm_per_px)``
    (truncation for offsets, ``math.ceil`` for the scan size): pick the integer that survives
    that round trip rather than trusting ``round(px * nm_per_px)`` to.
    """
    guess = round(px * nm_per_px)
    for nm in (guess, guess - 1, guess + 1, guess - 2, guess + 2):
        if nm >= 0 and to_int(nm / nm_per_px) == px:
            return nm
    raise ValueError(  # pragma: no cover - cannot happen for nm_per_px >= 1
        f"no whole number of nanometres gives {px} px at {nm_per_px} nm/px"
    )


def _leica_image_xml(
    name: str,
    view: tuple[int, int, int, int],
    dimensions: Sequence[tuple[int, int, int]],
    objective: str,
) -> str:
    """One ``<image>`` of the SCN XML: ``view`` is (offsetX, offsetY, sizeX, sizeY) in nm,
    ``dimensions`` holds (width, height, ifd) per pyramid level."""
    ox, oy, sx, sy = view
    dims = "".join(
        f'<dimension sizeX="{w}" sizeY="{h}" r="{r}" ifd="{ifd}"/>'
        for r, (w, h, ifd) in enumerate(dimensions)
    )
    w0, h0 = dimensions[0][:2]
    return (
        f'<image name="{name}" uuid="urn:uuid:wsiseg-synthetic-{name}">'
        "<creationDate>2024-01-01T00:00:00.00Z</creationDate>"
        f'<device model="{LEICA_DEVICE}" version="1.0"/>'
        f"<pixels sizeX=\"{w0}\" sizeY=\"{h0}\">{dims}</pixels>"
        f'<view sizeX="{sx}" sizeY="{sy}" offsetX="{ox}" offsetY="{oy}" spacingZ="0"/>'
        "<scanSettings>"
        f"<objectiveSettings><objective>{objective}</objective></objectiveSettings>"
        "<illuminationSettings><numericalAperture>0.7</numericalAperture>"
        "<illuminationSource>brightfield</illuminationSource></illuminationSettings>"
        "</scanSettings></image>"
    )


def write_scn(
    path: str | os.PathLike,
    rgb_level0: np.ndarray,
    mpp: float,
    offset: tuple[int, int],
    downsamples: Sequence[int] = (1, 4),
    tile: int = 256,
    compression: str = "deflate",
    quality: int = 90,
    scan_size: tuple[int, int] | None = None,
) -> Path:
    """Write ``rgb_level0`` as a Leica SCN that OpenSlide opens with vendor ``leica`` and bounds.

    The image is the scanned region of a larger, otherwise empty scan of ``scan_size`` level-0
    pixels (default: the image with a margin of ``offset`` on every side), placed at level-0
    pixel ``offset = (x, y)``. OpenSlide reports ``openslide.bounds-x/y`` = ``offset``,
    ``openslide.bounds-width/height`` = the image size, ``openslide.mpp-x/y`` = ``mpp`` (up to
    float32 rounding, exact for 0.25 or 0.5), ``openslide.objective-power`` = the nominal
    ``10 / mpp`` and one level per downsample, and reads transparent pixels (RGBA 0, 0, 0, 0)
    outside the region. Level 0 is ``scan_size``; level ``k`` is ``ceil(scan_size / d)`` when
    the image size is a multiple of ``d`` (OpenSlide scales the scan by the image level's
    width, ``ceil(W / d) / W``, so other sizes give a level a pixel or so larger).

    The layout is Leica's: a BigTIFF whose first image (tiled, as OpenSlide requires) is a
    low-resolution macro picture of the whole scan and carries, as its ImageDescription, the
    XML ``<scn xmlns="http://www.leica-microsystems.com/scn/2010/10/01">``. Its
    ``<collection>`` gives the scan size in nanometres; each ``<image>`` has a ``<view>`` (size
    and offset in the scan, in nm), ``<pixels>`` listing one ``<dimension>`` (size, TIFF
    directory ``ifd``) per pyramid level, and an illumination source (OpenSlide reads only
    ``brightfield``) and objective. The image whose view covers the whole collection at offset
    0 is the macro; the other is the main image, one tiled directory per downsample (area
    averages of level 0, see :func:`area_downsample`), the first with XResolution/YResolution
    of ``1e4 / mpp`` pixels per centimetre, from which OpenSlide takes the mpp.

    OpenSlide derives nm per pixel from the main image's view width over each level's width
    and converts every length with it (the vertical ones too), truncating offsets; the nm
    values written here are chosen so that level 0 lands exactly on ``offset`` and
    ``scan_size``. At level ``k`` the image lies at ``floor(offset / d)``, which matches the
    level-0 placement exactly when ``offset`` and the image size are multiples of ``d``.
    ``compression`` is one of :data:`COMPRESSIONS` (lossless ones read back bit-exact).
    Returns the path written.
    """
    rgb = _check_rgb(rgb_level0)
    codec = _check_common(tile, compression, quality)
    ds = _check_downsamples(downsamples)
    if not mpp >= 0.001:
        raise ValueError(f"mpp must be at least 0.001 um/px (1 nm), got {mpp}")
    height, width = rgb.shape[:2]
    ox, oy = (int(v) for v in offset)
    if ox < 0 or oy < 0 or (ox, oy) != tuple(offset):
        raise ValueError(f"offset must be two non-negative integers (x, y), got {offset}")
    if scan_size is None:
        scan_w, scan_h = width + 2 * ox, height + 2 * oy
    else:
        scan_w, scan_h = (int(v) for v in scan_size)
        if scan_w < ox + width or scan_h < oy + height:
            raise ValueError(
                f"scan_size {tuple(scan_size)} does not hold the {width} x {height} image at "
                f"offset {(ox, oy)}; give at least {(ox + width, oy + height)}"
            )
    if (ox, oy, scan_w, scan_h) == (0, 0, width, height):
        # OpenSlide takes an image covering the whole scan for the macro picture.
        raise ValueError(
            "an image at offset (0, 0) filling the whole scan is read as the macro image; "
            "give a non-zero offset or a larger scan_size"
        )
    level_sizes = [(math.ceil(width / d), math.ceil(height / d)) for d in ds]
    if any(b[0] >= a[0] for a, b in zip(level_sizes, level_sizes[1:])):
        raise ValueError(
            f"downsamples {ds} give levels of widths {[w for w, _ in level_sizes]}; OpenSlide "
            "orders levels by width, so each must be narrower than the one before"
        )

    # Lengths in nm, chosen so that OpenSlide's conversions give back the pixels exactly.
    view_w = round(width * mpp * 1000)
    nm_per_px = view_w / width
    view = (
        _leica_nm(ox, nm_per_px, int),
        _leica_nm(oy, nm_per_px, int),
        view_w,
        round(height * nm_per_px),
    )
    collection_w = _leica_nm(scan_w, nm_per_px, math.ceil)
    collection_h = _leica_nm(scan_h, nm_per_px, math.ceil)

    f = 1
    while max(scan_w, scan_h) > _MACRO_MAX * f:
        f *= 2
    macro = np.empty((math.ceil(scan_h / f), math.ceil(scan_w / f), 3), dtype=np.uint8)
    macro[:] = np.asarray(GLASS_RGB, dtype=np.uint8)
    small = area_downsample(rgb, f)
    mh, mw = macro.shape[:2]
    small = small[: mh - oy // f, : mw - ox // f]
    macro[oy // f : oy // f + small.shape[0], ox // f : ox // f + small.shape[1]] = small

    objective = f"{round(10.0 / mpp):d}"
    barcode = base64.b64encode(b"WSISEG-SYNTHETIC").decode("ascii")
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<scn xmlns="{LEICA_SCN_XMLNS}">'
        f'<collection name="{Path(path).stem}" uuid="urn:uuid:wsiseg-synthetic" '
        f'sizeX="{collection_w}" sizeY="{collection_h}">'
        f"<barcode>{barcode}</barcode>"
        + _leica_image_xml("macro", (0, 0, collection_w, collection_h), [(mw, mh, 0)], "1")
        + _leica_image_xml(
            "main", view, [(w, h, 1 + k) for k, (w, h) in enumerate(level_sizes)], objective
        )
        + "</collection></scn>"
    )

    path = Path(path)
    args: dict = {"compression": codec, "photometric": "rgb", "metadata": None}
    if compression == "jpeg":
        args["compressionargs"] = {"level": quality}
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(macro, tile=(tile, tile), description=xml, **args)
        for d in ds:
            ppcm = 1e4 / (mpp * d)
            tif.write(
                rgb if d == 1 else area_downsample(rgb, d),
                tile=(tile, tile),
                resolution=(ppcm, ppcm),
                resolutionunit="CENTIMETER",
                maxworkers=2,
                **args,
            )
    return path


def _drop_tags(path: Path, codes: frozenset[int]) -> None:
    """Remove the tags ``codes`` from every IFD of a TIFF, in place.

    Each IFD is rewritten where it is, shorter; the values of dropped tags stay in the file,
    unreferenced.
    """
    with tifffile.TiffFile(path) as tif:
        order = tif.byteorder
        big = tif.is_bigtiff
        offsets = [page.offset for page in tif.pages]
    count_fmt, entry_size, next_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
    count_size, next_size = struct.calcsize(count_fmt), struct.calcsize(next_fmt)
    with open(path, "r+b") as f:
        for offset in offsets:
            f.seek(offset)
            (n,) = struct.unpack(order + count_fmt, f.read(count_size))
            entries = f.read(n * entry_size)
            nxt = f.read(next_size)
            kept = [
                entries[i : i + entry_size]
                for i in range(0, len(entries), entry_size)
                if struct.unpack(order + "H", entries[i : i + 2])[0] not in codes
            ]
            f.seek(offset)
            f.write(struct.pack(order + count_fmt, len(kept)) + b"".join(kept) + nxt)


def write_large_svs(
    path: str | os.PathLike,
    width: int,
    height: int,
    mpp: float = 0.25,
    tissue_fraction: float = 0.4,
    seed: int = 0,
    downsamples: Sequence[int] = (1, 4, 16),
    tile: int = 256,
    quality: int = 85,
) -> Path:
    """Write a large synthetic H&E Aperio SVS (JPEG tiles) without holding level 0 in memory.

    Level 0 is painted in full-width bands one tile row high, from a tissue field defined over
    the whole slide (smooth blobs about a quarter of the shorter side across, covering about
    ``tissue_fraction``; stroma texture and nuclei of radius 3 um, all seamless across tiles).
    Each band is area-averaged into the lower levels as it passes and those are kept in
    temporary raw files beside ``path`` (about 1/16 of level 0's raw size for
    ``downsamples=(1, 4, 16)``), so every level is the exact area average of level 0 before
    compression and memory stays at a few bands. Downsamples should be powers of two (a band
    is as high as the least common multiple of ``tile`` and all downsamples). The metadata are
    those of :func:`write_svs` (AppMag the nominal ``10 / mpp``). Returns the path written.
    """
    if width < 1 or height < 1:
        raise ValueError(f"slide size must be positive, got {width} x {height}")
    if not mpp > 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    if not 0 <= tissue_fraction <= 1:
        raise ValueError(f"tissue_fraction must be in [0, 1], got {tissue_fraction}")
    seed = _check_seed(seed)
    _check_common(tile, "jpeg", quality)
    ds = _check_downsamples(downsamples)
    path = Path(path)
    thumb_factor = _thumbnail_factor(width, height)
    band_height = math.lcm(tile, thumb_factor, *ds)

    field = _BlobField(seed, width, height, _default_blob_scale(width, height))
    threshold = field.threshold(tissue_fraction)
    radius = min(max(3.0 / mpp, 2.0), 40.0)
    painter = _Painter(
        seed, width, height, radius, 0.15, lambda xs, ys: field.points(xs, ys) > threshold
    )
    description = _aperio_description(
        width, height, tile, "jpeg", quality, mpp, _resolve_app_mag(mpp, None, None), None, path.stem
    )

    with tempfile.TemporaryDirectory(prefix=".wsiseg-", dir=path.parent) as tmp:
        spill = {d: open(Path(tmp) / f"level-{d}.raw", "w+b") for d in ds[1:]}
        thumb_rows: list[np.ndarray] = []
        try:

            def band(y0: int, h: int) -> np.ndarray:
                out = np.empty((h, width, 3), dtype=np.uint8)
                ys = np.arange(y0, y0 + h) + 0.5
                for x0 in range(0, width, _CHUNK_WIDTH):
                    w = min(_CHUNK_WIDTH, width - x0)
                    tissue = field.grid(np.arange(x0, x0 + w) + 0.5, ys) > threshold
                    out[:, x0 : x0 + w] = painter.paint(tissue, x0, y0)
                return out

            def level0_tiles() -> Iterator[np.ndarray]:
                for y0 in range(0, height, band_height):
                    rows = band(y0, min(band_height, height - y0))
                    for d, f in spill.items():
                        f.write(area_downsample(rows, d).tobytes())
                    thumb_rows.append(area_downsample(rows, thumb_factor))
                    for ty in range(0, rows.shape[0], tile):
                        for tx in range(0, width, tile):
                            yield rows[ty : ty + tile, tx : tx + tile]

            def spilled_tiles(d: int) -> Iterator[np.ndarray]:
                f = spill[d]
                f.flush()
                w, h = math.ceil(width / d), math.ceil(height / d)
                for y0 in range(0, h, tile):
                    n = min(tile, h - y0)
                    f.seek(y0 * w * 3)
                    rows = np.frombuffer(f.read(n * w * 3), dtype=np.uint8).reshape(n, w, 3)
                    for tx in range(0, w, tile):
                        yield rows[:, tx : tx + tile]

            levels = [(1, level0_tiles())] + [(d, spilled_tiles(d)) for d in ds[1:]]
            _write_aperio(
                path, width, height, levels, lambda: np.concatenate(thumb_rows),
                description, tile, "jpeg", quality, _label_image(seed),
            )
        finally:
            for f in spill.values():
                f.close()
    return path


def write_annotated_folder(folder: str | os.PathLike, count: int = 6, size: tuple[int, int] = (96, 128),
                           seed: int = 0) -> dict[str, str]:
    """Write ``count`` H&E-like PNG images with gland masks and a ``grades.csv``; for training.

    Each image ``img_N.png`` has ``img_N_mask.png`` (1 = gland, 0 = other): pink stroma with
    a glass strip along the top and purple discs for glands. Images alternate between
    "benign" (pale glands) and "malignant" (dark, crowded glands), so the grade is visible in
    the pixels. Returns image stem -> grade.
    """
    import imagecodecs

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    grades = {}
    for n in range(count):
        grade = "benign" if n % 2 == 0 else "malignant"
        image = np.empty((h, w, 3), dtype=np.float32)
        image[:] = (235, 170, 200)
        mask = np.zeros((h, w), dtype=np.uint8)
        discs = 3 if grade == "benign" else 6
        colour = (170, 110, 190) if grade == "benign" else (90, 40, 120)
        for _ in range(discs):
            cy, cx = rng.uniform(h * 0.3, h * 0.9), rng.uniform(0.1 * w, 0.9 * w)
            r = rng.uniform(0.08, 0.14) * min(h, w)
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            image[inside] = colour
            mask[inside] = 1
        image[: h // 8] = 250  # glass
        mask[: h // 8] = 0
        image += rng.normal(0, 6, image.shape)
        name = f"img_{n}"
        (folder / f"{name}.png").write_bytes(
            imagecodecs.png_encode(np.clip(image, 0, 255).astype(np.uint8)))
        (folder / f"{name}_mask.png").write_bytes(imagecodecs.png_encode(mask))
        grades[name] = grade
    with (folder / "grades.csv").open("w") as f:
        f.write("name,patient_id,grade\n")
        for i, (name, grade) in enumerate(grades.items()):
            f.write(f"{name},{i // 2},{grade}\n")
    return grades
