"""OME-Zarr slides: an NGFF image folder, read with zarr.

Two kinds of folder are slides:

- what ``bioformats2raw`` writes (NGFF 0.4 on zarr v2): ``.zattrs`` holding
  ``"bioformats2raw.layout": 3``, each series an image in a numbered group (``0/``, ``1/``,
  ...) whose ``multiscales`` lists its levels ``0/0``, ``0/1``, ... with axes t, c, z, y, x;
- an NGFF image itself: ``multiscales`` in ``.zattrs`` (0.4, zarr v2) or in ``zarr.json``'s
  ``attributes.ome`` (0.5, zarr v3).

The levels are the ``multiscales`` datasets, their downsamples the ratio of their scale to the
first one's, the resolution the first level's scale in the axis unit (micrometres, or another
length converted). Only brightfield RGB is taken: a ``c`` axis of 3 channels of uint8; ``t``
and ``z`` of size 1. Of several series the largest RGB image is the slide.

A wsiseg result is an NGFF image too (its picture of the slide, at about 10 um/px): it is
refused as a slide with a line naming the slide it maps (:func:`is_ome_zarr` is False for it).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from wsiseg.errors import SlideError, first_line
from wsiseg.slide.backends.base import MAX_CHUNK_PIXELS, ChunkedSlide, LevelGrid

if TYPE_CHECKING:
    import zarr

logger = logging.getLogger(__name__)

#: Micrometres per NGFF length unit (the UDUNITS-2 names NGFF allows).
LENGTH_UNITS_UM = {
    "angstrom": 1e-4, "picometer": 1e-6, "nanometer": 1e-3, "micrometer": 1.0,
    "micron": 1.0, "millimeter": 1e3, "centimeter": 1e4, "decimeter": 1e5, "meter": 1e6,
}
#: Series of a bioformats2raw folder looked at, at most.
MAX_SERIES = 1000
BRIGHTFIELD = ("wsiseg maps brightfield RGB slides (a c axis of 3 uint8 channels); convert it "
               "to 8-bit RGB to map it")


def _attributes(folder: Path) -> dict[str, Any] | None:
    """A zarr group's attributes (v3 ``zarr.json`` or v2 ``.zattrs``), NGFF 0.5's ``ome``
    key merged in; None when ``folder`` has neither or they are not JSON objects."""
    for name, v3 in (("zarr.json", True), (".zattrs", False)):
        try:
            with open(folder / name, "rb") as f:
                doc = json.loads(f.read(1 << 24))
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict):
            return None
        attrs = doc.get("attributes", {}) if v3 else doc
        if not isinstance(attrs, dict):
            return None
        ome = attrs.get("ome")
        return {**attrs, **ome} if isinstance(ome, dict) else dict(attrs)
    return None


def is_zarr_folder(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder of a zarr group or array (v2 or v3)."""
    folder = Path(path)
    return folder.is_dir() and any((folder / n).is_file()
                                   for n in ("zarr.json", ".zattrs", ".zgroup", ".zarray"))


def result_slide(path: str | os.PathLike[str]) -> str | None:
    """The slide a wsiseg result maps (its path, or ``"?"`` when not recorded) when ``path``
    is a wsiseg result; None otherwise."""
    folder = Path(path)
    if not folder.is_dir():
        return None
    attrs = _attributes(folder)
    if attrs is None or "wsiseg" not in attrs:
        return None
    record = attrs["wsiseg"]
    slide = record.get("slide") if isinstance(record, dict) else None
    return str(slide.get("path", "?")) if isinstance(slide, dict) else "?"


