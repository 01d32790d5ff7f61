"""Artefacts with known truth, painted onto real or synthetic H&E pictures.

Each ``add_*`` function takes a uint8 RGB picture (and its resolution) and returns the picture
with the artefact and where it is (bool truth). Everything is a function of its arguments and a
seed. Pictures of real tissue: :func:`read_slide_picture` (an OpenSlide slide, area-averaged to
a resolution) and :func:`glas_on_glass` (GlaS crops laid on glass); :func:`on_glass` gives a
picture the glass around it that marks are drawn on.

The artefacts are painted as they come about on slides: marker marks (:func:`add_pen_marks`)
are rings drawn around a region, ticks, arrows and dots beside the tissue, mostly over glass
and crossing a small share of the tissue; a fold (:func:`add_fold`) is a strip at a piece's
edge turned over onto the tissue next to it. :func:`add_pen` paints long strokes across the
picture wherever they fall (most of small tissue inked: a stress case).

Optical density adds (Beer-Lambert), so ink and a second tissue layer multiply the transmitted
light: ``I_out = I_in * (I_layer / I_glass) ** density``, over glass and over tissue alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import ndimage, signal

from wsiseg.slide.artefacts import glass_rgb, optical_density
from wsiseg.slide.svs_writer import area_downsample

RGB = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.bool_]

#: Glass, RGB.
GLASS = (240.0, 240.0, 240.0)
#: Marker ink at full strength over glass, RGB. Typical of marked H&E slides: the pen filters of
#: deephistopath (python-wsi-preprocessing, ``filter.py``, tuned on TUPAC16 slides) take blue
#: ink for about (40-130, 90-170, 160-220), green (30-70, 75-115, 60-110), red (110-200,
#: 20-85, 30-125); black marker reads about (30-60) in all three. In OD (against 240) these
#: are blue (0.68, 0.43, 0.13), green (0.78, 0.34, 0.48), red (0.10, 0.78, 0.54), black
#: (0.78, 0.78, 0.68).
INKS: dict[str, tuple[float, float, float]] = {
    "blue": (50.0, 90.0, 180.0),
    "green": (40.0, 110.0, 80.0),
    "red": (190.0, 40.0, 40.0),
    "black": (40.0, 40.0, 50.0),
}


def read_slide_picture(path: str | Path, mpp: float, slide_mpp: float | None = None
                       ) -> tuple[RGB, float]:
    """The whole of level 0 of an OpenSlide slide, area-averaged by the integer factor nearest
    ``mpp / slide_mpp`` (``slide_mpp`` from the file when None), and that picture's um/px."""
    import openslide

    with openslide.OpenSlide(str(path)) as slide:
        own = slide_mpp or float(slide.properties[openslide.PROPERTY_NAME_MPP_X])
        rgba = slide.read_region((0, 0), 0, slide.dimensions)
    rgb = np.asarray(rgba.convert("RGB"))
    factor = max(1, round(mpp / own))
    return (area_downsample(rgb, factor) if factor > 1 else rgb), own * factor


