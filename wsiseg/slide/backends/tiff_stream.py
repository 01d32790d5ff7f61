"""Aperio SVS and generic tiled TIFF slides read with tifffile from a remote file.

OpenSlide reads only local files, so a slide at a URL (:mod:`wsiseg.slide.remote`) is read
here: tifffile parses the directories from the remote file object, and each tile is fetched as
its own byte range and decoded by imagecodecs. The levels, resolution and objective power are
OpenSlide's for the same file, so a remote slide maps as its local copy does:

- Aperio (the first ImageDescription starts with ``Aperio``): the levels are the tiled pages,
  in file order; the stripped pages are the associated images (the second page the thumbnail,
  the others ``label`` or ``macro`` by their description); ``openslide.mpp-x``/``mpp-y`` are
  the description's ``MPP``, ``openslide.objective-power`` its ``AppMag``;
- generic TIFF (a tiled first page of no other vendor): the levels are the tiled pages,
  largest first; the resolution is XResolution/YResolution in ResolutionUnit centimetre or
  inch (inch when the unit is missing, as TIFF says), none otherwise.

Only 8-bit interleaved RGB levels are read, as :mod:`wsiseg.slide.tiff_tiles` reads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from wsiseg.errors import SlideError, first_line
from wsiseg.slide.backends.base import LazyImages, downsamples_from_sizes
from wsiseg.slide.backends.ome_tiff import _tifffile_quiet
from wsiseg.slide.backends.tiff_pages import TiffPagesSlide, level_grid
from wsiseg.slide.remote import DOWNLOAD_FIRST, scrub

if TYPE_CHECKING:
    import tifffile

    from wsiseg.slide.remote import RemoteSource

#: The TIFF families read here, by OpenSlide's vendor names.
TiffKind = Literal["aperio", "generic-tiff"]
#: Micrometres per ResolutionUnit (2: inch, 3: centimetre).
_UNIT_UM = {2: 25400.0, 3: 10000.0}


class TiffStreamSlide(TiffPagesSlide):
    """An SVS or generic tiled TIFF slide read from a :class:`RemoteSource`."""

    def __init__(self, source: RemoteSource, kind: TiffKind) -> None:
        import tifffile

        self.vendor = kind  # type: ignore[misc]  # per slide: one class reads both families
        self._source = source
        name = source.name
        try:
            with _tifffile_quiet():
                tif = tifffile.TiffFile(source.file, name=name.rsplit("/", 1)[-1])
                pages = [p for p in tif.pages if isinstance(p, tifffile.TiffPage)]
        except SlideError:
            raise
        except Exception as err:
            raise SlideError(f"{name}: not a TIFF that can be read "
                             f"({scrub(first_line(err), source.url)}); the file may be damaged: "
                             "export it again") from err
        self._tif = tif
        try:
            tif.filehandle.set_lock(True)  # associated images are read through it
            self._pages = [p for p in pages if p.is_tiled]
            if kind == "generic-tiff" and not (pages and pages[0].is_tiled):
                raise SlideError(f"{name}: a TIFF whose first image is not tiled; "
                                 f"{DOWNLOAD_FIRST}")
            if kind == "generic-tiff":
                self._pages.sort(key=lambda p: -p.imagewidth)
            for n, page in enumerate(self._pages):
                if not (page.samplesperpixel == 3 and page.bitspersample == 8
                        and page.planarconfig == 1 and page.imagedepth == 1):
                    raise SlideError(f"{name}: level {n} is not 8-bit interleaved RGB; wsiseg "
                                     "maps brightfield RGB slides: download it and convert it")
            if not self._pages:
                raise SlideError(f"{name}: a TIFF without tiled pages, not a whole-slide "
                                 "image; convert it to a tiled pyramidal TIFF/SVS")
            grids = [level_grid(page, name) for page in self._pages]
            sizes = [(g.width, g.height) for g in grids]
            if kind == "aperio":
                mpp, extra = _aperio_metadata(pages[0].description)
                associated = _aperio_associated(pages)
            else:
                mpp, extra = _tiff_resolution(self._pages[0]), {}
                associated = {}
            super().__init__(name, grids, downsamples_from_sizes(sizes), mpp, extra, "",
                             LazyImages({k: (p.imagewidth, p.imagelength)
                                         for k, p in associated.items()},
                                        lambda key: self._associated_pixels(associated[key])))
            # Each codec once, on its smallest level: a tile of level 0 costs a request and
            # bytes a prediction at a lower level does not need.
            checked = set()
            for level in reversed(range(len(grids))):
                codec = (self._pages[level].compression, self._pages[level].jpegtables is None)
                if codec not in checked:
                    checked.add(codec)
                    self._check_codec(level, tries=4)
        except BaseException:
            tif.close()
            raise

    def _associated_pixels(self, page: tifffile.TiffPage) -> npt.NDArray[np.uint8]:
        with _tifffile_quiet():
            pixels = np.asarray(page.asarray())
        if pixels.ndim != 3 or pixels.shape[2] < 3 or pixels.dtype != np.uint8:
            raise ValueError(f"{self.name}: an associated image that is not 8-bit RGB")
        return pixels[..., :3]

    codec_way_out = "download it and read it locally"

    def _read_bytes(self, page: tifffile.TiffPage, offset: int, count: int) -> bytes:
        return self._source.read_range(offset, count)  # one range request per tile

    def close(self) -> None:
        super().close()
        self._tif.close()
        self._source.close()


def _aperio_metadata(description: str) -> tuple[tuple[float, float] | None, dict[str, str]]:
    """Resolution and properties from an Aperio ImageDescription, as OpenSlide reads them:
    ``Aperio ...\\r\\nsize ...|Key = value|...``."""
    extra = {"openslide.comment": description}
    fields = description.split("|")
    for field in fields[1:]:
        key, sep, text = field.partition("=")
        if sep:
            extra[f"aperio.{key.strip()}"] = text.strip()
    mpp: tuple[float, float] | None = None
    try:
        value = float(extra.get("aperio.MPP", ""))
        if value > 0 and np.isfinite(value):
            mpp = (value, value)
    except ValueError:
        pass
    if extra.get("aperio.AppMag"):
        extra["openslide.objective-power"] = extra["aperio.AppMag"]
    return mpp, extra


def _aperio_associated(pages: list[tifffile.TiffPage]) -> dict[str, tifffile.TiffPage]:
    """The stripped pages of an SVS by name: the second page is the thumbnail, the others
    are ``label`` or ``macro`` by the second line of their description."""
    found: dict[str, tifffile.TiffPage] = {}
    for n, page in enumerate(pages):
        if page.is_tiled or page.samplesperpixel < 3 or page.bitspersample != 8:
            continue
        if n == 1:
            found["thumbnail"] = page
            continue
        lines = page.description.splitlines()
        words = lines[1].split() if len(lines) > 1 else []
        if words and words[0] in ("label", "macro"):
            found[words[0]] = page
    return found


def _tiff_resolution(page: tifffile.TiffPage) -> tuple[float, float] | None:
    """Micrometres per pixel from XResolution/YResolution in centimetres or inches."""
    tags = page.tags
    unit_tag = tags.get("ResolutionUnit")
    unit = int(unit_tag.value) if unit_tag is not None else 2
    if unit not in _UNIT_UM or "XResolution" not in tags or "YResolution" not in tags:
        return None
    mpp = []
    for name in ("XResolution", "YResolution"):
        value = tags[name].value
        try:
            res = value[0] / value[1] if isinstance(value, tuple) else float(value)
        except (TypeError, ZeroDivisionError, IndexError):
            return None
        if not res > 0:
            return None
        mpp.append(_UNIT_UM[unit] / res)
    return (mpp[0], mpp[1])
