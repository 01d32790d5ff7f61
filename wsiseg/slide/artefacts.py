"""Artefacts on a slide: pen ink, folds, out-of-focus regions.

Pure functions of arrays and numbers, in the slide's two pictures:

- the tissue picture (uint8 RGB of the whole slide at the tissue mask's resolution, about
  10 um/px in a prediction, and its mask): :func:`pen_mask` and :func:`fold_mask` work there,
  as ink and folds are hundreds of um across;
- the bands of analysis pixels (about 1 um/px) that the loader reads anyway: focus is only
  visible at that resolution, so :class:`FocusAccumulator` (or :func:`focus_scores`) reduces each
  band to one sharpness score per block of ``cell x cell`` tissue-picture pixels, and
  :func:`blur_mask` decides against the slide's own sharp tissue.

:func:`detect_artefacts` combines them into one uint8 label image on the tissue picture's grid
(:data:`QC_NONE` .. :data:`QC_OTHER`), pen before fold before blur before other.

Colours are handled as optical density (OD, Beer-Lambert: ``-log10(I / I_glass)`` per channel),
in which stains and ink add. H&E absorbs most in green: on the real slides measured (CMU-1,
TCGA-CR-7395, GlaS) the tissue's ratios ``OD_red / OD_green`` and ``OD_blue / OD_green`` lie in
0.07-1.1 and 0.19-0.92 (0.1-99.9 percentiles). Marker inks sit elsewhere: blue ink absorbs red
(ratios about 1.6 and 0.3), green ink absorbs red and blue (2.3, 1.4), red ink green and blue
(0.1, 1.0), black ink all three alike (about 1, 0.9) and much more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from wsiseg.slide.tissue import drop_small_objects

Mask = npt.NDArray[np.bool_]
RGB = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float32]

QC_NONE, QC_PEN, QC_BLUR, QC_FOLD, QC_OTHER = 0, 1, 2, 3, 4
#: Label names, by value (the ``labels/qc`` image's values).
QC_NAMES: dict[int, str] = {QC_NONE: "none", QC_PEN: "pen", QC_BLUR: "out of focus",
                            QC_FOLD: "fold or dark", QC_OTHER: "other artefact"}
#: Display colours, RGB: none of the map's class colours (black, green, purple, yellow).
QC_COLOURS: dict[int, tuple[int, int, int]] = {
    QC_NONE: (0, 0, 0), QC_PEN: (0, 200, 255), QC_BLUR: (255, 120, 0),
    QC_FOLD: (220, 0, 0), QC_OTHER: (255, 0, 200)}

#: Pixels processed at a time: float temporaries of some tens of MB whatever the picture's size.
CHUNK_PIXELS = 1 << 20

# -- pen ------------------------------------------------------------------------------------------
#: Least total OD (sum of the three channels) of a pixel taken for ink: fainter is glass or
#: pale tissue, whose colour ratios are mostly noise.
PEN_MIN_OD = 0.3
#: Ink rules on r = OD_red / OD_green and b = OD_blue / OD_green (see the module's docstring).
PEN_BLUE_MIN_R, PEN_BLUE_MAX_B = 1.15, 0.5
PEN_GREEN_MIN_RB = 1.1
PEN_RED_MIN_B, PEN_RED_MAX_R = 0.95, 0.5
#: Black ink from total OD 1.0 (a translucent stroke): tissue of black's ratios reaches 1.5 on
#: CMU-1 only in specks that the width filter drops.
PEN_BLACK_MIN_RB, PEN_BLACK_MIN_OD = 0.75, 1.0
#: Ink over tissue: least distance (OD) of a pixel's OD, averaged over :data:`PEN_RESIDUAL_UM`,
#: from the plane of the slide's stains, and least multiple of the spread of the tissue's
#: distances to it. On the clean real slides measured (CMU-1, TCGA-CR-7395, GlaS at 1.9-4 um/px)
#: 99.9% of tissue lies within 0.08-0.14 of the plane unsmoothed and the spread is 0.006-0.02; ink
#: at full strength lies 0.13-0.54 from it.
PEN_MIN_RESIDUAL = 0.06
PEN_RESIDUAL_MADS = 6.0
PEN_RESIDUAL_UM = 20.0
#: Ink found is followed over the tissue it runs on into, down to this share of the distance
#: above: a mark crossing from the glass onto tissue goes on, fainter against the stain plane
#: where the plane fitted leans towards its colour (blue marks over CMU-1's tissue: IoU 0.28-0.38
#: without, 0.93-0.94 with). A clean slide has no ink to follow.
PEN_FOLLOW_SHARE = 0.5
#: Least tissue pixels to fit the stain plane on, and most pixels sampled for it.
PEN_MIN_TISSUE_PX = 500
PEN_PLANE_SAMPLES = 20_000
#: The share of the tissue's pixels the stain plane is fitted to (:func:`stain_plane`): ink may
#: cover up to about that share of the tissue.
PEN_PLANE_SHARE = 0.5
#: The normal of the plane of Ruifrok & Johnston's haematoxylin (0.65, 0.70, 0.29) and eosin
#: (0.07, 0.99, 0.11) vectors: a starting point of the fit.
STANDARD_HE_NORMAL = np.array([-0.33, -0.08, 0.94], dtype=np.float32)
#: Ink specks smaller than this (um across) are dropped: pen strokes are 0.3-2 mm wide, but the
#: glass they cross between pieces of tissue may be a few tens of um.
PEN_MIN_WIDTH_UM = 20.0
#: Area (mm^2) under which a piece of ink is dropped.
PEN_MIN_AREA_MM2 = 0.01

# -- folds ----------------------------------------------------------------------------------------
#: A fold is two layers of tissue: its OD is about twice the tissue's around it. Threshold, as
#: a multiple of the local reference (:func:`fold_mask`), after averaging over
#: :data:`FOLD_SCALE_UM`. On the tissue picture the pipeline uses (about 10 um/px) the dense
#: epithelium of CMU-1 reaches 1.74-1.76 times the reference (1.61 at 4 um/px; TCGA-CR-7395
#: 1.34, GlaS 1.23): at 1.7 it flagged a quarter of that clean slide's tissue.
FOLD_OD_RATIO = 1.85
#: A fold's pixels around those found, down to this multiple (:func:`fold_mask`).
FOLD_EDGE_RATIO = 1.4
FOLD_SCALE_UM = 80.0
#: The local reference: a low percentile (robust when a fold covers much of the context; taken
#: again without the blocks over :data:`FOLD_OD_RATIO` times it) of
#: the mean OD of blocks at least :data:`FOLD_MIN_BLOCK_TISSUE` tissue, within
#: :data:`FOLD_CONTEXT_UM` of a pixel.
FOLD_BLOCK_UM = 100.0
FOLD_CONTEXT_UM = 1000.0
FOLD_REFERENCE_PERCENTILE = 30.0
FOLD_MIN_BLOCK_TISSUE = 0.5
FOLD_MIN_CONTEXT_BLOCKS = 6
#: Rounds of the reference taken again without the blocks over :data:`FOLD_OD_RATIO` times it.
FOLD_REFERENCE_ROUNDS = 2
#: Total OD under which a pixel inside the tissue mask is glass, splitting pieces of tissue.
FOLD_GLASS_OD = 0.08
#: Folds are hundreds of um across: narrower pieces (dense stroma, clusters of nuclei) and
#: smaller ones are dropped.
FOLD_MIN_WIDTH_UM = 100.0
FOLD_MIN_AREA_MM2 = 0.03

# -- focus ----------------------------------------------------------------------------------------
#: Block side, um, over which one focus score is computed (:func:`focus_cell`).
FOCUS_BLOCK_UM = 128.0
#: Gaussian scales (pixels of the analysis band) splitting detail into fine and coarse bands:
#: at 0.7 a defocus of radius 1.5 px removes most of the fine band (at 1, GlaS at 0.62 um/px
#: scored 0.15-0.29 IoU for it, 0.58-0.76 at 0.7, with TCGA-CR-7395 still clean).
FOCUS_FINE_SIGMA, FOCUS_COARSE_SIGMA = 0.7, 3.0
#: A block is out of focus when its score is under this share of the slide's sharp tissue
#: (the :data:`FOCUS_REFERENCE_PERCENTILE` of its tissue blocks' scores).
#: At 0.4 the frozen section TCGA-CR-7395 has 1.9% of its tissue blocks under it, at 0.33 0.6%,
#: at 0.3 none; a uniformly soft
#: slide has a low reference too, so nothing of it falls under the ratio.
BLUR_RATIO = 0.3
FOCUS_REFERENCE_PERCENTILE = 90.0
#: Least tissue fraction of a block, least coarse detail energy (OD^2: blocks of fat, lumen or
#: smooth stroma have too little texture to tell focus) and least scored tissue blocks on a
#: slide: under it (two GlaS images, 14 blocks, scored 0-0.33 IoU) nothing is decided.
BLUR_MIN_TISSUE = 0.5
FOCUS_MIN_ENERGY = 1e-6
BLUR_MIN_BLOCKS = 20


def glass_rgb(rgb: RGB) -> npt.NDArray[np.float32]:
    """The glass's colour: per channel, the 99th percentile of the image (its brightest pixels
    are glass, or the palest tissue on a picture without glass), at least 200."""
    out = np.empty(3, dtype=np.float32)
    for c in range(3):
        hist = np.zeros(256, dtype=np.int64)
        for part in _chunks(rgb):
            hist += np.bincount(part[..., c].ravel(), minlength=256)
        cum = np.cumsum(hist)
        out[c] = max(200.0, float(np.searchsorted(cum, 0.99 * cum[-1])))
    return out


def optical_density(rgb: RGB, glass: npt.NDArray[np.float32] | None = None) -> Floats:
    """Per-channel optical density, float32 (H, W, 3), 0 at the glass's colour (never below)."""
    if glass is None:
        glass = glass_rgb(rgb)
    lut = np.stack([np.maximum(0.0, np.log10(glass[c] / np.maximum(np.arange(256), 1.0)))
                    for c in range(3)], axis=-1).astype(np.float32)
    return np.stack([lut[rgb[..., c], c] for c in range(3)], axis=-1)


