"""The readers behind a slide, chosen in one place (:func:`open_backend`).

Every backend is an ``openslide.AbstractSlide``, so :class:`~wsiseg.slide.reader.Slide` and the
viewer's Deep Zoom tiles take any of them:

- OME-TIFF (a TIFF whose first ImageDescription is OME-XML) is read by
  :class:`~wsiseg.slide.backends.ome_tiff.OmeTiffSlide` with tifffile, even where OpenSlide
  would open it as generic TIFF (it would lose the resolution, which is in the OME-XML);
- an OME-Zarr folder (bioformats2raw, or an NGFF image on zarr v2 or v3) by
  :class:`~wsiseg.slide.backends.ome_zarr.OmeZarrSlide` with zarr;
- everything else (SVS, NDPI, MRXS, DICOM, generic TIFF, ...) by OpenSlide.

The backends read here have :meth:`~wsiseg.slide.backends.base.ChunkedSlide.read_into`, a numpy
path that ``Slide`` uses instead of PIL images. :func:`is_ome_zarr` tells a folder that is a
slide from a DICOM series folder or a folder of slides.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from wsiseg.errors import SlideError
from wsiseg.slide.backends.ome_tiff import is_ome_tiff
from wsiseg.slide.backends.ome_zarr import is_ome_zarr, is_zarr_folder, result_slide
from wsiseg.slide.dicom_series import DICOM_SUFFIX, dicom_files, dicom_problem, series_file
from wsiseg.slide.tiff_extent import check_complete

if TYPE_CHECKING:
    import openslide

#: Who reads a slide.
Backend = Literal["openslide", "ome-tiff", "ome-zarr"]

__all__ = ["Backend", "backend_of", "is_ome_tiff", "is_ome_zarr", "open_backend", "slide_file"]


def slide_file(path: Path) -> Path:
    """What a backend opens for the slide at ``path``: the file itself, an OME-Zarr folder
    itself, or for a folder holding one DICOM series, its level-0 instance (OpenSlide gathers
    the rest of the series from there). Raises :class:`SlideError` for other folders."""
    if not path.is_dir():
        return path
    if is_ome_zarr(path) or result_slide(path) is not None:
        return path  # a result is refused, with its own line, when it is opened
    if is_zarr_folder(path) and not dicom_files(path):
        raise SlideError(f"{path}: a zarr folder but not an OME-Zarr image (no multiscales or "
                         "bioformats2raw.layout in its attributes); give an OME-Zarr slide, "
                         "e.g. written by bioformats2raw")
    return series_file(path)


def backend_of(file: str | os.PathLike[str]) -> Backend:
    """The backend that reads ``file`` (as :func:`slide_file` gives it)."""
    path = Path(file)
    if path.is_dir():
        return "ome-zarr"
    if is_ome_tiff(path):
        return "ome-tiff"
    return "openslide"


def open_backend(file: str | os.PathLike[str]) -> openslide.AbstractSlide:
    """Open ``file`` (as :func:`slide_file` gives it) with its backend; a
    :class:`SlideError` naming the file when it cannot be opened."""
    kind = backend_of(file)
    if kind == "ome-zarr":
        from wsiseg.slide.backends.ome_zarr import OmeZarrSlide

        return OmeZarrSlide(file)
    if kind == "ome-tiff":
        from wsiseg.slide.backends.ome_tiff import OmeTiffSlide

        try:
            return OmeTiffSlide(file, str(file))
        except SlideError:
            check_complete(Path(file))  # a file cut short says so, not what broke in it
            raise
    return _open_openslide(Path(file))


def _open_openslide(file: Path) -> openslide.OpenSlide:
    try:
        import openslide
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise SlideError(
            f"OpenSlide is not available ({err}); install it with `pip install openslide-python "
            "openslide-bin`"
        ) from err
    try:
        return openslide.OpenSlide(str(file))
    except openslide.OpenSlideUnsupportedFormatError as err:
        check_complete(file)
        raise SlideError(
            f"{file}: not a whole-slide image OpenSlide can read (unsupported or missing "
            "format); convert it to a tiled pyramidal TIFF/SVS or OME-TIFF"
        ) from err
    except openslide.OpenSlideError as err:
        check_complete(file)
        problem = dicom_problem(file) if file.suffix.lower() == DICOM_SUFFIX else None
        if problem is not None:
            raise SlideError(problem) from err
        raise SlideError(
            f"{file}: OpenSlide cannot open it ({err}); the file may be damaged or use "
            "an unsupported compression"
        ) from err
    except OSError as err:
        raise SlideError(f"{file}: cannot be read ({err})") from err
