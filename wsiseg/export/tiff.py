"""A tiled pyramidal TIFF of the label map (and, on request, a colour overlay) for slide viewers.

``STEM.labels.tif`` holds the class index per pixel (ASAP shows it as a label overlay with a
lookup table); ``STEM.overlay.tif`` the class colours, with background transparent. Each level is
a tiled, deflate-compressed directory of its own (reduced-resolution levels after the first, the
layout OpenSlide's generic TIFF reader and tifffile both read), with its physical pixel size in
XResolution / YResolution (pixels per centimetre).

The frame follows ``origin``: ``"level0"``, the default, covers the whole level-0 slide at the
map's resolution, background outside the map, so the TIFF is a plain downsample of the slide
(ASAP's overlay convention: ASAP aligns an overlay to its slide by the ratio of their
dimensions); ``"bounds"`` covers exactly the map, which starts at the slide's bounds offset. In
the level-0 frame the map sits at the nearest whole pixel, so a bounds offset that is not a
multiple of the map's pixel size shifts it by under half a map pixel.

The ImageDescription is JSON with the class names, the pixel size, the frame, and the slide's
and model's names: file names only, never a folder, and with ``DICOM`` and ``xml`` spelled with
a JSON escape (``\\u0044ICOM``, ``\\u0078ml``), because ASAP refuses a TIFF whose description
holds either word (it takes such files for DICOM or vendor XML TIFFs). JSON readers get the text
back unchanged.

Levels come from the result's label pyramid; a result written without one gets it built in a
temporary folder first. Nothing is ever held whole: tiles are made one row of tiles at a time.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr

from wsiseg.atomic import atomic_write, os_error_in, output_error
from wsiseg.cards import ClassInfo
from wsiseg.errors import ConfigError
from wsiseg.result.info import ResultInfo
from wsiseg.result.pyramid import level_shapes, pyramid_paths, write_pyramid
from wsiseg.result.reading import read_error, reads_result, result_reads
from wsiseg.result.store import open_result, open_result_group

TILE = 256
#: The frame a TIFF gets when none is asked for: the full level-0 frame, as ASAP expects.
DEFAULT_ORIGIN = "level0"
#: Words that make ASAP pass a TIFF to another reader when its description holds them.
_ASAP_REFUSED = re.compile(r"dicom|xml", re.IGNORECASE)


def _level_tiles(array: Any, frame: tuple[int, int], offset: tuple[int, int],
                 lut: npt.NDArray[np.uint8] | None) -> Iterator[npt.NDArray[np.uint8]]:
    """Tiles of one level in row-major order: ``array`` placed at ``offset`` in ``frame``."""
    fh, fw = frame
    py, px = offset
    mh, mw = array.shape
    cols = math.ceil(fw / TILE)
    for ty in range(0, fh, TILE):
        band = np.zeros((TILE, cols * TILE), dtype=np.uint8)
        y0, y1 = max(ty - py, 0), min(ty + TILE - py, mh)  # map rows in this band
        if y0 < y1:
            x0, x1 = max(-px, 0), min(mw, fw - px)  # map columns inside the frame
            if x0 < x1:
                band[y0 + py - ty : y1 + py - ty, x0 + px : x1 + px] = array[y0:y1, x0:x1]
        for tx in range(cols):
            tile = band[:, tx * TILE : (tx + 1) * TILE]
            yield tile if lut is None else lut[tile]


def _frame(info: ResultInfo, shape: tuple[int, int], origin: str
           ) -> tuple[tuple[int, int], tuple[int, int]]:
    """(frame height, width) and the map's (row, column) offset in it, at level 0 of the TIFF."""
    if origin == "bounds":
        return shape, (0, 0)
    if origin != "level0":
        raise ConfigError(f"unknown origin {origin!r}; choose from bounds, level0")
    sx, sy = (float(v) for v in info.scale_to_level0)
    ox, oy = (float(v) for v in info.offset_level0)
    w0, h0 = info.slide.dimensions
    return (math.ceil(h0 / sy), math.ceil(w0 / sx)), (round(oy / sy), round(ox / sx))


