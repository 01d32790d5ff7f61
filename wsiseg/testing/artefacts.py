"""Artefacts with known truth, painted onto real or synthetic H&E pictures.

Each ``add_*`` function takes a uint8 RGB picture (and its resolution) and returns the picture
with the artefact and where it is (bool truth). Everything is a function of its arguments and a
seed. Pictures of real tissue: :func:`read_slide_picture` (an OpenSlide slide, area-averaged to
a resolution) and :func:`glas_on_glass` (GlaS crops laid on glass).

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
    the stroke's density is at least 0.3."""
    density = pen_strokes(rgb.shape[:2], mpp, seed, strokes, width_um)
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


def add_fold(rgb: RGB, tissue: Mask, mpp: float, seed: int,
             width_um: tuple[float, float] = (300.0, 800.0)) -> tuple[RGB, Mask]:
    """``rgb`` with a fold: inside a band across the tissue, a shifted and slightly rotated copy
    of the same picture lies over it (its OD added, so doubled where both are tissue). The truth
    is the band where both layers are tissue."""
    rng = np.random.default_rng(seed)
    h, w = tissue.shape
    ys, xs = np.nonzero(tissue)
    k = rng.integers(len(ys))
    cy, cx = float(ys[k]), float(xs[k])
    angle = rng.uniform(0, math.pi)
    half = rng.uniform(*width_um) / mpp / 2
    yy, xx = np.mgrid[0:h, 0:w]
    across = (yy - cy) * math.cos(angle) - (xx - cx) * math.sin(angle)
    band = np.abs(across) <= half
    # The flap: the picture turned by a few degrees about the band's centre and moved across it.
    shift = 2.2 * half
    turn = math.radians(rng.uniform(-8, 8))
    c, s = math.cos(turn), math.sin(turn)
    sy = yy - cy - shift * math.cos(angle)
    sx = xx - cx + shift * math.sin(angle)
    src_y = cy + c * sy - s * sx
    src_x = cx + s * sy + c * sx
    flap = np.stack([ndimage.map_coordinates(rgb[..., ch].astype(np.float32), [src_y, src_x],
                                             order=1, mode="constant", cval=GLASS[ch])
                     for ch in range(3)], axis=-1)
    flap_tissue = ndimage.map_coordinates(tissue.astype(np.float32), [src_y, src_x], order=0,
                                          mode="constant", cval=0.0) > 0.5
    density = band.astype(np.float32)
    out = _multiply(rgb, flap.astype(np.float32), density)
    truth: Mask = band & tissue & flap_tissue
    return out, truth


def block_truth(region: Mask, block: int, share: float = 0.5) -> Mask:
    """Blocks of ``block x block`` pixels at least ``share`` inside ``region``."""
    h, w = region.shape
    ph, pw = -(-h // block) * block - h, -(-w // block) * block - w
    padded = np.pad(region.astype(np.float32), ((0, ph), (0, pw)))
    frac = padded.reshape(padded.shape[0] // block, block, -1, block).mean(axis=(1, 3))
    out: Mask = frac >= share
    return out
