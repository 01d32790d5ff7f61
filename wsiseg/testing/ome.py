"""OME-TIFF and OME-Zarr slides: :func:`write_ome_tiff` and :func:`write_ome_zarr`.

They write what Bio-Formats and bioformats2raw write for a brightfield slide: an OME-TIFF whose
pyramid levels are SubIFDs (``subfiletype`` 1) of the full-resolution page, the resolution in
the OME-XML; an OME-Zarr whose levels are the ``multiscales`` datasets, the resolution their
scale in the axis unit. Levels are area averages of level 0 (see
:func:`~wsiseg.slide.svs_writer.area_downsample`). Pixels that are not 8-bit RGB (several
channels of uint16, as a fluorescence scan has) are written too, without a pyramid, so that
their refusal can be tested.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from wsiseg.slide.svs_writer import area_downsample, check_downsamples

#: tifffile's names of the tile codecs the OME-TIFF writer offers (all decoded by imagecodecs).
OME_TIFF_COMPRESSIONS = ("jpeg", "zlib", "lzw", "zstd", "jpeg2000", "none")


def _levels(image: npt.NDArray[Any], levels: Sequence[int]) -> list[npt.NDArray[Any]]:
    ds = check_downsamples(levels)
    if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        return [image if d == 1 else area_downsample(image, d) for d in ds]
    if len(ds) > 1:
        raise ValueError("only 8-bit RGB images get a pyramid here; pass levels=(1,)")
    return [image]


def _is_rgb(image: npt.NDArray[Any]) -> bool:
    return image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


def write_ome_tiff(
    path: str | os.PathLike[str],
    image: npt.NDArray[Any],
    mpp: float | None = 0.5,
    unit: str = "µm",
    levels: Sequence[int] = (1, 4),
    tile: int = 256,
    compression: str = "jpeg",
    byteorder: Literal["<", ">"] = "<",
    subifds: bool = True,
    extra_series: Mapping[str, npt.NDArray[np.uint8]] | None = None,
    name: str = "slide",
) -> Path:
    """Write ``image`` as a tiled pyramidal OME-TIFF.

    ``image`` is (H, W, 3) uint8 RGB, or (C, H, W) of another dtype (written as channels,
    without a pyramid). ``mpp`` goes into ``PhysicalSizeX``/``Y`` in ``unit`` (the value is
    ``mpp`` expressed in that unit: ``unit="nm"`` writes ``mpp * 1000``); None writes none.
    The levels are SubIFDs of the first page (``subifds=True``, as Bio-Formats writes them) or
    pages of their own. ``extra_series`` (name -> small RGB image) adds untiled series after
    the slide, as a label or macro image. Returns the path written.
    """
    import tifffile

    if compression not in OME_TIFF_COMPRESSIONS:
        raise ValueError(f"compression {compression!r}; use one of {OME_TIFF_COMPRESSIONS}")
    image = np.ascontiguousarray(image)
    pyramid = _levels(image, levels)
    rgb = _is_rgb(image)
    metadata: dict[str, Any] = {"axes": "YXS" if rgb else "CYX", "Name": name}
    if mpp is not None:
        per_um = {"pm": 1e6, "Å": 1e4, "nm": 1e3, "µm": 1.0, "um": 1.0, "mm": 1e-3,
                  "cm": 1e-4, "m": 1e-6}.get(unit, 1.0)
        metadata.update(PhysicalSizeX=mpp * per_um, PhysicalSizeXUnit=unit,
                        PhysicalSizeY=mpp * per_um, PhysicalSizeYUnit=unit)
    args: dict[str, Any] = {"tile": (tile, tile),
                            "compression": None if compression == "none" else compression,
                            "photometric": "rgb" if rgb else "minisblack"}
    if compression == "jpeg":
        args["compressionargs"] = {"level": 90}
    path = Path(path)
    with tifffile.TiffWriter(path, byteorder=byteorder, ome=True,
                             bigtiff=image.nbytes * 4 // 3 > 2**31) as tif:
        tif.write(pyramid[0], subifds=len(pyramid) - 1 if subifds else None,
                  metadata=metadata, **args)
        for level in pyramid[1:]:
            # Pages of their own (subifds=False) are levels of the series as well: tifffile
            # and Bio-Formats take reduced-resolution pages after a series as its pyramid.
            tif.write(level, subfiletype=1, metadata=None, **args)
        for extra_name, extra in (extra_series or {}).items():
            tif.write(np.ascontiguousarray(extra), photometric="rgb",
                      metadata={"axes": "YXS", "Name": extra_name})
    return path


def write_ome_zarr(
    path: str | os.PathLike[str],
    image: npt.NDArray[Any],
    mpp: float | None = 0.5,
    unit: str = "micrometer",
    levels: Sequence[int] = (1, 4),
    chunk: int = 256,
    layout: Literal["bioformats2raw", "ngff-0.5"] = "bioformats2raw",
) -> Path:
    """Write ``image`` as an OME-Zarr folder.

    ``layout="bioformats2raw"``: what bioformats2raw writes, NGFF 0.4 on zarr v2 (``.zattrs``
    with ``bioformats2raw.layout`` 3, the image in ``0/``, arrays ``0/0``, ``0/1``, ... of
    axes t, c, z, y, x, chunks of one channel, ``/`` as dimension separator);
    ``layout="ngff-0.5"``: an NGFF 0.5 image on zarr v3 (``zarr.json`` with
    ``attributes.ome.multiscales``), axes c, y, x, as a wsiseg result's picture. ``image`` is
    (H, W, 3) uint8 RGB or (C, H, W) of another dtype (no pyramid). ``mpp`` is the level-0
    scale, in ``unit`` (None: scale 1 and no unit). Returns the folder written.
    """
    import zarr

    image = np.ascontiguousarray(image)
    pyramid = _levels(image, levels)
    ds = check_downsamples(levels) if len(pyramid) > 1 else (1,)
    planes = [p.transpose(2, 0, 1) if _is_rgb(image) else p for p in pyramid]  # (C, H, W)
    b2r = layout == "bioformats2raw"
    names = ["t", "c", "z", "y", "x"] if b2r else ["c", "y", "x"]
    size = mpp if mpp is not None else 1.0
    axes: list[dict[str, str]] = []
    for a in names:
        axis = {"name": a, "type": {"t": "time", "c": "channel", "z": "space"}.get(a, "space")}
        if a in "yx" and mpp is not None:
            axis["unit"] = unit
        axes.append(axis)
    datasets: list[Any] = []
    for n, d in enumerate(ds):
        scale = [1.0] * (len(names) - 2) + [size * d, size * d]
        datasets.append({"path": str(n),
                         "coordinateTransformations": [{"type": "scale", "scale": scale}]})
    multiscales: list[Any] = [{"axes": axes, "datasets": datasets, "name": "slide"}]
    path = Path(path)
    if b2r:
        root = zarr.open_group(str(path), mode="w", zarr_format=2)
        root.attrs["bioformats2raw.layout"] = 3
        root.create_group("OME").attrs["series"] = ["0"]
        group = root.create_group("0")
        group.attrs["multiscales"] = [{**multiscales[0], "version": "0.4"}]
    else:
        group = zarr.open_group(str(path), mode="w", zarr_format=3)
        group.attrs["ome"] = {"version": "0.5", "multiscales": multiscales}
    for n, plane in enumerate(planes):
        c, h, w = plane.shape
        if b2r:
            array = group.create_array(
                str(n), shape=(1, c, 1, h, w), chunks=(1, 1, 1, chunk, chunk),
                dtype=plane.dtype, chunk_key_encoding={"name": "v2", "separator": "/"})
            array[0, :, 0] = plane
        else:
            array = group.create_array(str(n), shape=(c, h, w), chunks=(c, chunk, chunk),
                                       dtype=plane.dtype)
            array[:] = plane
    return path