def tiff_description(info: ResultInfo, origin: str, colours: bool) -> str:
    """The level-0 ImageDescription: plain JSON metadata that every viewer accepts."""
    text = json.dumps({
        "wsiseg": "class colours" if colours else "class index per pixel",
        "classes": {str(c.index): c.name for c in info.classes},
        "mpp": [float(v) for v in info.analysis_mpp], "origin": origin,
        "slide": Path(str(info.slide.path)).name, "model": Path(info.model.name).name,
    }, ensure_ascii=True)
    # Only inside JSON strings can the words occur; an escaped first letter reads back the same.
    return _ASAP_REFUSED.sub(lambda m: f"\\u{ord(m.group()[0]):04x}" + m.group()[1:], text)


def _colour_lut(classes: tuple[ClassInfo, ...]) -> npt.NDArray[np.uint8]:
    lut = np.zeros((256, 4), dtype=np.uint8)
    for c in classes:
        if c.index > 0:
            lut[c.index, :3] = c.color
            lut[c.index, 3] = 255
    return lut


@reads_result
def write_tiff(result: str | os.PathLike[str], out_dir: Path, stem: str, overlay: bool = False,
               origin: str = DEFAULT_ORIGIN) -> list[Path]:
    """Write ``STEM.labels.tif`` (and ``STEM.overlay.tif`` with ``overlay``) into ``out_dir``.

    ``origin`` is the frame: ``"level0"`` (the whole slide, ASAP's) or ``"bounds"`` (the map).
    """
    labels, info = open_result(result)
    group = open_result_group(result)
    height, width = labels.shape
    frame, offset = _frame(info, (height, width), origin)
    scratch = None
    try:
        paths = pyramid_paths(group)
        if len(paths) < len(level_shapes(*labels.shape)):  # a result made without a pyramid
            scratch = Path(out_dir) / f".{stem}.pyramid.partial.zarr"
            shutil.rmtree(scratch, ignore_errors=True)
            try:
                levels_group = zarr.open_group(str(scratch), mode="w", zarr_format=3)
                paths = write_pyramid(labels, levels_group, len(info.classes))
            except Exception as err:  # writing the levels, or reading the result's labels
                cause = os_error_in(err)
                if cause is None or read_error(result, err) is not None:
                    raise
                raise output_error(Path(out_dir) / f"{stem}.labels.tif", cause) from err
            levels = [labels] + [levels_group[p] for p in paths[1:]]
        else:
            levels = [group[p] for p in paths]
        written = [_write(Path(out_dir) / f"{stem}.labels.tif", levels, frame, offset, info,
                          origin, lut=None)]
        if overlay:
            written.append(_write(Path(out_dir) / f"{stem}.overlay.tif", levels, frame, offset,
                                  info, origin, lut=_colour_lut(info.classes)))
    finally:  # the scratch pyramid is a folder, not a file: removed here, failure or not
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return written


def _write(path: Path, levels: list[Any], frame: tuple[int, int], offset: tuple[int, int],
           info: ResultInfo, origin: str, lut: npt.NDArray[np.uint8] | None) -> Path:
    import tifffile

    mpp_x, mpp_y = (float(v) for v in info.analysis_mpp)
    channels = () if lut is None else (4,)
    fh, fw = frame
    bigtiff = fh * fw * (4 if lut is not None else 1) > 2**31
    description = tiff_description(info, origin, colours=lut is not None)
    # Tiles are read from the result while the file is written: a chunk that cannot be read
    # is the result's fault, told as such, not the file's.
    with (atomic_write(path, "wb") as out, tifffile.TiffWriter(out, bigtiff=bigtiff) as tif,
          result_reads(info.path)):
        for level, array in enumerate(levels):
            f = 2 ** level
            shape = (math.ceil(fh / f), math.ceil(fw / f))
            level_offset = (round(offset[0] / f), round(offset[1] / f))
            tif.write(
                _level_tiles(array, shape, level_offset, lut),
                shape=shape + channels, dtype=np.uint8, tile=(TILE, TILE),
                photometric="minisblack" if lut is None else "rgb",
                extrasamples=None if lut is None else ("unassalpha",),
                compression="zlib", predictor=None,
                resolution=(1e4 / (mpp_x * f), 1e4 / (mpp_y * f)),
                resolutionunit="CENTIMETER",
                subfiletype=0 if level == 0 else 1,
                description=description if level == 0 else None, metadata=None,
            )
    return path