def is_ome_zarr(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder holding an OME-Zarr slide: a bioformats2raw folder, or
    an NGFF image (``multiscales``) on zarr v2 or v3. False for a wsiseg result (an NGFF image
    of a slide's picture, not a slide), for DICOM folders and folders of slides. Reads only
    the folder's attribute file."""
    folder = Path(path)
    if not folder.is_dir():
        return False
    attrs = _attributes(folder)
    if attrs is None or "wsiseg" in attrs:
        return False
    return "bioformats2raw.layout" in attrs or isinstance(attrs.get("multiscales"), list)


def folder_bytes(path: Path) -> int:
    """The bytes of the files under ``path``."""
    total = 0
    for top, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(top, f)).st_size
            except OSError:
                continue
    return total


class _Image:
    """An NGFF image's levels as wsiseg reads them."""

    def __init__(self, where: str, arrays: list[zarr.Array[Any]], axes: list[str],
                 scales: list[list[float]], units: dict[str, str]) -> None:
        self.where, self.arrays, self.axes, self.scales, self.units = (
            where, arrays, axes, scales, units)

    @property
    def size(self) -> tuple[int, int]:
        shape = self.arrays[0].shape
        return shape[self.axes.index("x")], shape[self.axes.index("y")]


def _read_image(group: zarr.Group, where: str, name: str) -> _Image:
    """The NGFF image of ``group`` (at ``where`` in the folder); SlideError when its
    ``multiscales`` cannot be read."""
    import zarr

    attrs: dict[str, Any] = dict(group.attrs)
    ome = attrs.get("ome")
    if isinstance(ome, dict):
        attrs.update(ome)
    place = f"{name}/{where}" if where else name
    try:
        ms: Any = attrs["multiscales"][0]
        first: Any = group[str(ms["datasets"][0]["path"])]
        # NGFF 0.3 and earlier have no axes: they are t, c, z, y, x, the last ones kept.
        raw_axes = ms.get("axes") or ["t", "c", "z", "y", "x"][-len(first.shape):]
        axes = [a["name"] if isinstance(a, dict) else str(a) for a in raw_axes]
        units = {a["name"]: str(a["unit"]) for a in raw_axes
                 if isinstance(a, dict) and a.get("unit")}
        global_scale = _scale(ms.get("coordinateTransformations"), len(axes))
        arrays: list[zarr.Array[Any]] = []
        scales: list[list[float]] = []
        for dataset in ms["datasets"]:
            array = group[str(dataset["path"])]
            if not isinstance(array, zarr.Array) or len(array.shape) != len(axes):
                raise ValueError(f"dataset {dataset['path']!r} is not an array of "
                                 f"{len(axes)} axes")
            scale = _scale(dataset.get("coordinateTransformations"), len(axes))
            arrays.append(array)
            scales.append([a * b for a, b in zip(scale, global_scale)])
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise SlideError(f"{place}: its OME-Zarr multiscales metadata cannot be read "
                         f"({first_line(err)}); write it again (e.g. with bioformats2raw)"
                         ) from err
    if not arrays or "x" not in axes or "y" not in axes:
        raise SlideError(f"{place}: an OME-Zarr image without levels or without x and y "
                         "axes; write it again (e.g. with bioformats2raw)")
    return _Image(where, arrays, axes, scales, units)


def _scale(transforms: Any, n: int) -> list[float]:
    for t in transforms or []:
        if isinstance(t, dict) and t.get("type") == "scale":
            values = [float(v) for v in t["scale"]]
            if len(values) != n:
                raise ValueError(f"a scale of {len(values)} values for {n} axes")
            return values
    return [1.0] * n


def _rgb_problem(image: _Image) -> str | None:
    """Why ``image`` is not brightfield RGB, or None when it is."""
    shape = dict(zip(image.axes, image.arrays[0].shape))
    dtype = image.arrays[0].dtype
    others = {a: n for a, n in shape.items() if a not in ("x", "y", "c") and n != 1}
    if dtype != np.uint8 or shape.get("c") != 3 or others:
        sizes = ", ".join(f"{a} {n}" for a, n in shape.items())
        return f"{dtype} pixels of axes {''.join(image.axes)} ({sizes})"
    return None


class OmeZarrSlide(ChunkedSlide):
    """An OME-Zarr slide: one RGB NGFF image of a folder and its pyramid."""

    vendor = "ome-zarr"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        folder = Path(path)
        name = str(folder)
        slide = result_slide(folder)
        if slide is not None:
            raise SlideError(f"{name}: this is a wsiseg result, not a slide (it maps {slide}); "
                             "give the slide itself to predict, or `wsiseg view` the result")
        attrs = _attributes(folder)
        if attrs is None or not is_ome_zarr(folder):
            raise SlideError(f"{name}: a zarr folder but not an OME-Zarr image (no multiscales "
                             "or bioformats2raw.layout in its attributes); give an OME-Zarr "
                             "slide, e.g. written by bioformats2raw")
        try:
            import zarr

            root = zarr.open_group(str(folder), mode="r")
        except Exception as err:
            raise SlideError(f"{name}: not a zarr group that can be read ({first_line(err)}); "
                             "write it again") from err
        images: list[_Image] = []
        if isinstance(attrs.get("multiscales"), list):
            images.append(_read_image(root, "", name))
        else:  # bioformats2raw: the series are the groups 0, 1, ...
            for index in range(MAX_SERIES):
                try:
                    group = root[str(index)]
                except KeyError:
                    break
                if isinstance(group, zarr.Group):
                    images.append(_read_image(group, str(index), name))
        if not images:
            raise SlideError(f"{name}: a bioformats2raw folder without any image (no group "
                             "0/); convert the slide again")
        rgb = [im for im in images if _rgb_problem(im) is None]
        if not rgb:
            largest = max(images, key=lambda im: im.size[0] * im.size[1])
            raise SlideError(f"{name}: an OME-Zarr image of {_rgb_problem(largest)}, not RGB; "
                             f"{BRIGHTFIELD}")
        image = max(rgb, key=lambda im: im.size[0] * im.size[1])
        self.image = image
        self.series_path = image.where
        ax = image.axes
        ix, iy = ax.index("x"), ax.index("y")
        grids: list[LevelGrid] = []
        for array in image.arrays:
            cw, ch = array.chunks[ix], array.chunks[iy]
            if cw * ch > MAX_CHUNK_PIXELS:
                raise SlideError(f"{name}: level {len(grids)} is stored in chunks of {cw} x "
                                 f"{ch} px, too large to read a part of; write it again with "
                                 "smaller chunks (e.g. bioformats2raw --tile_width 512)")
            grids.append(LevelGrid(array.shape[ix], array.shape[iy], cw, ch))
        s0 = image.scales[0]
        downsamples = [(s[ix] / s0[ix] + s[iy] / s0[iy]) / 2 if s0[ix] > 0 and s0[iy] > 0
                       else (grids[0].width / g.width + grids[0].height / g.height) / 2
                       for s, g in zip(image.scales, grids)]
        mpp = _mpp(image, name)
        extra = {"ome.image": image.where or "."}
        description = ""
        if len(images) > 1:
            description = (f"OME-Zarr series {image.where} of {len(images)}, the largest RGB "
                           "image")
        super().__init__(name, grids, downsamples, mpp, extra, description)

    def _decode_chunk(self, level: int, cy: int, cx: int) -> npt.NDArray[np.uint8]:
        grid = self.levels[level]
        array = self.image.arrays[level]
        index: list[int | slice] = []
        for axis in self.image.axes:
            if axis == "x":
                index.append(slice(cx * grid.chunk_width, (cx + 1) * grid.chunk_width))
            elif axis == "y":
                index.append(slice(cy * grid.chunk_height, (cy + 1) * grid.chunk_height))
            elif axis == "c":
                index.append(slice(None))
            else:
                index.append(0)
        block = np.asarray(array[tuple(index)])
        kept = [a for a in self.image.axes if a in ("y", "x", "c")]
        block = np.moveaxis(block, [kept.index("y"), kept.index("x"), kept.index("c")],
                            [0, 1, 2])
        if block.dtype != np.uint8:
            raise ValueError(f"chunk ({cx}, {cy}) holds {block.dtype}, not uint8")
        return np.ascontiguousarray(block)


def _mpp(image: _Image, name: str) -> tuple[float, float] | None:
    """The first level's pixel size in micrometres (x, y), or None when the axes have no
    length unit."""
    ix, iy = image.axes.index("x"), image.axes.index("y")
    values = []
    for axis, i in (("x", ix), ("y", iy)):
        unit = image.units.get(axis)
        if unit is None:
            return None
        factor = LENGTH_UNITS_UM.get(unit.lower())
        size = image.scales[0][i]
        if factor is None or not size > 0 or not np.isfinite(size):
            logger.warning("%s: its %s axis has scale %g %s, not a length; the slide is taken "
                           "to have no resolution (pass --slide-mpp)", name, axis, size, unit)
            return None
        values.append(size * factor)
    return (values[0], values[1])
