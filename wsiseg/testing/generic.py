"""Generic tiled TIFF: :func:`write_generic_tiff`, which OpenSlide opens as ``generic-tiff``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tifffile

from wsiseg.slide.svs_writer import area_downsample, check_common, check_downsamples, check_rgb
from wsiseg.testing.common import _drop_tags

# Tags that carry a TIFF's resolution: XResolution, YResolution, ResolutionUnit.
_RESOLUTION_TAGS = frozenset({282, 283, 296})


def write_generic_tiff(
    path: str | os.PathLike[str],
    rgb: npt.NDArray[np.uint8],
    mpp: float | None = None,
    tile: int = 256,
    levels: Sequence[int] = (1,),
    compression: str = "deflate",
) -> Path:
    """Write ``rgb`` as a tiled pyramidal TIFF that OpenSlide opens as ``generic-tiff``.

    One tiled image per downsample in ``levels`` (area averages of level 0). With ``mpp`` the
    images carry XResolution/YResolution in pixels per centimetre (``1e4 / mpp``), which
    OpenSlide reports as ``openslide.mpp-x``/``mpp-y``; with ``mpp=None`` the file has no
    resolution tags at all, so OpenSlide has no resolution. Returns the path written.
    """
    rgb = check_rgb(rgb)
    codec = check_common(tile, compression, 90)
    ds = check_downsamples(levels)
    if mpp is not None and not mpp > 0:
        raise ValueError(f"mpp must be positive or None, got {mpp}")
    path = Path(path)
    args: dict[str, Any] = {"compression": codec, "photometric": "rgb", "metadata": None}
    if compression == "jpeg":
        args["compressionargs"] = {"level": 90}
    if mpp is not None:
        args["resolution"] = (1e4 / mpp, 1e4 / mpp)
        args["resolutionunit"] = "CENTIMETER"
    with tifffile.TiffWriter(path, bigtiff=rgb.nbytes * 4 // 3 > 2**31) as tif:
        for d in ds:
            data = rgb if d == 1 else area_downsample(rgb, d)
            tif.write(data, tile=(tile, tile), subfiletype=0 if d == 1 else 1, **args)
    if mpp is None:
        # tifffile always writes XResolution = YResolution = 1 (unit NONE); real files
        # without a resolution have no such tags, so remove them.
        _drop_tags(path, _RESOLUTION_TAGS)
    return path
