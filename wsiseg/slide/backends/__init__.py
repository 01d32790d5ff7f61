"""The readers behind a slide, chosen in one place (:func:`open_backend`).

Every backend is an ``openslide.AbstractSlide``, so :class:`~wsiseg.slide.reader.Slide` and the
viewer's Deep Zoom tiles take any of them:

- OME-TIFF (a TIFF whose first ImageDescription is OME-XML) is read by
  :class:`~wsiseg.slide.backends.ome_tiff.OmeTiffSlide` with tifffile, even where OpenSlide
  would open it as generic TIFF (it would lose the resolution, which is in the OME-XML);
- an OME-Zarr folder (bioformats2raw, or an NGFF image on zarr v2 or v3) by
  :class:`~wsiseg.slide.backends.ome_zarr.OmeZarrSlide` with zarr;
- everything else (SVS, NDPI, MRXS, DICOM, generic TIFF, ...) by OpenSlide.

A slide at a URL (:mod:`wsiseg.slide.remote`), which OpenSlide cannot open, is opened by
:func:`open_remote_backend`: OME-TIFF by ``OmeTiffSlide`` from the remote file, SVS and generic
tiled TIFF by :class:`~wsiseg.slide.backends.tiff_stream.TiffStreamSlide`; other formats are
refused.

The backends read here have :meth:`~wsiseg.slide.backends.base.ChunkedSlide.read_into`, a numpy
path that ``Slide`` uses instead of PIL images. :func:`is_ome_zarr` tells a folder that is a
slide from a DICOM series folder or a folder of slides.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from wsiseg.errors import SlideError, first_line
from wsiseg.slide.backends.ome_tiff import is_ome_tiff
from wsiseg.slide.backends.ome_zarr import is_ome_zarr, is_zarr_folder, result_slide
from wsiseg.slide.dicom_series import DICOM_SUFFIX, dicom_files, dicom_problem, series_file
from wsiseg.slide.tiff_extent import check_complete

if TYPE_CHECKING:
    import openslide

    from wsiseg.slide.backends.base import ChunkedSlide
    from wsiseg.slide.remote import RemoteSource

#: Who reads a slide.
Backend = Literal["openslide", "ome-tiff", "ome-zarr"]

__all__ = ["Backend", "backend_of", "is_ome_tiff", "is_ome_zarr", "open_backend",
           "open_remote_backend", "slide_file"]


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


#: The first bytes of a TIFF and of a BigTIFF, in either byte order.
_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


def open_remote_backend(url: str) -> tuple[ChunkedSlide, RemoteSource]:
    """Open the slide at ``url`` (see :mod:`wsiseg.slide.remote`) with the backend its first
    image directory calls for: OME-TIFF, Aperio SVS or generic tiled TIFF; a one-line
    :class:`SlideError` (without the URL's secrets) for anything else. Returns the backend
    and the remote file it reads (to close with it)."""
    from wsiseg.slide import remote
    from wsiseg.slide.backends.ome_tiff import OmeTiffSlide, _description
    from wsiseg.slide.backends.tiff_stream import TiffStreamSlide

    source = remote.RemoteSource(url)
    try:
        try:
            head = source.file.read(4)
            description = _description(source.file) if head in _TIFF_MAGIC else None
            source.file.seek(0)
        except SlideError:
            raise
        except (ValueError, struct.error) as err:
            raise SlideError(f"{source.name}: not a TIFF that can be read ({first_line(err)}); "
                             f"{remote.DOWNLOAD_FIRST}") from err
        except Exception as err:
            raise source.error(err) from err
        if head not in _TIFF_MAGIC:
            raise SlideError(f"{source.name}: not a TIFF; {remote.DOWNLOAD_FIRST}")
        text = (description or b"").lstrip()
        if is_ome_tiff(source.file):
            return OmeTiffSlide(source.file, source.name), source
        if text.startswith(b"Aperio"):
            return TiffStreamSlide(source, "aperio"), source
        if text.startswith(b"<"):  # Philips TIFF, Leica SCN, Ventana BIF: XML of their own
            raise SlideError(f"{source.name}: a TIFF of a vendor format read only locally; "
                             f"{remote.DOWNLOAD_FIRST}")
        return TiffStreamSlide(source, "generic-tiff"), source
    except BaseException:
        source.close()
        raise
