"""Aperio SVS: :func:`write_svs` from an image in memory, :func:`write_large_svs` tile by tile."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile

from wsiseg.testing.common import COMPRESSIONS, _check_common, _check_downsamples, _check_rgb
from wsiseg.testing.tissue import (
    _BlobField,
    _check_seed,
    _default_blob_scale,
    _Painter,
    area_downsample,
)

#: The first line of every ImageDescription written here; OpenSlide detects Aperio by the
#: "Aperio" prefix of the first image's description.
APERIO_LIBRARY = "Aperio Image Library v12.0.15"

# Largest side of the thumbnail image stored in an SVS.
_THUMBNAIL_MAX = 1024
# Columns rendered at once by write_large_svs: keeps float temporaries to a few MB.
_CHUNK_WIDTH = 4096


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


def _paint_band(
    field: _BlobField, threshold: float, painter: _Painter, width: int, y0: int, h: int
) -> np.ndarray:
    """Level-0 rows ``y0 .. y0 + h`` of a slide ``width`` wide: RGB uint8 (h, width, 3)."""
    out = np.empty((h, width, 3), dtype=np.uint8)
    ys = np.arange(y0, y0 + h) + 0.5
    for x0 in range(0, width, _CHUNK_WIDTH):
        w = min(_CHUNK_WIDTH, width - x0)
        tissue = field.grid(np.arange(x0, x0 + w) + 0.5, ys) > threshold
        out[:, x0 : x0 + w] = painter.paint(tissue, x0, y0)
    return out


def _raw_tiles(f: BinaryIO, w: int, h: int, tile: int) -> Iterator[np.ndarray]:
    """The tiles, in row-major order, of the raw RGB uint8 ``w x h`` image written to ``f``."""
    f.flush()
    for y0 in range(0, h, tile):
        n = min(tile, h - y0)
        f.seek(y0 * w * 3)
        rows = np.frombuffer(f.read(n * w * 3), dtype=np.uint8).reshape(n, w, 3)
        for tx in range(0, w, tile):
            yield rows[:, tx : tx + tile]


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
    compression: str = "jpeg",
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

    ``compression`` is one of :data:`COMPRESSIONS`. ``"deflate"`` needs nothing but tifffile
    and the standard library (no imagecodecs), for machines where only those are at hand; a
    slide written with it has no label image, whose LZW encoding would need imagecodecs.
    """
    if width < 1 or height < 1:
        raise ValueError(f"slide size must be positive, got {width} x {height}")
    if not mpp > 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    if not 0 <= tissue_fraction <= 1:
        raise ValueError(f"tissue_fraction must be in [0, 1], got {tissue_fraction}")
    seed = _check_seed(seed)
    _check_common(tile, compression, quality)
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
        width, height, tile, compression, quality, mpp, _resolve_app_mag(mpp, None, None), None,
        path.stem,
    )

    with tempfile.TemporaryDirectory(prefix=".wsiseg-", dir=path.parent) as tmp:
        spill = {d: open(Path(tmp) / f"level-{d}.raw", "w+b") for d in ds[1:]}
        thumb_rows: list[np.ndarray] = []
        try:

            def level0_tiles() -> Iterator[np.ndarray]:
                for y0 in range(0, height, band_height):
                    h = min(band_height, height - y0)
                    rows = _paint_band(field, threshold, painter, width, y0, h)
                    for d, f in spill.items():
                        f.write(area_downsample(rows, d).tobytes())
                    thumb_rows.append(area_downsample(rows, thumb_factor))
                    for ty in range(0, rows.shape[0], tile):
                        for tx in range(0, width, tile):
                            yield rows[ty : ty + tile, tx : tx + tile]

            levels = [(1, level0_tiles())] + [
                (d, _raw_tiles(spill[d], math.ceil(width / d), math.ceil(height / d), tile))
                for d in ds[1:]
            ]
            _write_aperio(
                path, width, height, levels, lambda: np.concatenate(thumb_rows),
                description, tile, compression, quality,
                _label_image(seed) if compression == "jpeg" else None,
            )
        finally:
            for f in spill.values():
                f.close()
    return path
