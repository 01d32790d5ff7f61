"""A pre-flight check of slides (``wsiseg info --check``): which reader opens each, why the
others do not, its levels, its resolution and where that comes from, and whether a sample of
its tiles decodes, before a night's batch finds out slide by slide.

:func:`check_slide` never raises for a bad slide: what is wrong is in its :class:`SlideCheck`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from wsiseg.errors import WsisegError
from wsiseg.slide.geometry import check_slide_mpp
from wsiseg.slide.remote import SlideUrl, slide_location

#: Sample regions decoded per level (a grid over the scanned area), and their side in pixels.
SAMPLE_GRID = 4
SAMPLE_SIZE = 256

#: Where each reader's level-0 resolution comes from, by the vendor the reader gives.
_MPP_ORIGIN = {
    "aperio": "the Aperio ImageDescription (MPP)",
    "hamamatsu": "the NDPI's TIFF resolution tags",
    "mirax": "the MRXS Slidedat.ini",
    "generic-tiff": "the TIFF resolution tags",
    "dicom": "the DICOM PixelSpacing",
    "philips": "the Philips XML (PixelSpacing)",
    "leica": "the Leica SCN XML",
    "ventana": "the Ventana BIF XML (ScanRes)",
    "ome-tiff": "the OME-XML (PhysicalSizeX/Y and their unit)",
    "ome-zarr": "the NGFF multiscales (scale and axis unit)",
}


@dataclass
class SlideCheck:
    """What :func:`check_slide` found about one slide."""

    path: str
    #: The reader that opens it ("openslide", "ome-tiff", "ome-zarr", "tiff-stream"), "" if none.
    reader: str = ""
    vendor: str = ""
    #: Why each other reader does not read it.
    others: dict[str, str] = field(default_factory=dict)
    levels: tuple[tuple[int, int], ...] = ()
    mpp: tuple[float, float] | None = None
    mpp_origin: str = ""
    samples: int = 0
    decoded: int = 0
    #: The first sample that did not decode, as one line.
    sample_error: str = ""
    seconds: float = 0.0
    #: Why it cannot be opened at all ("" when it opens).
    error: str = ""
    #: Why its recorded resolution cannot be used ("" when it can, or it has none).
    mpp_error: str = ""

    @property
    def status(self) -> str:
        """``unreadable``, ``damaged`` (opens, but sample tiles do not decode), ``no mpp``
        (predict needs ``--slide-mpp``) or ``ready``."""
        if self.error:
            return "unreadable"
        if self.decoded < self.samples:
            return "damaged"
        return "no mpp" if self.mpp is None or self.mpp_error else "ready"

    def lines(self) -> list[str]:
        """The check as ``wsiseg info --check`` prints it."""
        head = f"{self.path}: {self.status}"
        if self.error:
            return [head, f"  error:   {self.error}"] + self._others()
        out = [head, f"  reader:  {self.reader} ({self.vendor})", *self._others()]
        sizes = ", ".join(f"{w} x {h}" for w, h in self.levels)
        out.append(f"  levels:  {len(self.levels)}: {sizes}")
        if self.mpp_error:
            out.append(f"  mpp:     {self.mpp_error}")
        elif self.mpp is None:
            out.append("  mpp:     none in its metadata: predict it with --slide-mpp UM_PER_PX "
                       "(or an mpp column in a CSV list)")
        else:
            out.append(f"  mpp:     {self.mpp[0]:.4g} x {self.mpp[1]:.4g} um/px, from "
                       f"{self.mpp_origin}")
        tiles = f"  tiles:   {self.decoded} of {self.samples} sample regions decoded"
        out.append(tiles + (f"; {self.sample_error}" if self.sample_error else
                            f" ({self.seconds:.2f} s)"))
        return out

    def _others(self) -> list[str]:
        return [f"  not {name}: {why}" for name, why in self.others.items()]


def mpp_origin(vendor: str) -> str:
    """Where a slide of ``vendor`` has its level-0 resolution from."""
    return _MPP_ORIGIN.get(vendor, f"the {vendor} metadata (as OpenSlide gives it)")


def other_readers(path: Path, reader: str) -> dict[str, str]:
    """Why each reader but ``reader`` does not read ``path`` (its opened file or folder)."""
    from wsiseg.slide.backends import is_ome_zarr

    why: dict[str, str] = {}
    if isinstance(path, SlideUrl):
        if reader != "openslide":
            why["openslide"] = "OpenSlide reads local files only"
        return why
    if reader != "openslide":
        if path.is_dir():
            why["openslide"] = "a folder, not a DICOM series"
        else:
            import openslide

            kind = openslide.OpenSlide.detect_format(str(path))
            why["openslide"] = ("OpenSlide does not recognise it" if kind is None else
                                f"OpenSlide would read it as {kind}, which loses what "
                                f"{reader} reads")
    if reader != "ome-tiff":
        why["ome-tiff"] = ("a folder" if path.is_dir() else
                           "no OME-XML in its first ImageDescription")
    if reader != "ome-zarr":
        why["ome-zarr"] = ("a folder without multiscales or bioformats2raw.layout"
                           if path.is_dir() and not is_ome_zarr(path) else "not a folder")
    return why


def check_slide(item: str | os.PathLike[str], grid: int = SAMPLE_GRID,
                size: int = SAMPLE_SIZE) -> SlideCheck:
    """Open ``item`` (a slide file, DICOM folder, OME-Zarr folder or URL) and decode
    ``grid`` x ``grid`` sample regions of ``size`` px spread over each level's scanned area."""
    from wsiseg.slide.backends import backend_of, slide_file
    from wsiseg.slide.reader import open_slide

    location = slide_location(item)
    check = SlideCheck(path=str(location))
    try:
        slide = open_slide(location)
    except WsisegError as err:
        check.error = str(err)
        if not isinstance(location, SlideUrl):
            try:
                opened = slide_file(location)
                check.others = other_readers(opened, backend_of(opened))
            except (WsisegError, OSError):
                pass
        return check
    with slide:
        check.reader, check.vendor = slide.backend, slide.vendor
        check.others = other_readers(slide.file, check.reader)
        check.levels = slide.level_dimensions
        check.mpp = slide.metadata_mpp
        check.mpp_origin = mpp_origin(slide.vendor) if check.mpp else ""
        if check.mpp is not None:
            try:
                check_slide_mpp(check.mpp, f"{check.path} (by {check.mpp_origin})")
            except WsisegError as err:
                check.mpp_error = str(err)
        started = time.perf_counter()
        bx, by, bw, bh = slide.bounds
        for level, d in enumerate(slide.level_downsamples):
            x0, y0 = int(bx / d), int(by / d)
            w, h = max(1, int(bw / d)), max(1, int(bh / d))
            for j in range(grid):
                for i in range(grid):
                    x = x0 + (w * (2 * i + 1)) // (2 * grid) - size // 2
                    y = y0 + (h * (2 * j + 1)) // (2 * grid) - size // 2
                    check.samples += 1
                    try:
                        slide.read_level(level, max(x, 0), max(y, 0), size, size)
                    except WsisegError as err:
                        check.sample_error = check.sample_error or str(err)
                    else:
                        check.decoded += 1
        check.seconds = time.perf_counter() - started
    return check
