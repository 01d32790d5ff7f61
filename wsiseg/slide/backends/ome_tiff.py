"""OME-TIFF slides, read with tifffile.

Bio-Formats (``bfconvert``, QuPath's "Export as OME-TIFF") writes a whole-slide image as an
OME-TIFF: a TIFF whose first page's ImageDescription is OME-XML, the pyramid levels as SubIFDs
of each full-resolution page (or as consecutive pages), in either byte order. OpenSlide refuses
the big-endian ones and opens the others as generic TIFF without the resolution, which lives in
the OME-XML (``PhysicalSizeX``/``PhysicalSizeXUnit``). So OME-TIFF is read here: tifffile finds
the series and their pyramids, imagecodecs decodes the tiles (JPEG, LZW, deflate, zstd, JPEG
2000, ...), one tile (or strip) at a time.

Only brightfield RGB is taken: 8-bit, 3 samples per pixel, interleaved. Of several series (a
label or macro image beside the slide) the largest RGB pyramid is the slide; the other small
RGB images are its associated images.

The source may be a path or any binary file object tifffile accepts (seekable, ``read``): tiles
of a path are read with positioned reads, those of a file object under a lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from wsiseg.errors import SlideError, first_line
from wsiseg.slide.backends.base import LazyImages, downsamples_from_sizes
from wsiseg.slide.backends.tiff_pages import TiffPagesSlide, level_grid
from wsiseg.slide.tiff_extent import first_description

if TYPE_CHECKING:
    import tifffile

logger = logging.getLogger(__name__)

#: Micrometres per OME length unit (the OME schema's UnitsLength, as written in the XML).
LENGTH_UNITS_UM = {
    "pm": 1e-6, "Å": 1e-4, "nm": 1e-3, "µm": 1.0, "μm": 1.0, "um": 1.0, "mm": 1e3,
    "cm": 1e4, "dm": 1e5, "m": 1e6,
}
#: Other series up to this many pixels are offered as associated images (label, macro, ...).
MAX_ASSOCIATED_PIXELS = 4096 * 4096
BRIGHTFIELD = ("wsiseg maps brightfield RGB slides (3 samples of 8 bits per pixel); convert it "
               "to 8-bit RGB (e.g. QuPath's RGB export) to map it")

Source = str | os.PathLike[str] | IO[bytes]


def is_ome_tiff(source: Source) -> bool:
    """True when ``source`` is a TIFF whose first page's ImageDescription is OME-XML. Reads
    only the header and the first image directory (never with tifffile, which would log what
    it finds wrong in any damaged TIFF)."""
    try:
        if isinstance(source, (str, os.PathLike)):
            if not Path(source).is_file():
                return False
            with open(source, "rb") as f:
                description = _description(f)
        else:
            position = source.tell()
            try:
                description = _description(source)
            finally:
                source.seek(position)
    except (OSError, ValueError, struct.error):
        return False
    if description is None:
        return False
    text = description.lstrip()
    return text.startswith(b"<?xml") and b"<OME" in text and text.rstrip(b"\0 \r\n\t"
                                                                      ).endswith(b"OME>")


def _description(f: IO[bytes]) -> bytes | None:
    def read_at(offset: int, count: int) -> bytes:
        f.seek(offset)
        return f.read(count)

    return first_description(read_at(0, 16), read_at)


@contextlib.contextmanager
def _tifffile_quiet() -> Iterator[None]:
    """tifffile logs what it finds wrong in a file; what matters of it is raised here, so its
    lines would only repeat the one-line error (or warn of what reads well)."""
    tiff_logger = logging.getLogger("tifffile")
    drop = _DropAll()  # one per call: calls in other threads add and remove their own
    tiff_logger.addFilter(drop)
    try:
        yield
    finally:
        tiff_logger.removeFilter(drop)


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


def _is_rgb(series: tifffile.TiffPageSeries) -> bool:
    """8-bit interleaved RGB, every axis but Y, X and the samples of size 1."""
    axes = "".join(a for a, n in zip(series.axes, series.shape) if n != 1 or a in "YX")
    page = series.keyframe
    return (series.dtype == np.uint8 and axes == "YXS" and series.shape[-1] == 3
            and page is not None and page.planarconfig == 1 and page.samplesperpixel == 3)


def _describe_pixels(series: tifffile.TiffPageSeries) -> str:
    sizes = ", ".join(f"{a} {n}" for a, n in zip(series.axes, series.shape))
    return f"{series.dtype} pixels of axes {series.axes} ({sizes})"


class OmeTiffSlide(TiffPagesSlide):
    """An OME-TIFF slide: one RGB series of an OME-TIFF and its pyramid."""

    vendor = "ome-tiff"

    def __init__(self, source: Source, name: str) -> None:
        import tifffile

        try:
            import imagecodecs  # noqa: F401  (tifffile decodes JPEG and the rest through it)
        except ImportError as err:  # pragma: no cover - a dependency of wsiseg
            raise SlideError(f"{name}: reading OME-TIFF needs imagecodecs ({err}); install it "
                             "with `pip install imagecodecs`") from err
        try:
            with _tifffile_quiet():
                tif = tifffile.TiffFile(source)
                tif.series  # noqa: B018 - parsed here, its complaints quiet
        except Exception as err:
            raise SlideError(f"{name}: not a TIFF that can be read ({first_line(err)}); the "
                             "file may be damaged: export it again") from err
        self._tif = tif
        self._fd: int | None = None
        try:
            self._pages, self.series_index, description, assoc = self._choose(tif, name)
            if isinstance(source, (str, os.PathLike)):
                self._fd = os.open(source, os.O_RDONLY)
            else:
                tif.filehandle.set_lock(True)
            grids = [level_grid(page, name) for page in self._pages]
            sizes = [(g.width, g.height) for g in grids]
            series = tif.series[self.series_index]
            mpp, extra = _ome_metadata(tif, self.series_index, series.name, name)
            super().__init__(name, grids, downsamples_from_sizes(sizes), mpp, extra,
                             description, assoc)
            for level in range(len(grids)):
                self._check_codec(level)
        except BaseException:
            self._close_files()
            raise

    def _choose(self, tif: tifffile.TiffFile, name: str
                ) -> tuple[list[tifffile.TiffPage], int, str, LazyImages]:
        """The pages of the levels of the largest RGB series, its index, a description and
        the other RGB series as associated images."""
        import tifffile

        all_series = list(tif.series)
        if not all_series:
            raise SlideError(f"{name}: an OME-TIFF without any image; export it again")
        rgb = [i for i, s in enumerate(all_series) if _is_rgb(s)]
        if not rgb:
            largest = max(all_series, key=lambda s: int(np.prod(s.shape)))
            raise SlideError(f"{name}: an OME-TIFF of {_describe_pixels(largest)}, not RGB; "
                             f"{BRIGHTFIELD}")
        index = max(rgb, key=lambda i: (all_series[i].shape[0] * all_series[i].shape[1]
                                        if all_series[i].axes.startswith("YX")
                                        else int(np.prod(all_series[i].shape)), -i))
        series = all_series[index]
        level_series = list(series.levels)
        used = {index}
        if len(level_series) == 1:  # levels written as series of their own, one after another
            flattened = _flattened_levels(all_series, index)
            level_series += flattened
            used |= set(range(index + 1, index + 1 + len(flattened)))
        pages: list[tifffile.TiffPage] = []
        for level in level_series:
            level_pages = [p for p in level.pages if p is not None]
            page = level.keyframe
            if len(level_pages) != 1 or not isinstance(page, tifffile.TiffPage):
                raise SlideError(f"{name}: level {len(pages)} of series {index} has "
                                 f"{len(level_pages)} planes, not one RGB plane; {BRIGHTFIELD}")
            if not (page.samplesperpixel == 3 and page.bitspersample == 8
                    and page.planarconfig == 1 and page.imagedepth == 1):
                raise SlideError(f"{name}: level {len(pages)} of series {index} is not 8-bit "
                                 f"interleaved RGB; {BRIGHTFIELD}")
            pages.append(page)
        label = f" ({series.name!r})" if series.name else ""
        description = (f"OME-TIFF series {index} of {len(all_series)}{label}, the largest RGB "
                       "pyramid" if len(all_series) > len(used) else "")
        sizes: dict[str, tuple[int, int]] = {}
        by_name: dict[str, int] = {}
        for i in rgb:
            other = all_series[i]
            h, w = other.shape[0], other.shape[1]
            if i in used or len(other.levels) != 1 or h * w > MAX_ASSOCIATED_PIXELS:
                continue
            key = (other.name or f"series {i}").strip().lower() or f"series {i}"
            if key in sizes:
                key = f"{key} ({i})"
            sizes[key], by_name[key] = (w, h), i
        return pages, index, description, LazyImages(
            sizes, lambda key: np.asarray(tif.series[by_name[key]].asarray()))

    def _read_bytes(self, page: tifffile.TiffPage, offset: int, count: int) -> bytes:
        if self._fd is not None and page.parent is self._tif:
            return os.pread(self._fd, count, offset)  # no shared file offset to lock
        fh = page.parent.filehandle
        with fh.lock:
            fh.seek(offset)
            return bytes(fh.read(count))

    def _close_files(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._tif.close()

    def close(self) -> None:
        super().close()
        self._close_files()


def _flattened_levels(all_series: list[tifffile.TiffPageSeries], index: int
                      ) -> list[tifffile.TiffPageSeries]:
    """The series after ``index`` that are its reduced levels: single-level RGB images, each
    smaller than the one before by the same factor across and down (within rounding)."""
    w0, h0 = all_series[index].shape[1], all_series[index].shape[0]
    found: list[tifffile.TiffPageSeries] = []
    last = w0
    for other in all_series[index + 1 :]:
        h, w = other.shape[0], other.shape[1]
        if not (_is_rgb(other) and len(other.levels) == 1 and other.keyframe is not None
                and other.keyframe.is_tiled and 0 < w < last):
            break
        if abs(w0 / w - h0 / h) > 0.02 * (w0 / w) + 2 / min(w, h):
            break
        found.append(other)
        last = w
    return found


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ome_metadata(tif: tifffile.TiffFile, index: int, series_name: str, name: str
                  ) -> tuple[tuple[float, float] | None, dict[str, str]]:
    """The series' resolution (um/px) from the OME-XML, and properties worth keeping."""
    extra = {"ome.series": str(index)}
    if series_name:
        extra["ome.image-name"] = series_name
    try:
        root = ET.fromstring(tif.ome_metadata or "")
    except ET.ParseError as err:
        logger.warning("%s: its OME-XML cannot be parsed (%s); no resolution from it", name,
                       first_line(err))
        return None, extra
    companion = _companion(tif, root, name)
    if companion is not None:  # a binary-only file of a multi-file OME-TIFF
        root, images = companion
        if not images:
            return None, extra
    else:
        images = [e for e in root if _local(e.tag) == "Image"]
    image = None
    if len(images) == len(tif.series) and index < len(images):
        image = images[index]
    else:
        named = [e for e in images if e.get("Name") == series_name]
        image = named[0] if len(named) == 1 else None
    if image is None:
        logger.warning("%s: the OME-XML image of series %d cannot be told apart; no resolution "
                       "from it", name, index)
        return None, extra
    pixels = next((e for e in image if _local(e.tag) == "Pixels"), None)
    mpp: tuple[float, float] | None = None
    if pixels is not None:
        mx = _physical_size(pixels, "X", name)
        my = _physical_size(pixels, "Y", name)
        if mx is not None and my is not None:
            mpp = (mx, my)
    power = _objective_power(root, image)
    if power:
        extra["openslide.objective-power"] = power
    return mpp, extra


