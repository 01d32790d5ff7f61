"""Leica SCN: :func:`write_scn`, an image placed in a larger scan (``openslide.bounds-*``)."""

from __future__ import annotations

import base64
import itertools
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tifffile

from wsiseg.slide.svs_writer import area_downsample, check_common, check_downsamples, check_rgb
from wsiseg.testing.tissue import GLASS_RGB

#: The XML namespace by which OpenSlide detects a Leica SCN, and the device model written.
LEICA_SCN_XMLNS = "http://www.leica-microsystems.com/scn/2010/10/01"
LEICA_DEVICE = "WSISEG-SYNTHETIC"
# Largest side of the macro picture of the whole scan stored in a Leica SCN.
_MACRO_MAX = 512


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


def _leica_macro(
    rgb: np.ndarray, offset: tuple[int, int], scan_size: tuple[int, int]
) -> np.ndarray:
    """The macro picture of the whole scan: glass with ``rgb`` at ``offset``, downsampled by
    the smallest power of two that brings it within ``_MACRO_MAX`` pixels a side."""
    ox, oy = offset
    scan_w, scan_h = scan_size
    f = 1
    while max(scan_w, scan_h) > _MACRO_MAX * f:
        f *= 2
    macro = np.empty((math.ceil(scan_h / f), math.ceil(scan_w / f), 3), dtype=np.uint8)
    macro[:] = np.asarray(GLASS_RGB, dtype=np.uint8)
    small = area_downsample(rgb, f)
    mh, mw = macro.shape[:2]
    small = small[: mh - oy // f, : mw - ox // f]
    macro[oy // f : oy // f + small.shape[0], ox // f : ox // f + small.shape[1]] = small
    return macro


def _leica_xml(
    name: str,
    collection: tuple[int, int],
    view: tuple[int, int, int, int],
    macro_size: tuple[int, int],
    level_sizes: Sequence[tuple[int, int]],
    mpp: float,
) -> str:
    """The SCN ImageDescription: ``collection`` is the scan size (sizeX, sizeY) and ``view``
    the main image's (offsetX, offsetY, sizeX, sizeY), in nm; ``macro_size`` and
    ``level_sizes`` are (width, height) in pixels, the macro in TIFF directory 0 and the main
    image's levels in the directories after it."""
    collection_w, collection_h = collection
    mw, mh = macro_size
    objective = f"{round(10.0 / mpp):d}"
    barcode = base64.b64encode(b"WSISEG-SYNTHETIC").decode("ascii")
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<scn xmlns="{LEICA_SCN_XMLNS}">'
        f'<collection name="{name}" uuid="urn:uuid:wsiseg-synthetic" '
        f'sizeX="{collection_w}" sizeY="{collection_h}">'
        f"<barcode>{barcode}</barcode>"
        + _leica_image_xml("macro", (0, 0, collection_w, collection_h), [(mw, mh, 0)], "1")
        + _leica_image_xml(
            "main", view, [(w, h, 1 + k) for k, (w, h) in enumerate(level_sizes)], objective
        )
        + "</collection></scn>"
    )


def write_scn(
    path: str | os.PathLike[str],
    rgb_level0: npt.NDArray[np.uint8],
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
    rgb = check_rgb(rgb_level0)
    codec = check_common(tile, compression, quality)
    ds = check_downsamples(downsamples)
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
    if any(b[0] >= a[0] for a, b in itertools.pairwise(level_sizes)):
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
    collection = (
        _leica_nm(scan_w, nm_per_px, math.ceil),
        _leica_nm(scan_h, nm_per_px, math.ceil),
    )

    path = Path(path)
    macro = _leica_macro(rgb, (ox, oy), (scan_w, scan_h))
    xml = _leica_xml(
        path.stem, collection, view, (macro.shape[1], macro.shape[0]), level_sizes, mpp
    )

    args: dict[str, Any] = {"compression": codec, "photometric": "rgb", "metadata": None}
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