def _chunks(rgb: RGB, halo: int = 0) -> list[RGB]:
    return [part for _, _, part in _row_chunks(rgb, halo)]


def _row_chunks(rgb: RGB, halo: int = 0) -> list[tuple[int, int, RGB]]:
    """(y, rows, those rows with ``halo`` rows of context each side) by chunks of rows."""
    step = max(1, CHUNK_PIXELS // max(1, rgb.shape[1]))
    out = []
    for y in range(0, rgb.shape[0], step):
        rows = min(step, rgb.shape[0] - y)
        out.append((y, rows, rgb[max(0, y - halo) : y + rows + halo]))
    return out


def _ink(od: Floats, min_od: float) -> Mask:
    """Pixels whose OD looks like marker ink (the rules of the module's docstring)."""
    r_, g_, b_ = od[..., 0], od[..., 1], od[..., 2]
    total = r_ + g_ + b_
    g = np.maximum(g_, 1e-3)
    r, b = r_ / g, b_ / g
    blue = (r >= PEN_BLUE_MIN_R) & (b <= PEN_BLUE_MAX_B)
    green = (r >= PEN_GREEN_MIN_RB) & (b >= PEN_GREEN_MIN_RB)
    red = (b >= PEN_RED_MIN_B) & (r <= PEN_RED_MAX_R)
    black = (r >= PEN_BLACK_MIN_RB) & (b >= PEN_BLACK_MIN_RB) & (total >= PEN_BLACK_MIN_OD)
    ink: Mask = (total >= min_od) & (blue | green | red | black)
    return ink


def pen_mask(rgb: RGB, mpp: float, tissue: Mask | None = None) -> Mask:
    """Marker ink (blue, green, red, black) on a tissue picture of ``mpp`` um/px, over glass and
    over tissue.

    A pixel is ink when its OD (smoothed over 3 x 3 pixels) has an ink's colour ratios, or, on
    ``tissue``, when its OD leaves the plane of the slide's own stains (:func:`stain_plane`) by
    at least :data:`PEN_MIN_RESIDUAL` and :data:`PEN_RESIDUAL_MADS` times the spread of the
    tissue's distances to it (smoothed over :data:`PEN_RESIDUAL_UM`). Specks narrower than
    :data:`PEN_MIN_WIDTH_UM` and pieces under :data:`PEN_MIN_AREA_MM2` are dropped; the ink
    left is followed over the tissue it runs into down to :data:`PEN_FOLLOW_SHARE` of that
    distance. Works by row chunks.
    """
    glass = glass_rgb(rgb)
    plane = None
    if tissue is not None and np.count_nonzero(tissue) >= PEN_MIN_TISSUE_PX:
        plane = stain_plane(rgb, tissue, glass)
    size = max(3, 2 * round(PEN_RESIDUAL_UM / mpp / 2) + 1)
    halo = size // 2
    out = np.zeros(rgb.shape[:2], dtype=bool)
    faint = np.zeros(rgb.shape[:2], dtype=bool)
    for y, rows, part in _row_chunks(rgb, halo=halo):
        od = optical_density(part, glass)
        above = y - max(0, y - halo)
        smooth = ndimage.uniform_filter(od, size=(3, 3, 1), mode="nearest")
        ink = _ink(smooth, PEN_MIN_OD)
        if plane is not None and tissue is not None:
            normal, centre, spread = plane
            residual = np.abs(ndimage.uniform_filter(od @ normal, size, mode="nearest") - centre)
            least = max(PEN_MIN_RESIDUAL, PEN_RESIDUAL_MADS * spread)
            lo = max(0, y - halo)
            on = (smooth.sum(axis=-1) >= PEN_MIN_OD) & tissue[lo : lo + part.shape[0]]
            ink |= on & (residual >= least)
            faint[y : y + rows] = (on & (residual >= PEN_FOLLOW_SHARE * least))[
                above : above + rows]
        out[y : y + rows] = ink[above : above + rows]
    radius = int(PEN_MIN_WIDTH_UM / mpp / 2)
    if radius >= 1:
        out = ndimage.binary_opening(out, structure=_disk(radius))
    out = drop_small_objects(out, PEN_MIN_AREA_MM2 * 1e6 / mpp**2)
    if faint.any() and out.any():
        followed: Mask = ndimage.binary_propagation(out, mask=out | faint)
        return followed
    return out


def stain_plane(rgb: RGB, tissue: Mask, glass: npt.NDArray[np.float32] | None = None
                ) -> tuple[Floats, float, float]:
    """The plane of the slide's own stains in OD space, and how far its tissue lies from it.

    H&E ODs are sums of a haematoxylin and an eosin vector (Ruifrok & Johnston), so they lie
    in a plane through the origin, spanned by the two main directions of the tissue's ODs (their
    singular vectors, as in Macenko's estimate). Ink adds a component off it, and may cover
    much of the tissue: the plane is the one that fits best the :data:`PEN_PLANE_SHARE` of the
    pixels (not ink by colour) closest to it (least trimmed squares, refined from the plane of
    all of them and from the standard H&E plane). Returns the plane's unit normal (float32, 3),
    the median and the spread (1.4826 MAD) of those pixels' signed distances to it.
    """
    if glass is None:
        glass = glass_rgb(rgb)
    ys, xs = np.nonzero(tissue)
    step = max(1, len(ys) // PEN_PLANE_SAMPLES)
    od32 = optical_density(rgb[ys[::step], xs[::step]][None], glass)
    od = od32[0][(od32[0].sum(axis=-1) >= PEN_MIN_OD) & ~_ink(od32, PEN_MIN_OD)[0]]
    od = od.astype(np.float64)
    if len(od) < 3:
        return STANDARD_HE_NORMAL.copy(), 0.0, 0.0
    keep_n = max(3, int(PEN_PLANE_SHARE * len(od)))
    starts = [STANDARD_HE_NORMAL.astype(np.float64)]
    _, _, vt = np.linalg.svd(od, full_matrices=False)
    starts.append(np.cross(vt[0], vt[1]))
    best: tuple[float, npt.NDArray[np.float64]] | None = None
    for normal in starts:
        for _ in range(8):
            normal = normal / max(float(np.linalg.norm(normal)), 1e-12)
            closest = np.argsort(np.abs(od @ normal))[:keep_n]
            _, _, vt = np.linalg.svd(od[closest], full_matrices=False)
            normal = np.cross(vt[0], vt[1])
        normal = normal / max(float(np.linalg.norm(normal)), 1e-12)
        cost = float(np.sort((od @ normal) ** 2)[:keep_n].sum())
        if best is None or cost < best[0]:
            best = (cost, normal)
    assert best is not None
    normal = best[1] * (1.0 if best[1][2] >= 0 else -1.0)
    distance = od @ normal
    closest = np.sort(np.abs(distance))[:keep_n]
    centre = float(np.median(distance[np.abs(distance) <= closest[-1]]))
    # The spread: 0.74 times the largest distance kept (for a normal spread with half the
    # pixels kept, the largest is 0.67 sigma: so about half a sigma).
    spread = 0.74 * float(closest[-1])
    return normal.astype(np.float32), centre, spread


def tissue_without_pen(tissue: Mask, pen: Mask) -> Mask:
    """``tissue`` without ink: ink is saturated, so a saturation threshold takes it for tissue.
    Ink wholly enclosed by tissue (a stroke inside it) stays tissue; ink that reaches the glass
    is not tissue, over the glass and (conservatively: it is unusable) over the tissue."""
    if not pen.any():
        return tissue.copy()
    rest = tissue & ~pen
    enclosed: Mask = ndimage.binary_fill_holes(rest) & pen
    out: Mask = rest | enclosed
    return out


# -- folds ----------------------------------------------------------------------------------------
def fold_mask(rgb: RGB, tissue: Mask, mpp: float, pen: Mask | None = None) -> Mask:
    """Folds and dark overlaps in a tissue picture of ``mpp`` um/px.

    A fold is two layers of the same tissue, so its OD is about twice its surroundings'. Each
    pixel's total OD, averaged over the tissue within :data:`FOLD_SCALE_UM`, is set against the
    tissue around it: the :data:`FOLD_REFERENCE_PERCENTILE` of the mean ODs of the tissue
    blocks (:data:`FOLD_BLOCK_UM` a side) within :data:`FOLD_CONTEXT_UM` (the whole slide's
    when fewer than :data:`FOLD_MIN_CONTEXT_BLOCKS` are; a piece of tissue smaller than that
    is not judged). A fold is at least
    :data:`FOLD_OD_RATIO` times that. Pieces narrower than :data:`FOLD_MIN_WIDTH_UM` or under
    :data:`FOLD_MIN_AREA_MM2` are dropped.
    """
    usable = tissue & ~pen if pen is not None else tissue
    out = np.zeros(tissue.shape, dtype=bool)
    if not usable.any():
        return out
    glass = glass_rgb(rgb)
    total = np.empty(tissue.shape, dtype=np.float32)
    for y, rows, part in _row_chunks(rgb):
        total[y : y + rows] = optical_density(part, glass).sum(axis=-1)
    total *= usable
    # Normalised convolution over tissue only: glass around the edge would dilute a fold that
    # reaches it, and a fold's own edge would leak onto the glass.
    size = max(1, round(FOLD_SCALE_UM / mpp))
    weight = ndimage.uniform_filter(usable.astype(np.float32), size)
    smooth = ndimage.uniform_filter(total, size)
    smooth /= np.maximum(weight, 1e-6)
    reference = _local_reference(total, usable, mpp)
    # Hysteresis: a fold is found where it is clearly darker (pieces wide and large enough),
    # then followed out to its edges, which averaging softens (NaN, no block of tissue: never).
    seeds = usable & (smooth >= FOLD_OD_RATIO * reference)
    radius = int(FOLD_MIN_WIDTH_UM / mpp / 2)
    if radius >= 1:
        seeds = ndimage.binary_opening(seeds, structure=_disk(radius))
    seeds = drop_small_objects(seeds, FOLD_MIN_AREA_MM2 * 1e6 / mpp**2)
    if not seeds.any():
        return out
    fold: Mask = ndimage.binary_propagation(
        seeds, mask=usable & (smooth >= FOLD_EDGE_RATIO * reference))
    return drop_small_objects(fold, FOLD_MIN_AREA_MM2 * 1e6 / mpp**2)


def _local_reference(total: Floats, usable: Mask, mpp: float) -> Floats:
    """Per pixel of ``usable``, the OD of the tissue around it (:func:`fold_mask`): from a grid
    of blocks, each piece of tissue on its own (pieces of a slide may be stained unlike)."""
    cell = max(1, round(FOLD_BLOCK_UM / mpp))
    # NaN (never a fold) on a piece too small for a reference of its own: another piece's
    # tissue may be stained unlike it, so nothing is decided there.
    out: Floats = np.full(total.shape, np.nan, dtype=np.float32)
    # Pieces split by glass (the tissue mask closes narrow gaps between them).
    pieces, _ = ndimage.label(usable & (total >= FOLD_GLASS_OD), structure=np.ones((3, 3), bool))
    least = FOLD_MIN_CONTEXT_BLOCKS * FOLD_MIN_BLOCK_TISSUE * cell * cell
    for k, box in enumerate(ndimage.find_objects(pieces), start=1):
        if box is None:
            continue
        # The piece's box, widened to whole blocks of the slide's grid.
        y0, x0 = box[0].start // cell * cell, box[1].start // cell * cell
        area = (slice(y0, box[0].stop), slice(x0, box[1].stop))
        piece = pieces[area] == k
        if np.count_nonzero(piece) < least:
            continue
        local = _block_reference(total[area] * piece, piece, cell, local=True)
        if isinstance(local, np.ndarray):
            out[area][piece] = local[piece]
    return out


def _block_reference(total: Floats, usable: Mask, cell: int, local: bool = False
                     ) -> Floats | float | None:
    """The reference of :func:`fold_mask` over ``usable``: one number, or with ``local`` one a
    pixel (from the blocks within :data:`FOLD_CONTEXT_UM`; the whole area's where fewer than
    :data:`FOLD_MIN_CONTEXT_BLOCKS` are). None without a block of tissue."""
    counts = _block_sums(usable.astype(np.float32), cell)
    means = _block_sums(total, cell) / np.maximum(counts, 1.0)
    valid = counts >= FOLD_MIN_BLOCK_TISSUE * cell * cell
    if not valid.any():
        return None
    grid = np.where(valid, means, np.nan).astype(np.float32)
    overall = float(np.percentile(grid[valid], FOLD_REFERENCE_PERCENTILE))
    if not local:
        return overall
    ref = _context_reference(grid, overall)
    for _ in range(FOLD_REFERENCE_ROUNDS):
        # A fold that fills much of its context raises the reference with it: its blocks
        # (those over the seed ratio) are left out, and the reference taken again.
        unfolded = np.where(grid < FOLD_OD_RATIO * ref, grid, np.nan).astype(np.float32)
        kept = np.isfinite(unfolded)
        if kept.all() or not kept.any():
            break
        ref = _context_reference(
            unfolded, float(np.percentile(unfolded[kept], FOLD_REFERENCE_PERCENTILE)))
    big = np.repeat(np.repeat(ref, cell, axis=0), cell, axis=1)
    out: Floats = big[: total.shape[0], : total.shape[1]]
    return out


def _context_reference(grid: Floats, overall: float) -> Floats:
    """Per block of ``grid`` (block mean ODs, NaN: no tissue), the
    :data:`FOLD_REFERENCE_PERCENTILE` of the blocks within :data:`FOLD_CONTEXT_UM`
    (``overall`` where fewer than :data:`FOLD_MIN_CONTEXT_BLOCKS` are)."""
    ref = np.full(grid.shape, overall, dtype=np.float32)
    reach = max(1, round(FOLD_CONTEXT_UM / FOLD_BLOCK_UM))
    padded = np.pad(grid, reach, constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (2 * reach + 1,) * 2)
    for r in range(grid.shape[0]):  # a row of windows at a time: bounded memory
        row = windows[r].reshape(grid.shape[1], -1)
        enough = np.count_nonzero(np.isfinite(row), axis=1) >= FOLD_MIN_CONTEXT_BLOCKS
        if enough.any():
            ref[r, enough] = nanpercentile_rows(row[enough], FOLD_REFERENCE_PERCENTILE)
    return ref


def nanpercentile_rows(rows: Floats, q: float) -> Floats:
    """``np.nanpercentile(rows, q, axis=1)`` (linear interpolation) of rows that each hold a
    finite value, in one sort: numpy's own takes the rows one by one once any holds a NaN."""
    ordered = np.sort(rows, axis=1)  # NaN sorts last
    count = np.count_nonzero(np.isfinite(ordered), axis=1)
    position = (count - 1) * (q / 100.0)
    below = np.floor(position).astype(np.intp)
    above = np.minimum(below + 1, count - 1)
    picked = np.arange(len(rows))
    a, b = ordered[picked, below], ordered[picked, above]
    t = position - below
    # numpy's lerp, in the data's own type: from the nearer end, so that t = 1 gives b.
    step = b - a
    out = np.where(t >= 0.5, b - step * (1 - t).astype(rows.dtype),
                   a + step * t.astype(rows.dtype))
    result: Floats = out.astype(rows.dtype)
    return result


# -- focus ----------------------------------------------------------------------------------------
def focus_cell(factor: int, analysis_mpp: float) -> int:
    """Tissue-picture pixels a side of a focus block: ``cell * factor`` analysis pixels are
    about :data:`FOCUS_BLOCK_UM` um."""
    return max(1, round(FOCUS_BLOCK_UM / (factor * analysis_mpp)))


def _stain(rgb: RGB) -> Floats:
    """Stain density for focus: the mean OD of the three channels against white (255); the
    glass's exact colour does not matter, as only detail (differences) is used."""
    # A third of each channel's OD, looked up and summed channel by channel: four times faster
    # than indexing the (h, w, 3) image at once and averaging.
    lut = (-np.log10(np.maximum(np.arange(256, dtype=np.float32), 1.0) / 255.0) / 3).astype(
        np.float32)
    mean: Floats = lut.take(rgb[..., 0])
    mean += lut.take(rgb[..., 1])
    mean += lut.take(rgb[..., 2])
    return mean


def focus_energies(band: RGB, block: int) -> tuple[Floats, Floats]:
    """Per block of ``block x block`` pixels of an analysis-resolution ``band`` (uint8 RGB, its
    blocks from its top-left corner; a last, partial block row or column counts what it has):
    the summed squares of its fine detail (stain OD minus its Gaussian blur at
    :data:`FOCUS_FINE_SIGMA`) and of its coarse detail (between the blurs at
    :data:`FOCUS_FINE_SIGMA` and :data:`FOCUS_COARSE_SIGMA`). Defocus removes fine detail first,
    so their ratio measures sharpness whatever the stain's contrast. Works by chunks of rows."""
    h, w = band.shape[:2]
    rows, cols = -(-h // block), -(-w // block)
    fine = np.zeros((rows, cols), dtype=np.float32)
    coarse = np.zeros((rows, cols), dtype=np.float32)
    halo = int(4 * FOCUS_COARSE_SIGMA) + 1
    step = max(block, (CHUNK_PIXELS // max(1, w)) // block * block)
    for y in range(0, h, step):
        top, bottom = max(0, y - halo), min(h, y + step + halo)
        od = _stain(band[top:bottom])
        g1 = ndimage.gaussian_filter(od, FOCUS_FINE_SIGMA, mode="nearest")
        g3 = ndimage.gaussian_filter(od, FOCUS_COARSE_SIGMA, mode="nearest")
        n = min(step, h - y)
        f2 = ((od - g1) ** 2)[y - top : y - top + n]
        c2 = ((g1 - g3) ** 2)[y - top : y - top + n]
        r0 = y // block
        fine[r0 : r0 + -(-n // block)] += _block_sums(f2, block)
        coarse[r0 : r0 + -(-n // block)] += _block_sums(c2, block)
    return fine, coarse


def _block_sums(a: Floats, block: int) -> Floats:
    h, w = a.shape
    ph, pw = -(-h // block) * block - h, -(-w // block) * block - w
    if ph or pw:
        a = np.pad(a, ((0, ph), (0, pw)))
    sums: Floats = a.reshape(a.shape[0] // block, block, -1, block).sum(axis=(1, 3))
    return sums


def focus_scores(rgb: RGB, block: int) -> Floats:
    """Sharpness per ``block x block`` block of an analysis-resolution image: fine over coarse
    detail energy (:func:`focus_energies`), NaN where there is too little detail to tell
    (coarse energy under :data:`FOCUS_MIN_ENERGY` a pixel)."""
    fine, coarse = focus_energies(rgb, block)
    return _scores(fine, coarse, block * block)


def _scores(fine: Floats, coarse: Floats, pixels: int) -> Floats:
    ok = coarse >= FOCUS_MIN_ENERGY * pixels
    out: Floats = np.full(fine.shape, np.nan, dtype=np.float32)
    out[ok] = fine[ok] / coarse[ok]
    return out


@dataclass(frozen=True)
class PlacedEnergies:
    """Focus energies summed per block of the grid, its first block at ``(row, col)``."""

    row: int
    col: int
    fine: Floats
    coarse: Floats


@dataclass
class FocusAccumulator:
    """Focus scores of a whole slide from its analysis-resolution bands, in any order.

    ``add(band, y, x)`` takes uint8 RGB pixels whose top-left is analysis pixel ``(x, y)``
    (any size; pieces need not align with blocks: a block's energies are summed over the pieces
    that cut it, each piece filtered with the context it holds); ``scores()`` gives the float32
    (rows, cols) sharpness grid, one per ``block`` pixels, NaN on blocks never added. Holds
    two floats a block, whatever the slide's size. Adding each pixel once, as one piece, gives
    :func:`focus_scores` of the whole image.
    """

    width: int
    height: int
    block: int

    def __post_init__(self) -> None:
        shape = (-(-self.height // self.block), -(-self.width // self.block))
        self._fine = np.zeros(shape, dtype=np.float32)
        self._coarse = np.zeros(shape, dtype=np.float32)

    def add(self, band: RGB, y: int, x: int = 0,
            own: tuple[int, int, int, int] | None = None) -> None:
        """Add the energies of ``band``, whose top-left pixel is analysis pixel ``(x, y)``.

        ``own`` (top, bottom, left, right, in the band's pixels) counts only those of its
        pixels, the rest being context for the filters: pieces cut from larger reads then sum
        to the energies of the whole, as long as each holds its filters' reach
        (:data:`FOCUS_CONTEXT` pixels) around what it counts.
        """
        placed = self.energies(band, y, x, own)
        if placed is not None:
            self.add_energies(placed)

    def energies(self, band: RGB, y: int, x: int = 0,
                 own: tuple[int, int, int, int] | None = None) -> PlacedEnergies | None:
        """What :meth:`add` adds for these arguments, found without adding it (pure: pieces
        may be found on several threads at once, then added in a fixed order, so that the
        sums do not depend on which thread finished first). None: no pixel to count."""
        top, bottom, left, right = own or (0, band.shape[0], 0, band.shape[1])
        if bottom <= top or right <= left:
            return None
        b = self.block
        fine, coarse = _placed_energies(band, b, (y + top) % b, (x + left) % b,
                                        (top, bottom, left, right))
        return PlacedEnergies((y + top) // b, (x + left) // b, fine, coarse)

    def add_energies(self, placed: PlacedEnergies) -> None:
        """Add energies found by :meth:`energies`."""
        r0, c0 = placed.row, placed.col
        rows, cols = placed.fine.shape
        self._fine[r0 : r0 + rows, c0 : c0 + cols] += placed.fine
        self._coarse[r0 : r0 + rows, c0 : c0 + cols] += placed.coarse

    def scores(self) -> Floats:
        """The sharpness grid (:func:`focus_scores`)."""
        return _scores(self._fine, self._coarse, self.block * self.block)


#: Pixels around a pixel that its focus energies depend on (the coarse blur's reach, 4 sigma).
FOCUS_CONTEXT = int(4 * FOCUS_COARSE_SIGMA) + 1


def _placed_energies(band: RGB, block: int, dy: int, dx: int, own: tuple[int, int, int, int]
                     ) -> tuple[Floats, Floats]:
    """:func:`focus_energies` of the ``own`` pixels (top, bottom, left, right) of ``band``, the
    first of which lies ``(dy, dx)`` pixels into its block: sums per block of the grid they fall
    on (its first block row and column partial). The rest of ``band`` is context for the
    filters; rows are filtered by chunks with a halo, as if whole."""
    top, bottom, left, right = own
    h, w = bottom - top, right - left
    fine = np.zeros((-(-(dy + h) // block), -(-(dx + w) // block)), dtype=np.float32)
    coarse = np.zeros_like(fine)
    step = max(block, (CHUNK_PIXELS // max(1, band.shape[1])) // block * block)
    pos = 0
    while pos < h:
        end = min(h, (dy + pos) // block * block + step - dy)  # chunks end on block edges
        lo = max(0, top + pos - FOCUS_CONTEXT)
        hi = min(band.shape[0], top + end + FOCUS_CONTEXT)
        od = _stain(band[lo:hi])
        g1 = ndimage.gaussian_filter(od, FOCUS_FINE_SIGMA, mode="nearest")
        g3 = ndimage.gaussian_filter(od, FOCUS_COARSE_SIGMA, mode="nearest")
        rows = slice(top + pos - lo, top + end - lo)
        lead = (((dy + pos) % block, 0), (dx, 0))
        r = (dy + pos) // block
        f = _block_sums(np.pad(((od - g1) ** 2)[rows, left:right], lead), block)
        c = _block_sums(np.pad(((g1 - g3) ** 2)[rows, left:right], lead), block)
        fine[r : r + f.shape[0]] += f
        coarse[r : r + c.shape[0]] += c
        pos = end
    return fine, coarse


def block_fractions(mask: Mask, cell: int) -> Floats:
    """Fraction of ``mask`` in each ``cell x cell`` block (partial blocks: of the pixels they
    hold), float32, the focus grid's shape."""
    sums = _block_sums(mask.astype(np.float32), cell)
    counts = _block_sums(np.ones(mask.shape, dtype=np.float32), cell)
    out: Floats = sums / counts
    return out


def blur_mask(scores: Floats, tissue_on_blocks: Floats) -> Mask:
    """Out-of-focus blocks: tissue blocks (fraction at least :data:`BLUR_MIN_TISSUE`) whose
    score is under :data:`BLUR_RATIO` times the slide's sharp tissue (the
    :data:`FOCUS_REFERENCE_PERCENTILE` of its tissue blocks' scores: robust while most of the
    tissue is in focus). None flagged below :data:`BLUR_MIN_BLOCKS` scored tissue blocks."""
    valid = (tissue_on_blocks >= BLUR_MIN_TISSUE) & np.isfinite(scores)
    out = np.zeros(scores.shape, dtype=bool)
    if np.count_nonzero(valid) < BLUR_MIN_BLOCKS:
        return out
    values = scores[valid]
    reference = float(np.percentile(values, FOCUS_REFERENCE_PERCENTILE))
    out[valid] = values < BLUR_RATIO * reference
    return out


def expand_blocks(blocks: Mask, cell: int, shape: tuple[int, int]) -> Mask:
    """A block grid (``cell x cell`` pixels a block) on the tissue picture's ``shape``."""
    big = np.repeat(np.repeat(blocks, cell, axis=0), cell, axis=1)
    out: Mask = big[: shape[0], : shape[1]]
    return out


# -- together -------------------------------------------------------------------------------------
def detect_artefacts(rgb: RGB, tissue: Mask, mpp: float, blur: Mask | None = None,
                     other: Mask | None = None) -> npt.NDArray[np.uint8]:
    """The uint8 label image (:data:`QC_NAMES`) of a tissue picture of ``mpp`` um/px and its
    ``tissue`` mask: pen, then folds, then ``blur`` (blocks from :func:`blur_mask`, expanded by
    :func:`expand_blocks`), then ``other``; a pixel takes the first that holds it. Pen is
    labelled over glass too; the others only on tissue (ink over glass taken out first:
    :func:`tissue_without_pen`)."""
    pen = pen_mask(rgb, mpp, tissue)
    clean = tissue_without_pen(tissue, pen) & ~pen
    fold = fold_mask(rgb, clean, mpp)
    labels = np.zeros(tissue.shape, dtype=np.uint8)
    if other is not None:
        labels[other & clean] = QC_OTHER
    if blur is not None:
        labels[blur & clean] = QC_BLUR
    labels[fold] = QC_FOLD
    labels[pen] = QC_PEN
    return labels


def artefact_areas(labels: npt.NDArray[np.uint8], mpp: float) -> dict[str, float]:
    """Area in mm^2 of each artefact (:data:`QC_NAMES`, without "none") in a label image of
    ``mpp`` um/px."""
    counts = np.bincount(labels.ravel(), minlength=len(QC_NAMES))
    return {QC_NAMES[v]: float(counts[v]) * mpp * mpp / 1e6 for v in QC_NAMES if v != QC_NONE}


def _disk(radius: int) -> Mask:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disk: Mask = xx**2 + yy**2 <= radius**2
    return disk
