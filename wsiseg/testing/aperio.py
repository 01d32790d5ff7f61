"""Aperio SVS: :func:`write_svs` from an image in memory, :func:`write_large_svs` tile by tile.

:func:`write_svs` is the production writer of :mod:`wsiseg.slide.svs_writer`, offered here too;
:func:`write_large_svs` paints a synthetic slide band by band and writes it the same way.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from wsiseg.slide.svs_writer import (
    APERIO_LIBRARY,
    RGB,
    aperio_description,
    area_downsample,
    check_common,
    check_downsamples,
    label_image,
    resolve_app_mag,
    thumbnail_factor,
    write_aperio,
    write_svs,
)
from wsiseg.testing.tissue import _BlobField, _check_seed, _default_blob_scale, _Painter

__all__ = ["APERIO_LIBRARY", "write_large_svs", "write_svs"]

# Columns rendered at once by write_large_svs: keeps float temporaries to a few MB.
_CHUNK_WIDTH = 4096


def _paint_band(
    field: _BlobField, threshold: float, painter: _Painter, width: int, y0: int, h: int
) -> RGB:
    """Level-0 rows ``y0 .. y0 + h`` of a slide ``width`` wide: RGB uint8 (h, width, 3)."""
    out = np.empty((h, width, 3), dtype=np.uint8)
    ys = np.arange(y0, y0 + h) + 0.5
    for x0 in range(0, width, _CHUNK_WIDTH):
        w = min(_CHUNK_WIDTH, width - x0)
        tissue = field.grid(np.arange(x0, x0 + w) + 0.5, ys) > threshold
        out[:, x0 : x0 + w] = painter.paint(tissue, x0, y0)
    return out


def _raw_tiles(f: BinaryIO, w: int, h: int, tile: int) -> Iterator[RGB]:
    """The tiles, in row-major order, of the raw RGB uint8 ``w x h`` image written to ``f``."""
    f.flush()
    for y0 in range(0, h, tile):
        n = min(tile, h - y0)
        f.seek(y0 * w * 3)
        rows = np.frombuffer(f.read(n * w * 3), dtype=np.uint8).reshape(n, w, 3)
        for tx in range(0, w, tile):
            yield rows[:, tx : tx + tile]


def write_large_svs(
    path: str | os.PathLike[str],
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
    check_common(tile, compression, quality)
    ds = check_downsamples(downsamples)
    path = Path(path)
    thumb_factor = thumbnail_factor(width, height)
    band_height = math.lcm(tile, thumb_factor, *ds)

    field = _BlobField(seed, width, height, _default_blob_scale(width, height))
    threshold = field.threshold(tissue_fraction)
    radius = min(max(3.0 / mpp, 2.0), 40.0)
    painter = _Painter(
        seed, width, height, radius, 0.15, lambda xs, ys: field.points(xs, ys) > threshold
    )
    description = aperio_description(
        width, height, tile, compression, quality, mpp, resolve_app_mag(mpp, None, None), None,
        path.stem,
    )

    with tempfile.TemporaryDirectory(prefix=".wsiseg-", dir=path.parent) as tmp, \
            contextlib.ExitStack() as files:
        spill = {d: files.enter_context(open(Path(tmp) / f"level-{d}.raw", "w+b"))
                 for d in ds[1:]}
        thumb_rows: list[RGB] = []

        def level0_tiles() -> Iterator[RGB]:
            for y0 in range(0, height, band_height):
                h = min(band_height, height - y0)
                rows = _paint_band(field, threshold, painter, width, y0, h)
                for d, f in spill.items():
                    f.write(area_downsample(rows, d).tobytes())
                thumb_rows.append(area_downsample(rows, thumb_factor))
                for ty in range(0, rows.shape[0], tile):
                    for tx in range(0, width, tile):
                        yield rows[ty : ty + tile, tx : tx + tile]

        levels: list[tuple[int, Iterator[RGB]]] = [(1, level0_tiles())] + [
            (d, _raw_tiles(spill[d], math.ceil(width / d), math.ceil(height / d), tile))
            for d in ds[1:]
        ]
        write_aperio(
            path, width, height, levels, lambda: np.concatenate(thumb_rows),
            description, tile, compression, quality,
            label_image(seed) if compression == "jpeg" else None,
        )
    return path
