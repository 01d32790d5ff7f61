"""Tissue detection on a low-resolution image of the slide.

Tissue is told from glass by colour saturation: H&E-stained tissue is pink to purple, glass is
grey-white. The threshold is Otsu's on the saturation histogram, held between
:data:`MIN_THRESHOLD` and :data:`MAX_THRESHOLD` so that a slide that is nearly all glass (Otsu
then splits noise) or nearly all tissue (Otsu then splits pale stroma from nuclei) still gets a
sensible cut. Morphology then closes small gaps, fills small holes (gland lumens belong to the
tissue) and drops specks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from wsiseg.progress import NoProgress, ProgressBar
from wsiseg.slide.geometry import Geometry
from wsiseg.slide.reader import Slide
from wsiseg.slide.region import grid_blocks, read_grid

if TYPE_CHECKING:
    from typing import Self

logger = logging.getLogger(__name__)

MIN_THRESHOLD = 0.05
MAX_THRESHOLD = 0.15
#: Resolution of the tissue mask, um/px (PIPELINE: about 8-16 um/px).
MASK_MPP = 10.0
MIN_MASK_MPP, MAX_MASK_MPP = 8.0, 16.0
#: Pixels whose saturation is computed at a time: float temporaries of a few MB, not of the
#: whole low-resolution image.
SATURATION_CHUNK = 1 << 20
#: Read-level pixels above which finding the tissue is announced with a warning: a slide
#: without a pyramid (or one declaring an absurd size) costs minutes here, before any window.
WARN_LEVEL_PIXELS = 4_000_000_000
#: Seconds of reading after which, on such a slide, the time it takes is estimated from the
#: speed so far (decoding speed varies tenfold with the compression, the tiles and the CPU).
ESTIMATE_AFTER_SECONDS = 10.0


def saturation(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """HSV saturation in [0, 1] of a uint8 (H, W, 3) image, float32 (H, W)."""
    out = np.empty(rgb.shape[:-1], dtype=np.float32)
    rows = max(1, SATURATION_CHUNK // max(1, rgb.shape[1]))
    for y in range(0, rgb.shape[0], rows):
        part = rgb[y : y + rows]
        mx = part.max(axis=-1).astype(np.float32)
        mn = part.min(axis=-1).astype(np.float32)
        out[y : y + rows] = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1), 0.0)
    return out


def otsu_threshold(values: npt.NDArray[np.floating[Any]], bins: int = 256) -> float:
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


def tissue_mask(rgb: npt.NDArray[np.uint8], pixel_um: float = MASK_MPP
                ) -> npt.NDArray[np.bool_]:
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
    closed: npt.NDArray[np.bool_] = ndimage.binary_closing(padded, structure=_disk(close_px))
    mask = closed[close_px:-close_px, close_px:-close_px]
    min_object_px = (100 * 100) / pixel_um**2  # 0.01 mm^2
    max_hole_px = (300 * 300) / pixel_um**2  # 0.09 mm^2: lumens and tears, not glass between
    mask = _fill_small_holes(mask, max_hole_px)
    return drop_small_objects(mask, min_object_px)


#: Colour sanity (:func:`colour_warnings`). The glass of a bright-field slide is near-white
#: grey: on the real slides checked (CMU-1-Small-Region, TCGA-CR-7395) its mean colour's
#: channel imbalance, (max - min) / max, is 0.008-0.010 and its brightness 242-248; frames
#: of YCbCr read as RGB turn it salmon (about 215, 134, 154: imbalance 0.36-0.42). A scanner's
#: slightly yellow or blue white balance stays well under the limit, a colour mix-up well over.
MAX_GLASS_IMBALANCE = 0.15
#: Mean channel value under which glass is too dark for a bright-field scan (dark-field,
#: fluorescence, or a wrongly decoded image).
MIN_GLASS_BRIGHTNESS = 180.0
#: Tissue on this fraction of the slide or more is suspicious: glass taken for tissue.
MAX_TISSUE_FRACTION = 0.95
#: Below this fraction of glass pixels, the brightest :data:`BRIGHTEST_FRACTION` of the image
#: stand for the glass (lumens, fat, gaps: the nearest the slide has to white).
MIN_GLASS_FRACTION = 0.02
BRIGHTEST_FRACTION = 0.02
_CHECK_OVERLAY = "check the overlay (wsiseg export RESULT --to png)"


def colour_warnings(rgb: npt.NDArray[np.uint8], mask: npt.NDArray[np.bool_],
                    own: tuple[int, int] | None = None) -> list[str]:
    """What looks wrong with the colours of a slide's low-resolution RGB image and its tissue
    ``mask`` (same height and width), as one-line messages; empty when nothing does.

    ``own`` is the width and height of the top-left part of the image that is the slide's own
    pixels (:func:`own_pixels`); the rest, padding past the slide's edge, is read as white
    glass and would hide an all-tissue or wrongly coloured crop, so it is left out.

    Warns when the glass (the pixels outside the mask, or the brightest few percent when there
    is almost no glass) is not near-white and neutral, and when the mask covers at least
    :data:`MAX_TISSUE_FRACTION` of the image. Pure; works through the image in row chunks, so
    its memory is a few MB whatever the image's size.
    """
    if own is not None:
        rgb, mask = rgb[: own[1], : own[0]], mask[: own[1], : own[0]]
    if mask.size == 0:
        return []
    mask = mask.astype(bool, copy=False)
    warnings: list[str] = []
    mean, where = _glass_colour(rgb, mask)
    imbalance = float((mean.max() - mean.min()) / max(mean.max(), 1.0))
    if imbalance > MAX_GLASS_IMBALANCE or mean.mean() < MIN_GLASS_BRIGHTNESS:
        warnings.append(
            f"glass is not white (mean RGB {mean[0]:.0f}, {mean[1]:.0f}, {mean[2]:.0f} of the "
            f"{where}): the colours may be decoded wrongly (YCbCr read as RGB?) or the slide "
            f"is not a bright-field H&E; {_CHECK_OVERLAY}")
    fraction = float(np.count_nonzero(mask) / mask.size)
    if fraction >= MAX_TISSUE_FRACTION:
        warnings.append(
            f"tissue covers {100 * fraction:.1f}% of the slide: glass may be taken for tissue "
            "(wrongly decoded colours, a tinted or dark background) or the image is a crop "
            f"inside the tissue; {_CHECK_OVERLAY}")
    return warnings


def own_pixels(geometry: Geometry, bounds: tuple[int, int, int, int]) -> tuple[int, int]:
    """Width and height of the part of ``geometry``'s grid whose pixels lie wholly on the slide
    (its level-0 ``bounds``, x, y, w, h): the grid is rounded up, so its last column and row
    may reach past the slide's edge. A slide narrower than one pixel keeps that pixel."""
    bx, by, bw, bh = bounds
    (ox, oy), (sx, sy) = geometry.offset_level0, geometry.scale
    width = math.floor((bx + bw - ox) / sx + 1e-9)
    height = math.floor((by + bh - oy) / sy + 1e-9)
    return (min(geometry.width, max(1, width)), min(geometry.height, max(1, height)))