def glas_on_glass(paths: Sequence[str | Path], factor: int = 1, margin: int = 60,
                  columns: int = 2) -> RGB:
    """GlaS images (``NAME.jpg``, about 0.62 um/px) laid in a grid on glass with ``margin``
    pixels around each, area-averaged by ``factor``."""
    from PIL import Image

    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    h = max(i.shape[0] for i in images) + margin
    w = max(i.shape[1] for i in images) + margin
    rows = -(-len(images) // columns)
    canvas = np.empty((rows * h + margin, columns * w + margin, 3), dtype=np.uint8)
    canvas[:] = np.array(GLASS, dtype=np.uint8)
    for k, image in enumerate(images):
        y, x = margin + (k // columns) * h, margin + (k % columns) * w
        canvas[y : y + image.shape[0], x : x + image.shape[1]] = image
    return area_downsample(canvas, factor) if factor > 1 else canvas


def _multiply(rgb: RGB, layer: npt.NDArray[np.float32], density: npt.NDArray[np.float32]
              ) -> RGB:
    """Beer-Lambert: ``rgb`` under a ``layer`` (RGB over glass) of per-pixel ``density``."""
    glass = np.array(GLASS, dtype=np.float32)
    transmit = np.clip(layer / glass, 1e-3, 1.0) ** density[..., None]
    out = rgb.astype(np.float32) * transmit
    result: RGB = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return result


def _smooth_path(rng: np.random.Generator, shape: tuple[int, int], length: float
                 ) -> npt.NDArray[np.float64]:
    """Points (y, x), one pixel apart, of a smooth random curve of about ``length`` pixels."""
    h, w = shape
    start = rng.uniform([0.15 * h, 0.15 * w], [0.85 * h, 0.85 * w])
    angle = rng.uniform(0, 2 * math.pi)
    n = max(2, int(length))
    # Heading drifts smoothly: the integral of a low-pass random walk.
    turn = ndimage.gaussian_filter1d(rng.normal(0, 0.05, n), max(1.0, n / 20))
    heading = angle + np.cumsum(turn)
    steps = np.stack([np.sin(heading), np.cos(heading)], axis=1)
    pts: npt.NDArray[np.float64] = start + np.cumsum(steps, axis=0)
    return pts


def pen_strokes(shape: tuple[int, int], mpp: float, seed: int, strokes: int = 3,
                width_um: tuple[float, float] = (400.0, 1200.0)
                ) -> npt.NDArray[np.float32]:
    """Ink density (0..1) of ``strokes`` smooth strokes on a ``shape`` picture of ``mpp`` um/px:
    each of a width varying along it within ``width_um``, translucent (density 0.6-1, varying
    smoothly), with anti-aliased edges."""
    rng = np.random.default_rng(seed)
    h, w = shape
    density = np.zeros(shape, dtype=np.float32)
    for _ in range(strokes):
        pts = _smooth_path(rng, shape, rng.uniform(0.4, 0.9) * max(h, w))
        n = len(pts)
        radius = np.interp(np.linspace(0, 1, n), [0, 0.5, 1],
                           rng.uniform(*width_um, size=3) / mpp / 2)
        strength = np.interp(np.linspace(0, 1, n), [0, 0.5, 1], rng.uniform(0.6, 1.0, size=3))
        iy, ix = np.rint(pts[:, 0]).astype(int), np.rint(pts[:, 1]).astype(int)
        inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
        if not inside.any():
            continue
        centre_r = np.zeros(shape, dtype=np.float32)
        centre_s = np.zeros(shape, dtype=np.float32)
        centre_r[iy[inside], ix[inside]] = radius[inside]
        centre_s[iy[inside], ix[inside]] = strength[inside]
        dist, (ny, nx) = ndimage.distance_transform_edt(centre_r == 0, return_indices=True)
        cover = np.clip(centre_r[ny, nx] - dist + 0.5, 0.0, 1.0)
        density = np.maximum(density, (cover * centre_s[ny, nx]).astype(np.float32))
    return density


def add_pen(rgb: RGB, mpp: float, ink: str, seed: int, strokes: int = 3,
            width_um: tuple[float, float] = (400.0, 1200.0)) -> tuple[RGB, Mask]:
    """``rgb`` with :func:`pen_strokes` of ``ink`` (a key of :data:`INKS`), and the truth: where
    the stroke's density is at least 0.3. Long strokes laid anywhere: on tissue a few mm across
    they ink most of it (a stress case; :func:`add_pen_marks` draws marks as they are made)."""
    density = pen_strokes(rgb.shape[:2], mpp, seed, strokes, width_um)
    layer = np.broadcast_to(np.array(INKS[ink], dtype=np.float32), rgb.shape)
    return _multiply(rgb, layer, density), density >= 0.3


#: The kinds of mark :func:`pen_marks` draws: a ring (or most of one) around a region, a tick
#: (a short line pointing at the tissue), an arrow, a dot.
MARK_KINDS = ("ring", "tick", "arrow", "dot")


def glass_colour(rgb: RGB, tissue: Mask) -> npt.NDArray[np.uint8]:
    """The median colour of ``rgb`` away from ``tissue`` (:data:`GLASS` when there is none)."""
    away = ~ndimage.binary_dilation(tissue, iterations=3)
    if not away.any():
        return np.array(GLASS, dtype=np.uint8)
    colour: npt.NDArray[np.uint8] = np.median(rgb[away], axis=0).astype(np.uint8)
    return colour


def on_glass(rgb: RGB, tissue: Mask, margin: int) -> tuple[RGB, Mask]:
    """``rgb`` and its ``tissue`` with ``margin`` pixels of its own glass (:func:`glass_colour`)
    around them: a cropped picture's tissue laid on a slide."""
    h, w = tissue.shape
    out = np.empty((h + 2 * margin, w + 2 * margin, 3), dtype=np.uint8)
    out[:] = glass_colour(rgb, tissue)
    out[margin : margin + h, margin : margin + w] = rgb
    mask = np.zeros(out.shape[:2], dtype=bool)
    mask[margin : margin + h, margin : margin + w] = tissue
    return out, mask


def _stroke(shape: tuple[int, int], pts: npt.NDArray[np.float64], radius: npt.NDArray[np.float64],
            strength: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """Ink density of a stroke along ``pts`` (N, 2: y, x), of the given half-width and strength
    at each point, anti-aliased; computed in the stroke's box only."""
    h, w = shape
    density = np.zeros(shape, dtype=np.float32)
    pad = math.ceil(float(radius.max())) + 2
    y0, y1 = max(0, math.floor(pts[:, 0].min()) - pad), min(h, math.ceil(pts[:, 0].max()) + pad)
    x0, x1 = max(0, math.floor(pts[:, 1].min()) - pad), min(w, math.ceil(pts[:, 1].max()) + pad)
    if y1 <= y0 or x1 <= x0:
        return density
    iy = np.rint(pts[:, 0]).astype(int) - y0
    ix = np.rint(pts[:, 1]).astype(int) - x0
    inside = (iy >= 0) & (iy < y1 - y0) & (ix >= 0) & (ix < x1 - x0)
    if not inside.any():
        return density
    centre_r = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
    centre_s = np.zeros_like(centre_r)
    centre_r[iy[inside], ix[inside]] = np.maximum(radius[inside], 0.5)
    centre_s[iy[inside], ix[inside]] = strength[inside]
    dist, (ny, nx) = ndimage.distance_transform_edt(centre_r == 0, return_indices=True)
    cover = np.clip(centre_r[ny, nx] - dist + 0.5, 0.0, 1.0)
    density[y0:y1, x0:x1] = cover * centre_s[ny, nx]
    return density


def _segment(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]
             ) -> npt.NDArray[np.float64]:
    n = max(2, int(math.hypot(*(b - a))) + 1)
    pts: npt.NDArray[np.float64] = a + np.linspace(0.0, 1.0, n)[:, None] * (b - a)
    return pts


def _mark(rng: np.random.Generator, kind: str, tissue: Mask,
          nearest: tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]], mpp: float,
          width_um: tuple[float, float]
          ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The points of one mark of ``kind`` (:data:`MARK_KINDS`), its half-width and strength at
    each: a ring around a random tissue point, 0.5-1 times the tissue's half-diagonal out; the
    others start on glass 150-900 um from the tissue and point at it."""
    width = rng.uniform(*width_um) / mpp
    if kind == "ring":
        ys, xs = np.nonzero(tissue)
        k = rng.integers(len(ys))
        extent = 0.5 * math.hypot(float(np.ptp(ys)), float(np.ptp(xs)))
        radius = rng.uniform(0.5, 1.0) * extent + width / 2
        aspect, turn = rng.uniform(0.6, 1.0), rng.uniform(0.0, math.pi)
        span = rng.uniform(1.4 * math.pi, 2.1 * math.pi)  # most of a ring, or a little more
        n = max(8, int(1.2 * span * radius))
        t = rng.uniform(0.0, 2 * math.pi) + np.linspace(0.0, span, n)
        wobble = 1 + ndimage.gaussian_filter1d(rng.normal(0.0, 0.15, n), max(1.0, n / 12))
        ey, ex = radius * aspect * np.sin(t) * wobble, radius * np.cos(t) * wobble
        pts = np.stack([ys[k] + ey * math.cos(turn) + ex * math.sin(turn),
                        xs[k] - ey * math.sin(turn) + ex * math.cos(turn)], axis=1)
    else:
        dist, (ny, nx) = nearest
        gy, gx = np.nonzero((dist * mpp >= 150.0) & (dist * mpp <= 900.0))
        if len(gy) == 0:
            gy, gx = np.nonzero(dist > 0)
        k = rng.integers(len(gy))
        start = np.array([gy[k], gx[k]], dtype=np.float64)
        towards = np.array([ny[gy[k], gx[k]], nx[gy[k], gx[k]]], dtype=np.float64) - start
        heading = math.atan2(towards[0], towards[1]) + rng.uniform(-0.35, 0.35)
        if kind == "dot":
            pts = start[None]
            width *= rng.uniform(1.0, 1.8)
        else:
            length = rng.uniform(400.0, 1500.0) / mpp
            tip = start + length * np.array([math.sin(heading), math.cos(heading)])
            pts = _segment(start, tip)
            if kind == "arrow":
                head = rng.uniform(0.25, 0.4) * length
                for side in (-1, 1):
                    back = heading + math.pi + side * rng.uniform(0.4, 0.7)
                    pts = np.concatenate([pts, _segment(
                        tip, tip + head * np.array([math.sin(back), math.cos(back)]))])
    along = np.linspace(0.0, 1.0, len(pts))
    half = width / 2 * np.interp(along, [0, 0.5, 1], rng.uniform(0.85, 1.15, size=3))
    strength = np.interp(along, [0, 0.5, 1], rng.uniform(0.6, 1.0, size=3))
    return pts, half, strength


def pen_marks(tissue: Mask, mpp: float, seed: int, marks: int = 3,
              width_um: tuple[float, float] = (300.0, 1000.0),
              tissue_share: tuple[float, float] = (0.02, 0.2), tries: int = 100
              ) -> npt.NDArray[np.float32]:
    """Ink density (0..1) of ``marks`` marker marks beside ``tissue`` (a picture of ``mpp``
    um/px with glass around it: :func:`on_glass`): a ring (or most of one) around part of
    the tissue, then ticks, arrows or dots (:data:`MARK_KINDS`), each ``width_um`` wide,
    translucent (density 0.6-1, varying along it). The marks' truth (density at least 0.3)
    covers a share of the tissue within ``tissue_share``: a mark that would take it over the
    upper bound is drawn again, and the whole set is when the share stays under the lower.
    Raises ValueError when no set in ``tries`` does."""
    rng = np.random.default_rng(seed)
    nearest = ndimage.distance_transform_edt(~tissue, return_indices=True)
    total = max(1, int(np.count_nonzero(tissue)))
    for _ in range(tries):
        kinds = ["ring", *rng.choice(MARK_KINDS, size=marks - 1)]
        density = np.zeros(tissue.shape, dtype=np.float32)
        for kind in kinds:
            for _ in range(tries):
                more = np.maximum(density, _stroke(tissue.shape,
                                                   *_mark(rng, kind, tissue, nearest, mpp,
                                                          width_um)))
                if np.count_nonzero((more >= 0.3) & tissue) <= tissue_share[1] * total:
                    density = more
                    break
        if np.count_nonzero((density >= 0.3) & tissue) >= tissue_share[0] * total:
            return density
    raise ValueError(f"no {marks} marks of {width_um} um cover {tissue_share} of the tissue "
                     f"in {tries} tries")


def add_pen_marks(rgb: RGB, tissue: Mask, mpp: float, ink: str, seed: int, marks: int = 3,
                  width_um: tuple[float, float] = (300.0, 1000.0),
                  tissue_share: tuple[float, float] = (0.02, 0.2)) -> tuple[RGB, Mask]:
    """``rgb`` with :func:`pen_marks` of ``ink`` (a key of :data:`INKS`), and the truth: where
    the marks' density is at least 0.3."""
    density = pen_marks(tissue, mpp, seed, marks, width_um, tissue_share)
    layer = np.broadcast_to(np.array(INKS[ink], dtype=np.float32), rgb.shape)
    return _multiply(rgb, layer, density), density >= 0.3


def pillbox(radius: float) -> npt.NDArray[np.float32]:
    """A defocus point-spread function: a disk of ``radius`` pixels, anti-aliased, sum 1."""
    r = math.ceil(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    k = np.clip(radius + 0.5 - np.hypot(yy, xx), 0.0, 1.0).astype(np.float32)
    kernel: npt.NDArray[np.float32] = k / k.sum()
    return kernel


def blob_region(shape: tuple[int, int], seed: int, fraction: float = 0.25) -> Mask:
    """A smooth random region covering about ``fraction`` of a ``shape`` image."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), min(shape) / 8)
    cut = np.quantile(field, 1 - fraction)
    region: Mask = field >= cut
    return region


def add_blur(rgb: RGB, radius: float, region: Mask) -> RGB:
    """``rgb`` defocused by a :func:`pillbox` of ``radius`` pixels inside ``region`` (an
    analysis-resolution image: the scanner lost focus there)."""
    kernel = pillbox(radius)
    r = kernel.shape[0] // 2
    padded = np.pad(rgb.astype(np.float32), ((r, r), (r, r), (0, 0)), mode="edge")
    blurred = np.stack([signal.fftconvolve(padded[..., c], kernel, mode="valid")
                        for c in range(3)], axis=-1)
    out = rgb.copy()
    out[region] = np.clip(np.rint(blurred[region]), 0, 255).astype(np.uint8)
    return out


#: Total OD (three channels, averaged over about 10 um) from which a pixel carries tissue: glass
#: and empty lumens lie under 0.05, the palest stroma of the real slides measured over 0.2.
TISSUE_OD = 0.15


def total_od(rgb: RGB, glass: npt.NDArray[np.float32], mpp: float) -> npt.NDArray[np.float32]:
    """Total OD of ``rgb`` against ``glass``, averaged over about 10 um."""
    size = max(1, round(10.0 / mpp)) | 1
    total: npt.NDArray[np.float32] = ndimage.uniform_filter(
        optical_density(rgb, glass).sum(axis=-1), size)
    return total


def add_fold(rgb: RGB, tissue: Mask, mpp: float, seed: int,
             width_um: tuple[float, float] = (300.0, 800.0),
             length_um: tuple[float, float] = (500.0, 1500.0), tries: int = 50
             ) -> tuple[RGB, Mask]:
    """``rgb`` with a fold: a strip ``width_um`` deep and up to ``length_um`` long at the edge of
    a piece of ``tissue``, turned over the fold line onto the tissue next to it (mirrored, its
    OD added: two layers of the same tissue), glass left where it was. The truth is where both
    layers carry tissue (total OD at least :data:`TISSUE_OD`); empty when no strip turned
    over in ``tries`` tries lands on tissue."""
    rng = np.random.default_rng(seed)
    h, w = tissue.shape
    glass = glass_rgb(rgb)
    total = total_od(rgb, glass, mpp)
    carries = total >= TISSUE_OD
    # Pieces split by glass: the mask closes narrow gaps between pieces laid side by side.
    pieces, _ = ndimage.label(tissue & ~ndimage.binary_opening(total < 0.5 * TISSUE_OD))
    edge = tissue & carries & ~ndimage.binary_erosion(tissue, border_value=1)
    ys, xs = np.nonzero(edge & (pieces > 0))
    if len(ys) == 0:
        return rgb.copy(), np.zeros(tissue.shape, dtype=bool)
    # The way out of the tissue, from the mask's outline smoothed over 100 um.
    soft = ndimage.gaussian_filter(tissue.astype(np.float32), 100.0 / mpp)
    grad_y, grad_x = np.gradient(soft)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(tries):
        k = rng.integers(len(ys))
        cy, cx = float(ys[k]), float(xs[k])
        angle = math.atan2(-grad_y[ys[k], xs[k]], -grad_x[ys[k], xs[k]]) + rng.uniform(-0.3, 0.3)
        ny, nx = math.sin(angle), math.cos(angle)
        depth = rng.uniform(*width_um) / mpp
        length = rng.uniform(*length_um) / mpp
        out_of = (yy - cy) * ny + (xx - cx) * nx + depth  # 0 on the fold line, > 0 outwards
        along = (xx - cx) * ny - (yy - cy) * nx
        strip = (pieces == pieces[ys[k], xs[k]]) & (out_of > 0) & (np.abs(along) <= length / 2)
        # A corner or a concave outline would turn over much more than a strip: not a fold.
        parts, _ = ndimage.label(strip)
        strip = parts == parts[ys[k], xs[k]]
        if not strip.any() or strip.sum() > 1.2 * depth * length:
            continue
        # Mirrored over the fold line: each pixel shows the strip's pixel facing it.
        src_y, src_x = yy - 2 * out_of * ny, xx - 2 * out_of * nx
        flap = ndimage.map_coordinates(strip.astype(np.float32), [src_y, src_x], order=0,
                                       mode="constant", cval=0.0) > 0.5
        layer_carries = ndimage.map_coordinates(carries.astype(np.float32), [src_y, src_x],
                                                order=0, mode="constant", cval=0.0) > 0.5
        truth: Mask = flap & layer_carries & carries & tissue
        if not truth.any():
            continue
        layer = np.stack([ndimage.map_coordinates(rgb[..., ch].astype(np.float32),
                                                  [src_y, src_x], order=1, mode="nearest")
                          for ch in range(3)], axis=-1)
        # The layer's own glass lets all light through: relative to the slide's glass.
        layer *= np.array(GLASS, dtype=np.float32) / glass
        out = rgb.copy()
        out[strip] = np.clip(np.rint(glass), 0, 255).astype(np.uint8)
        return _multiply(out, layer, flap.astype(np.float32)), truth
    return rgb.copy(), np.zeros(tissue.shape, dtype=bool)


def coarsen(rgb: RGB, truth: Mask, factor: int) -> tuple[RGB, Mask]:
    """A painted picture and its truth at ``factor`` times fewer pixels a side: the picture
    area-averaged (as the tissue picture is made from the slide), the truth where at least half
    of a block is (:func:`block_truth`)."""
    if factor <= 1:
        return rgb.copy(), truth.copy()
    return area_downsample(rgb, factor), block_truth(truth, factor)


def block_truth(region: Mask, block: int, share: float = 0.5) -> Mask:
    """Blocks of ``block x block`` pixels at least ``share`` inside ``region``."""
    h, w = region.shape
    ph, pw = -(-h // block) * block - h, -(-w // block) * block - w
    padded = np.pad(region.astype(np.float32), ((0, ph), (0, pw)))
    frac = padded.reshape(padded.shape[0] // block, block, -1, block).mean(axis=(1, 3))
    out: Mask = frac >= share
    return out
