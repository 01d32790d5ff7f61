"""A folder of DICOM instances as one slide.

A DICOM whole-slide image is a series: one ``.dcm`` file (instance) per pyramid level, plus
label, overview and thumbnail instances, all sharing a Series Instance UID. OpenSlide opens the
whole series given any one of its files, so wsiseg takes the *folder* as the slide and opens it
through one file chosen by a fixed rule (:func:`series_file`): the largest pyramid-level
(``VOLUME``) instance, ties broken by file name; without readable level headers, the first file
in sorted order.

Only the header of each file is parsed (no pixel data, no third-party DICOM library): the file
meta group and the data set up to the total pixel matrix size, in Explicit or Implicit VR
Little Endian, the encodings of every DICOM WSI transfer syntax. :func:`first_fragment` reads
on to the first fragment of encapsulated pixel data (a JPEG frame's markers), and
:func:`dicom_problem` tells what in a series' headers OpenSlide refuses.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from wsiseg.errors import SlideError

#: File name ending of DICOM instances taken from a folder.
DICOM_SUFFIX = ".dcm"
#: Media Storage SOP Class UID of a VL Whole Slide Microscopy Image.
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"

_IMPLICIT_LE = "1.2.840.10008.1.2"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
# Explicit-VR elements whose length is 4 bytes after 2 reserved ones.
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
             b"UT", b"UV"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_SOP_CLASS = 0x00020002
_TRANSFER_SYNTAX = 0x00020010
_IMAGE_TYPE = 0x00080008
_SERIES_UID = 0x0020000E
_PHOTOMETRIC = 0x00280004
_COLUMNS_TOTAL = 0x00480006
_ROWS_TOTAL = 0x00480007
_PIXEL_DATA = 0x7FE00010
# Tags after these cannot hold anything read here: stop before the pixel data.
_LAST = _ROWS_TOTAL
_WANTED = frozenset({_SOP_CLASS, _TRANSFER_SYNTAX, _IMAGE_TYPE, _SERIES_UID, _PHOTOMETRIC,
                     _COLUMNS_TOTAL, _ROWS_TOTAL})
#: The most of a first fragment :func:`first_fragment` returns: far more than the markers
#: before a JPEG frame's scan, far less than a file.
FRAGMENT_LIMIT = 1 << 20


@dataclass(frozen=True)
class DicomHeader:
    """What deciding on a DICOM folder needs from one instance's header."""

    path: Path
    sop_class: str
    series_uid: str | None
    image_type: tuple[str, ...]
    size: tuple[int, int] | None  # TotalPixelMatrixColumns, TotalPixelMatrixRows
    transfer_syntax: str = ""
    photometric: str = ""  # PhotometricInterpretation
    has_image_type: bool = True  # ImageType is there (perhaps empty)

    @property
    def is_level(self) -> bool:
        """A pyramid level (``VOLUME``), not a label, overview or thumbnail."""
        return len(self.image_type) >= 3 and self.image_type[2] == "VOLUME"

    @property
    def pixels(self) -> int:
        """The pixels of the total pixel matrix; 0 when the header does not give its size."""
        return 0 if self.size is None else self.size[0] * self.size[1]