def _row_chunks(rgb: npt.NDArray[np.uint8], mask: npt.NDArray[np.bool_]
                ) -> Iterator[tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]]:
    rows = max(1, SATURATION_CHUNK // max(1, rgb.shape[1]))
    for y in range(0, rgb.shape[0], rows):
        yield rgb[y : y + rows], mask[y : y + rows]


def _glass_colour(rgb: npt.NDArray[np.uint8], mask: npt.NDArray[np.bool_]
                  ) -> tuple[npt.NDArray[np.float64], str]:
    """The mean colour of the glass, and which pixels stood for it."""
    sums, count = np.zeros(3, dtype=np.int64), 0
    for part, tissue in _row_chunks(rgb, mask):
        glass = ~tissue
        sums += part[glass].sum(axis=0, dtype=np.int64)
        count += int(np.count_nonzero(glass))
    if count >= max(1, MIN_GLASS_FRACTION * mask.size):
        return sums / count, "glass"
    # Almost no glass: the brightest pixels (R + G + B at or above the cut that leaves
    # BRIGHTEST_FRACTION of them, from a histogram rather than a sort).
    hist = np.zeros(3 * 255 + 1, dtype=np.int64)
    for part, _ in _row_chunks(rgb, mask):
        hist += np.bincount(part.sum(axis=2, dtype=np.uint16).ravel(), minlength=hist.size)
    wanted = max(1, int(BRIGHTEST_FRACTION * mask.size))
    cut = hist.size - 1 - int(np.searchsorted(np.cumsum(hist[::-1]), wanted))
    sums[:], count = 0, 0
    for part, _ in _row_chunks(rgb, mask):
        bright = part.sum(axis=2, dtype=np.uint16) >= cut
        sums += part[bright].sum(axis=0, dtype=np.int64)
        count += int(np.count_nonzero(bright))
    where = f"brightest {100 * BRIGHTEST_FRACTION:.0f}% of the slide, as it has almost no glass"
    return sums / count, where


def _disk(radius: int) -> npt.NDArray[np.bool_]:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disk: npt.NDArray[np.bool_] = xx**2 + yy**2 <= radius**2
    return disk


def drop_small_objects(mask: npt.NDArray[np.bool_], min_px: float
                       ) -> npt.NDArray[np.bool_]:
    """``mask`` without its connected pieces smaller than ``min_px`` pixels."""
    labels: npt.NDArray[np.int32]
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_px
    keep[0] = False
    return keep[labels]


def _fill_small_holes(mask: npt.NDArray[np.bool_], max_px: float
                      ) -> npt.NDArray[np.bool_]:
    holes: npt.NDArray[np.int32]
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


def work_warning(name: str, level: int, level_pixels: int, blocks: int) -> str:
    """One line saying how much finding the tissue will decode, before it starts."""
    return (f"{name}: finding the tissue decodes {level_pixels / 1e9:.4g} gigapixels of level "
            f"{level} in {blocks} blocks, as the slide has no coarser level: this may take "
            f"hours (estimated after {ESTIMATE_AFTER_SECONDS:g} s of reading); Ctrl-C stops it, "
            "and a pyramidal copy of the slide avoids it")


class _Timed:
    """A progress bar that also logs, once, the time left at the speed so far."""

    def __init__(self, bar: ProgressBar, name: str, total: int) -> None:
        self.bar, self.name, self.total = bar, name, total
        self.done = 0
        self.started = time.monotonic()
        self.told = False

    def __enter__(self) -> Self:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def update(self, n: int) -> None:
        self.bar.update(n)
        self.done += n
        elapsed = time.monotonic() - self.started
        if not self.told and elapsed >= ESTIMATE_AFTER_SECONDS and self.done > 0:
            self.told = True
            rate = self.done / elapsed
            logger.warning("%s: finding the tissue: %.2g%% in %.0f s (%.3g megapixels/s), "
                           "about %s more", self.name, 100 * self.done / self.total, elapsed,
                           rate / 1e6, _duration((self.total - self.done) / rate))


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 60:.0f} minutes" if seconds >= 90 else f"{seconds:.0f} s"


