"""Tissue detection on a low-resolution image of the slide.

Tissue is told from glass by colour saturation: H&E-stained tissue is pink to purple, glass is
grey-white. The threshold is Otsu's on the saturation histogram, held between
:data:`MIN_THRESHOLD` and :data:`MAX_THRESHOLD` so that a slide that is nearly all glass (Otsu
then splits noise) or nearly all tissue (Otsu then splits pale stroma from nuclei) still gets a
sensible cut. Morphology then closes small gaps, fills small holes (gland lumens belong to the
tissue) and drops specks.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from wsiseg.slide.geometry import Geometry
from wsiseg.slide.region import RegionReader
from wsiseg.slide.reader import Slide

MIN_THRESHOLD = 0.05
MAX_THRESHOLD = 0.15
#: Resolution of the tissue mask, um/px (PIPELINE: about 8-16 um/px).
MASK_MPP = 10.0
MIN_MASK_MPP, MAX_MASK_MPP = 8.0, 16.0


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation in [0, 1] of a uint8 (H, W, 3) image."""
    mx = rgb.max(axis=-1).astype(np.float32)
    mn = rgb.min(axis=-1).astype(np.float32)
    return np.where(mx > 0, (mx - mn) / np.maximum(mx, 1), 0.0).astype(np.float32)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1]."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 0.5
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = total - w0
    m0 = np.cumsum(hist * centres)
    mean0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mean1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def tissue_mask(rgb: np.ndarray, pixel_um: float = MASK_MPP) -> np.ndarray:
    """Boolean tissue mask of a low-resolution uint8 RGB image of ``pixel_um`` um/px."""
    sat = saturation(rgb)
    threshold = min(max(otsu_threshold(sat), MIN_THRESHOLD), MAX_THRESHOLD)
    mask = sat > threshold
    if not mask.any():
        return mask
    # Sizes in um, turned into pixels of this mask.
    close_px = max(1, round(20 / pixel_um))
    # Closing pads first: eroding against an implicit empty border would eat tissue that
    # touches the image edge.
    padded = np.pad(mask, close_px, mode="edge")
    mask = ndimage.binary_closing(padded, structure=_disk(close_px))[close_px:-close_px, close_px:-close_px]
    min_object_px = (100 * 100) / pixel_um**2  # 0.01 mm^2
    max_hole_px = (300 * 300) / pixel_um**2  # 0.09 mm^2: lumens and tears, not glass between
    mask = _fill_small_holes(mask, max_hole_px)
    return drop_small_objects(mask, min_object_px)


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return xx**2 + yy**2 <= radius**2


def drop_small_objects(mask: np.ndarray, min_px: float) -> np.ndarray:
    """``mask`` without its connected pieces smaller than ``min_px`` pixels."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_px
    keep[0] = False
    return keep[labels]


def _fill_small_holes(mask: np.ndarray, max_px: float) -> np.ndarray:
    holes, n = ndimage.label(~mask)
    if n == 0:
        return mask
    sizes = np.bincount(holes.ravel())
    # Background touching the image border is glass around the tissue, never a hole.
    border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
    fill = sizes <= max_px
    fill[0] = False
    fill[border] = False
    return mask | fill[holes]


def mask_factor(patch_size: int, stride: int, analysis_mpp: float) -> int:
    """Analysis pixels per tissue-mask pixel: about :data:`MASK_MPP` um, dividing the stride.

    A factor that divides both patch size and stride makes every window's edges fall on
    mask-pixel edges, so window tissue fractions are exact counts.
    """
    g = math.gcd(patch_size, stride)
    lo = MIN_MASK_MPP / analysis_mpp
    hi = MAX_MASK_MPP / analysis_mpp
    divisors = [f for f in range(1, g + 1) if g % f == 0 and lo <= f <= hi]
    if divisors:
        return min(divisors, key=lambda f: abs(f * analysis_mpp - MASK_MPP))
    return max(1, round(MASK_MPP / analysis_mpp))


def read_tissue(
    slide: Slide, analysis: Geometry, factor: int, strip_rows: int = 512
) -> tuple[np.ndarray, Geometry]:
    """The tissue mask on the grid of ``factor x factor`` analysis pixels, read in strips."""
    geometry = analysis.coarser(factor, slide.level_downsamples)
    reader = RegionReader(slide, geometry)
    rgb = np.empty((geometry.height, geometry.width, 3), dtype=np.uint8)
    for y in range(0, geometry.height, strip_rows):
        h = min(strip_rows, geometry.height - y)
        rgb[y : y + h] = reader.read(0, y, geometry.width, h)
    return tissue_mask(rgb, pixel_um=geometry.mpp[0]), geometry