#: The largest companion OME-XML file read.
MAX_COMPANION_BYTES = 16 * 1024 * 1024


def _companion(tif: tifffile.TiffFile, root: ET.Element, name: str
               ) -> tuple[ET.Element, list[ET.Element]] | None:
    """For a binary-only OME-TIFF (its OME-XML holds only ``BinaryOnly``, pointing to a
    companion ``.companion.ome`` file that holds the metadata of every file of the set):
    the companion's root and its images stored in this file (by their ``TiffData``'s
    ``UUID FileName``), empty when it cannot be read (with a warning naming it). None for
    an OME-TIFF that holds its own metadata."""
    binary = next((e for e in root if _local(e.tag) == "BinaryOnly"), None)
    if binary is None:
        return None
    meta = binary.get("MetadataFile", "")
    folder = tif.filehandle.dirname
    path = Path(folder) / meta if folder and meta else None
    if path is None or Path(meta).name != meta or not path.is_file():
        logger.warning("%s: its metadata (resolution included) is in the companion file "
                       "%r, which is not beside it; put it there, or pass --slide-mpp", name,
                       meta)
        return root, []
    try:
        if path.stat().st_size > MAX_COMPANION_BYTES:
            raise ValueError(f"larger than {MAX_COMPANION_BYTES >> 20} MiB")
        companion = ET.fromstring(path.read_bytes())
    except (OSError, ValueError, ET.ParseError) as err:
        logger.warning("%s: its companion metadata file %s cannot be read (%s); no "
                       "resolution from it", name, path, first_line(err))
        return root, []
    own = tif.filehandle.name
    images = [e for e in companion if _local(e.tag) == "Image" and any(
        _local(u.tag) == "UUID" and u.get("FileName") == own
        for d in e.iter() if _local(d.tag) == "TiffData" for u in d)]
    if not images:
        logger.warning("%s: its companion metadata file %s names no image stored in it; no "
                       "resolution from it", name, path)
    return companion, images


def _physical_size(pixels: ET.Element, axis: str, name: str) -> float | None:
    """``PhysicalSize{axis}`` in micrometres, or None (with a warning when it is there but not
    a positive length)."""
    value = pixels.get(f"PhysicalSize{axis}")
    if value is None:
        return None
    unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
    factor = LENGTH_UNITS_UM.get(unit)
    try:
        size = float(value)
    except ValueError:
        size = float("nan")
    if factor is None or not size > 0 or not np.isfinite(size):
        logger.warning("%s: its OME-XML gives PhysicalSize%s %s %s, not a length; the slide "
                       "is taken to have no resolution (pass --slide-mpp)", name, axis, value,
                       unit)
        return None
    return size * factor


def _objective_power(root: ET.Element, image: ET.Element) -> str | None:
    """NominalMagnification of the objective the image's ObjectiveSettings point to."""
    settings = next((e for e in image if _local(e.tag) == "ObjectiveSettings"), None)
    if settings is None:
        return None
    wanted = settings.get("ID")
    for element in root.iter():
        if _local(element.tag) == "Objective" and element.get("ID") == wanted:
            power = element.get("NominalMagnification")
            if power:
                return f"{float(power):g}" if _is_number(power) else None
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