def tissue_geometry(slide: Slide, analysis: Geometry, factor: int) -> Geometry:
    """The tissue mask's grid: ``factor x factor`` analysis pixels a pixel, read from the
    coarsest level fine enough (level 0 on a slide without a pyramid)."""
    return analysis.coarser(factor, slide.level_downsamples)


def read_tissue(
    slide: Slide, analysis: Geometry, factor: int, threads: int = 1,
    progress: Callable[[int], ProgressBar] | None = None,
) -> tuple[npt.NDArray[np.bool_], Geometry, npt.NDArray[np.uint8]]:
    """The tissue mask on the grid of ``factor x factor`` analysis pixels, that grid, and the
    low-resolution uint8 (H, W, 3) RGB image the mask was found on.

    Its low-resolution image is assembled block by block (:func:`~wsiseg.slide.region.read_grid`:
    each block of the read level is area-averaged into place and dropped), so memory is that
    small image plus a block per thread, whatever the slide's size or pyramid. ``threads``
    read in parallel; ``progress`` makes a progress bar (see ``read_grid``).
    """
    geometry = tissue_geometry(slide, analysis, factor)
    blocks = grid_blocks(slide, geometry)
    logger.info(
        "%s: finding tissue on a %d x %d image at %.3g um/px, from level %d (%.0f megapixels "
        "in %d blocks)", slide.path.name, geometry.width, geometry.height, geometry.mpp[0],
        geometry.level, blocks.level_pixels / 1e6, len(blocks),
    )
    if blocks.level_pixels > WARN_LEVEL_PIXELS:
        name = slide.path.name
        logger.warning(work_warning(name, geometry.level, blocks.level_pixels, len(blocks)))
        make_bar = progress

        def progress(total: int) -> ProgressBar:
            return _Timed(make_bar(total) if make_bar is not None else NoProgress(), name, total)
    rgb = read_grid(slide, geometry, threads=threads, progress=progress)
    return tissue_mask(rgb, pixel_um=geometry.mpp[0]), geometry, rgb
