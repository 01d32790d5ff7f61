"""Writing an image as an Aperio SVS that OpenSlide opens with vendor ``aperio``: :func:`write_svs`.

A tiled pyramid whose every level is the area average of level 0 (:func:`area_downsample`), a
stripped thumbnail and a small label image, with Aperio's ImageDescription (``MPP``,
``AppMag``). Scoring a model on glass writes each annotated image so, and maps it as any slide;
``wsiseg.testing`` writes its synthetic slides with it as well.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tifffile

__all__ = [
    "APERIO_LIBRARY",
    "COMPRESSIONS",
    "area_downsample",
    "check_common",
    "check_downsamples",
    "check_rgb",
    "write_svs",
]

#: An RGB image (H, W, 3), or a pyramid level of one.
RGB = npt.NDArray[np.uint8]

#: Tile compressions :func:`write_svs` accepts, and their tifffile names. All of them are read
#: by OpenSlide in an SVS; only ``"jpeg"`` is lossy.
COMPRESSIONS: dict[str, str | None] = {
    "jpeg": "jpeg",
    "none": None,
    "deflate": "zlib",
    "lzw": "lzw",
    "zstd": "zstd",
}


def check_common(tile: int, compression: str, quality: int) -> str | None:
    """The tifffile name of ``compression``, once it, ``tile`` and ``quality`` are checked."""
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


def check_downsamples(downsamples: Sequence[int]) -> tuple[int, ...]:
    """``downsamples`` as integers, refused unless increasing from 1."""
    ds = tuple(int(d) for d in downsamples)
    if (
        not ds
        or ds[0] != 1
        or any(int(d) != d for d in downsamples)
        or any(b <= a for a, b in itertools.pairwise(ds))
    ):
        raise ValueError(
            f"downsamples must be increasing integers starting with 1, e.g. (1, 4, 16); got "
            f"{tuple(downsamples)}"
        )
    return ds


def check_rgb(rgb: npt.ArrayLike) -> RGB:
    """``rgb`` as a contiguous uint8 (H, W, 3) array, refused otherwise."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb)


def area_downsample(rgb: RGB, d: int) -> RGB:
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
        copy: RGB = rgb.copy()
        return copy
    h, w, c = rgb.shape
    oh, ow = -(-h // d), -(-w // d)
    if h % d or w % d:
        padded = np.zeros((oh * d, ow * d, c), dtype=np.uint8)
        padded[:h, :w] = rgb
        rgb = padded
    # Sum the d rows of each block, then the d columns, by adding strided slices: much faster
    # than a reduction over two inner axes. uint16 holds up to 16 x 16 x 255.
    acc: type[np.unsignedinteger[Any]] = np.uint16 if d <= 16 else np.uint32
    blocks = rgb.reshape(oh, d, ow * d * c)
    rows: npt.NDArray[np.unsignedinteger[Any]] = blocks[:, 0].astype(acc)
    for k in range(1, d):
        rows += blocks[:, k]
    cols = rows.reshape(oh, ow, d, c)
    sums = cols[:, :, 0].astype(np.uint32)
    for k in range(1, d):
        sums += cols[:, :, k]
    ny = np.minimum(d, h - d * np.arange(oh)).astype(np.uint32)
    nx = np.minimum(d, w - d * np.arange(ow)).astype(np.uint32)
    counts = (ny[:, None] * nx[None, :])[:, :, None]
    means: RGB = ((sums + counts // 2) // counts).astype(np.uint8)
    return means


#: The first line of every ImageDescription written here; OpenSlide detects Aperio by the
#: "Aperio" prefix of the first image's description.
APERIO_LIBRARY = "Aperio Image Library v12.0.15"

# Largest side of the thumbnail image stored in an SVS.
_THUMBNAIL_MAX = 1024


def thumbnail_factor(width: int, height: int) -> int:
    """The smallest power of two that brings the image within the thumbnail size."""
    f = 1
    while max(width, height) > _THUMBNAIL_MAX * f:
        f *= 2
    return f


def label_image(seed: int) -> RGB:
    """A small slide-label picture: a light card with a made-up barcode."""
    h, w = 256, 320
    label = np.full((h, w, 3), 236, dtype=np.uint8)
    bars = np.random.default_rng([seed, 23]).integers(0, 2, 60).astype(bool)
    columns = np.repeat(bars, 4)
    label[40:140, 40 : 40 + columns.size][:, columns] = 20
    label[170:200, 40:280] = (60, 60, 160)
    return label


def aperio_description(
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
    """Aperio's ImageDescription of a slide: the image's size and the tiles, ``MPP``, ``AppMag``."""
    codec = f"JPEG/RGB Q={int(quality)}" if compression == "jpeg" else f"{compression.upper()}/RGB"
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


def resolve_app_mag(
    mpp: float | None, objective_power: float | None, app_mag: str | None
) -> str | None:
    """The ``AppMag`` to write: as given, from ``objective_power``, or nominal for ``mpp``."""
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


def write_aperio(
    path: Path,
    width: int,
    height: int,
    levels: Sequence[tuple[int, RGB | Iterator[RGB]]],
    thumbnail: Callable[[], RGB],
    description: str,
    tile: int,
    compression: str,
    quality: int,
    label: RGB | None,
) -> None:
    """Write an SVS: level 0, the thumbnail (stripped), the other levels, then the label.

    ``levels`` holds ``(d, data)`` with ``data`` an array or an iterator of tiles in row-major
    order; ``thumbnail`` is called once level 0 is written (streamed levels fill it then).
    """
    codec = COMPRESSIONS[compression]
    args: dict[str, Any] = {"compression": codec, "photometric": "rgb", "metadata": None}
    if compression == "jpeg":
        args["compressionargs"] = {"level": quality}
    raw_bytes = sum(3 * math.ceil(width / d) * math.ceil(height / d) for d, _ in levels)
    head, _, tail = description.partition("|")
    head = head.split("\r\n")[0]
    with tifffile.TiffWriter(path, bigtiff=raw_bytes > 2**31) as tif:
        for k, (d, data) in enumerate(levels):
            w, h = math.ceil(width / d), math.ceil(height / d)
            desc = description if k == 0 else f"{head}\r\n{width}x{height} -> {w}x{h} - |{tail}"
            shape: dict[str, Any] = ({} if isinstance(data, np.ndarray)
                                     else {"shape": (h, w, 3), "dtype": np.uint8})
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
    path: str | os.PathLike[str],
    rgb_level0: RGB,
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
    rgb = check_rgb(rgb_level0)
    check_common(tile, compression, quality)
    ds = check_downsamples(downsamples)
    if mpp is not None and not mpp > 0:
        raise ValueError(f"mpp must be positive or None, got {mpp}")
    height, width = rgb.shape[:2]
    if bounds is not None and (len(bounds) != 4 or tuple(bounds[2:]) != (width, height)):
        raise ValueError(f"bounds must be (x, y, {width}, {height}) for this image, got {bounds}")
    path = Path(path)
    description = aperio_description(
        width, height, tile, compression, quality, mpp,
        resolve_app_mag(mpp, objective_power, app_mag), bounds, path.stem,
    )
    levels = [(d, rgb if d == 1 else area_downsample(rgb, d)) for d in ds]
    write_aperio(
        path, width, height, levels,
        lambda: area_downsample(rgb, thumbnail_factor(width, height)),
        description, tile, compression, quality, label_image(0),
    )
    return path