_SPECIAL_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                  (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def special_kind(path: str | os.PathLike[str]) -> str | None:
    """What ``path`` is ("a FIFO (named pipe)", "a socket", "a character device", ...) when it
    is neither a regular file nor a folder; None when it is one of those, or does not exist.
    Symbolic links are followed: a link to a slide file is a slide file."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((kind for test, kind in _SPECIAL_KINDS if test(mode)), "not a regular file")


def refuse_special_file(path: str | os.PathLike[str]) -> None:
    """Raise a :class:`SlideError` when ``path`` is a FIFO, socket or device: opening one
    could wait forever for a writer, or read a stream that never ends."""
    kind = special_kind(path)
    if kind is not None:
        raise SlideError(f"{path}: is {kind}, not a slide file; give the path of the slide "
                         "file itself (copy the data into a regular file first)")


def dicom_files(folder: Path) -> list[Path]:
    """The ``.dcm`` files directly in ``folder``, sorted by name."""
    try:
        return sorted(p for p in folder.iterdir()
                      if p.suffix.lower() == DICOM_SUFFIX and p.is_file())
    except OSError:
        return []


def is_dicom_folder(path: Path) -> bool:
    """Whether ``path`` is a folder holding DICOM instances (to be read as one slide)."""
    return path.is_dir() and bool(dicom_files(path))


def read_header(path: Path) -> DicomHeader | None:
    """The header of a DICOM Part 10 file, or None when it is not one that can be parsed."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 132:
                return None
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                if data[128:132] != b"DICM":
                    return None
                parsed = _parse(data)
                return None if parsed is None else _header(path, parsed[0])
    except (OSError, ValueError, struct.error, IndexError):
        return None


def first_fragment(path: Path, limit: int = FRAGMENT_LIMIT) -> bytes | None:
    """The first ``limit`` bytes at most of the first fragment of ``path``'s encapsulated pixel
    data: for JPEG frames, the first frame (one frame per fragment, as DICOM WSI writes them).
    None when the file is not DICOM, its pixel data is not encapsulated, or it cannot be read.
    Elements before the pixel data are walked over, never read."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size < 132:
                return None
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                if data[128:132] != b"DICM":
                    return None
                parsed = _parse(data, last=_PIXEL_DATA - 1)
                if parsed is None:
                    return None
                return _fragment(data, parsed[1], limit)
    except (OSError, ValueError, struct.error, IndexError):
        return None


def _fragment(data: mmap.mmap, pos: int, limit: int) -> bytes | None:
    """The first fragment of the pixel data element at ``pos`` (past its offset table)."""
    if pos + 12 > len(data):
        return None
    group, element = struct.unpack_from("<HH", data, pos)
    if (group << 16) | element != _PIXEL_DATA:
        return None
    # Encapsulated pixel data has an undefined length, in Explicit VR (OB) as in Implicit VR.
    if bytes(data[pos + 4:pos + 6]) in (b"OB", b"OW"):
        length, pos = struct.unpack_from("<I", data, pos + 8)[0], pos + 12
    else:
        length, pos = struct.unpack_from("<I", data, pos + 4)[0], pos + 8
    if length != _UNDEFINED:
        return None
    for index in range(2):  # the basic offset table (perhaps empty), then the first fragment
        tag, length = struct.unpack_from("<II", data, pos)
        if tag != 0xE000FFFE or length == _UNDEFINED or pos + 8 + length > len(data):
            return None
        if index == 1:
            return bytes(data[pos + 8:pos + 8 + min(length, limit)])
        pos += 8 + length
    return None  # pragma: no cover - the loop returns


def _parse(data: mmap.mmap, last: int = _LAST) -> tuple[dict[int, bytes], int] | None:
    """The wanted elements of the data set up to tag ``last``, and where the walk stopped."""
    found: dict[int, bytes] = {}
    # The file meta group is always Explicit VR Little Endian.
    pos = _walk(data, 132, True, found, stop_group=0x0002)
    syntax = _text(found.get(_TRANSFER_SYNTAX, b""))
    if syntax == _BIG_ENDIAN:
        return None
    pos = _walk(data, pos, syntax != _IMPLICIT_LE, found, last=last)
    return found, pos


def _header(path: Path, found: dict[int, bytes]) -> DicomHeader:
    size = None
    if _COLUMNS_TOTAL in found and _ROWS_TOTAL in found:
        size = (struct.unpack("<I", found[_COLUMNS_TOTAL][:4])[0],
                struct.unpack("<I", found[_ROWS_TOTAL][:4])[0])
    image_type = tuple(v.strip().upper() for v in _text(found.get(_IMAGE_TYPE, b"")).split("\\"))
    return DicomHeader(path, _text(found.get(_SOP_CLASS, b"")),
                       _text(found[_SERIES_UID]) if _SERIES_UID in found else None,
                       image_type if image_type != ("",) else (), size,
                       _text(found.get(_TRANSFER_SYNTAX, b"")),
                       _text(found.get(_PHOTOMETRIC, b"")).upper(), _IMAGE_TYPE in found)


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\x00 ").decode("ascii", "replace").strip()


def _walk(data: mmap.mmap, pos: int, explicit: bool, found: dict[int, bytes] | None,
          stop_group: int | None = None, end: int | None = None, last: int = _LAST) -> int:
    """Read elements from ``pos``; keep the wanted top-level values in ``found``. Returns where
    it stopped: at the end of the group ``stop_group``, at the first tag past ``last``, at
    ``end``, or at a delimiter (whose end it returns)."""
    limit = len(data) if end is None else end
    while pos + 8 <= limit:
        group, element = struct.unpack_from("<HH", data, pos)
        tag = (group << 16) | element
        if stop_group is not None and group != stop_group:
            return pos
        if found is not None and tag > last:
            return pos
        if tag in (_ITEM_END, _SEQ_END):
            return pos + 8
        vr = bytes(data[pos + 4:pos + 6])
        if explicit and tag != _ITEM and vr.isalpha() and vr.isupper():
            if vr in _LONG_VRS:
                length = struct.unpack_from("<I", data, pos + 8)[0]
                pos += 12
            else:
                length = struct.unpack_from("<H", data, pos + 6)[0]
                pos += 8
        else:
            length = struct.unpack_from("<I", data, pos + 4)[0]
            pos += 8
        if length == _UNDEFINED:  # a sequence or item that ends with a delimiter
            pos = _skip_undefined(data, pos, explicit)
            continue
        if found is not None and tag in _WANTED:
            found[tag] = bytes(data[pos:pos + length])
        pos += length
    return pos


def _skip_undefined(data: mmap.mmap, pos: int, explicit: bool) -> int:
    """Past a sequence of undefined length starting at ``pos`` (its first item)."""
    while pos + 8 <= len(data):
        tag = (struct.unpack_from("<H", data, pos)[0] << 16) | struct.unpack_from("<H", data,
                                                                                   pos + 2)[0]
        length = struct.unpack_from("<I", data, pos + 4)[0]
        pos += 8
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM:
            raise ValueError("malformed sequence")
        if length == _UNDEFINED:
            pos = _walk(data, pos, explicit, None)  # to past the item's delimiter
        else:
            pos += length
    raise ValueError("sequence runs past the end of the file")


def series_file(folder: Path) -> Path:
    """The file through which OpenSlide opens the slide held in ``folder``.

    Raises :class:`SlideError` naming the folder when it holds no ``.dcm`` file, a file that
    is not a DICOM whole-slide image, or instances of more than one series.
    """
    files = dicom_files(folder)
    if not files:
        raise SlideError(f"{folder}: is a folder without DICOM (.dcm) files; give a slide file, "
                         "or the folder of one DICOM series")
    headers = []
    for path in files:
        header = read_header(path)
        if header is None:
            raise SlideError(f"{path}: not a DICOM file that can be read (no DICM header, or "
                             f"big-endian); remove it from {folder}, which should hold one "
                             "DICOM series")
        if header.sop_class != WSI_SOP_CLASS:
            raise SlideError(f"{path}: a DICOM file but not a whole-slide image (SOP class "
                             f"{header.sop_class or 'missing'}); remove it from {folder}, which "
                             "should hold one DICOM WSI series")
        headers.append(header)
    series = sorted({h.series_uid or "" for h in headers})
    if len(series) > 1:
        counts = ", ".join(f"{sum(h.series_uid == s for h in headers)} of series ...{s[-12:]}"
                           for s in series)
        raise SlideError(f"{folder}: holds DICOM instances of {len(series)} series ({counts}); "
                         "a folder is read as one slide: move each series into a folder of its "
                         "own and give those folders (or their parent folder)")
    levels = [h for h in headers if h.is_level and h.size is not None]
    if not levels:
        return files[0]
    return min(levels, key=lambda h: (-h.pixels, h.path.name)).path


def slide_stem(path: Path) -> str:
    """The name a slide's result takes: a file's name without its suffix, a folder's whole
    name (DICOM series folders are often named by their UID, ``1.2.840...``) but for the
    suffix of an OME-Zarr folder (``a.ome.zarr`` maps to ``a.wsiseg.zarr``)."""
    if not path.is_dir():
        return path.stem
    for suffix in (".ome.zarr", ".zarr"):
        if path.name.lower().endswith(suffix) and len(path.name) > len(suffix):
            return path.name[: -len(suffix)]
    return path.name


def slide_size_bytes(path: Path) -> int | None:
    """A slide's bytes on disk: its file, or the ``.dcm`` files of a DICOM series folder
    together; None when it is neither."""
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in dicom_files(path))
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None


#: What OpenSlide needs of ImageType: four values, e.g. ORIGINAL\PRIMARY\VOLUME\NONE.
_IMAGE_TYPE_VALUES = 4


def dicom_problem(file: Path) -> str | None:
    """Why OpenSlide refuses the DICOM series of ``file``, where its own message does not say
    (OpenSlide 4.0.1: "Couldn't get image flavor"): an instance of the series, ``file`` or one
    beside it, without ImageType (0008,0008) or with fewer than its four values. One line
    naming the instance and the way out; None when ``file`` is not a DICOM whole-slide image
    or no such instance is found."""
    header = read_header(file)
    if header is None or header.sop_class != WSI_SOP_CLASS:
        return None
    # OpenSlide reads every instance of the series in the folder: the fault may be in another.
    headers = [header]
    for path in dicom_files(file.parent):
        if path.name == file.name:
            continue
        other = read_header(path)
        if (other is not None and other.sop_class == WSI_SOP_CLASS
                and other.series_uid == header.series_uid):
            headers.append(other)
    bad = [h for h in headers if len(h.image_type) < _IMAGE_TYPE_VALUES]
    if not bad:
        return None
    first = bad[0]
    n = len(bad) - 1
    others = f" (as do {n} other file{'s' if n > 1 else ''} of its series)" if n else ""
    if first.image_type:
        values = "\\".join(first.image_type)
        what = (f"its ImageType (0008,0008) is {values}{others}: {len(first.image_type)} "
                "value(s), where DICOM whole-slide images have four")
        fault = "the converter that wrote it filled it in wrongly"
    else:
        what = (f"has {'no' if not first.has_image_type else 'an empty'} ImageType (0008,0008)"
                f"{others}, which DICOM whole-slide images must have")
        fault = "the converter that wrote it left it out"
    return (f"{first.path}: {what} (ORIGINAL\\PRIMARY\\VOLUME\\NONE on level 0) and OpenSlide "
            f"needs to tell pyramid levels from label and overview images; {fault}: convert "
            "the slide again with a converter that writes DICOM WSI as the standard asks, or "
            "to a tiled pyramidal TIFF/SVS")
