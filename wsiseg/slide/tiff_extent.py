"""Is a slide file whole? An empty file, or a TIFF-family file (SVS, NDPI, generic TIFF, ...)
cut short by an incomplete copy, is told apart from one that is damaged inside, so that the
message gives the right way out. Only the image directories and their offset tables are read,
never the pixels. :func:`first_description` reads the first ImageDescription the same way (is
it OME-XML?)."""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Callable
from pathlib import Path

from wsiseg.errors import SlideError


def check_complete(path: Path) -> None:
    """Raise a :class:`SlideError` when ``path`` is empty, or a TIFF-family file (SVS, NDPI,
    generic TIFF, ...) cut short: smaller than the directories and pixel data it points to."""
    try:
        st = path.stat()
    except OSError:
        return  # unreadable: what OpenSlide says about it is the message
    if not stat.S_ISREG(st.st_mode):
        return  # a FIFO or device would block or never end: only regular files are walked
    size = st.st_size
    if size == 0:
        raise SlideError(f"{path} is empty (0 bytes); copy it again from its source, or "
                         "re-export it")
    try:
        end = tiff_extent(path)
    except Exception:  # noqa: BLE001 - a structure too damaged to walk: OpenSlide will say
        return
    if end is not None and end > size:
        raise SlideError(
            f"{path} is cut short: it has {size:,} bytes, but its TIFF directories point to data "
            f"up to byte {end:,} (an incomplete copy or export); copy it again from its source, "
            "or re-export it")


#: Bytes per value of each TIFF field type.
_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
                    13: 4, 16: 8, 17: 8, 18: 8}
_OFFSETS_TAGS = {273: 279, 324: 325}  # StripOffsets, TileOffsets -> their byte counts
_SUBIFDS = 330  # the pyramid levels of an OME-TIFF written by Bio-Formats live there


def tiff_extent(path: str | os.PathLike[str], max_pages: int = 4096,
                max_entries: int = 1 << 20) -> int | None:
    """How long a TIFF or BigTIFF file must be: the furthest byte its image directories (with
    their SubIFDs), their strip or tile tables and the strips or tiles reach. None when ``path`` is not a TIFF, or
    when its directories hold more than ``max_entries`` entries in all (too damaged to say).
    Reads only the directories and the offset tables, never the pixels.
    """
    if not stat.S_ISREG(os.stat(path).st_mode):
        return None  # a FIFO or device: opening it could wait forever
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(16)
        order = {b"II": "<", b"MM": ">"}.get(head[:2])
        if order is None or len(head) < 4:
            return None
        magic: int = struct.unpack(order + "H", head[2:4])[0]
        if magic == 42:
            word, count_fmt, entry_size, end = "I", "H", 12, 8
        elif magic == 43:
            word, count_fmt, entry_size, end = "Q", "Q", 20, 16
        else:
            return None
        if len(head) < end:  # cut inside the header
            return end
        first: int = struct.unpack(order + word, head[end - struct.calcsize(word) : end])[0]
        word_size, count_size = struct.calcsize(word), struct.calcsize(count_fmt)

        def read_values(offset: int, count: int, fmt: str) -> list[int] | None:
            n = struct.calcsize(fmt)
            if offset + count * n > size:
                return None
            f.seek(offset)
            return list(struct.unpack(f"{order}{count}{fmt}", f.read(count * n)))

        pending = [first]  # directories still to walk: the chain, and SubIFDs met on the way
        seen: set[int] = set()
        while pending and len(seen) < max_pages:
            offset = pending.pop()
            if not offset or offset in seen:
                continue
            seen.add(offset)
            end = max(end, offset + count_size)
            f.seek(offset)
            raw = f.read(count_size)
            if len(raw) < count_size:
                return end
            n: int = struct.unpack(order + count_fmt, raw)[0]
            max_entries -= n
            if max_entries < 0:
                return None
            table_end = offset + count_size + n * entry_size + word_size
            end = max(end, table_end)
            if table_end > size:
                return end
            table = f.read(n * entry_size + word_size)
            arrays: dict[int, list[int] | None] = {}
            for i in range(n):
                entry = table[i * entry_size : (i + 1) * entry_size]
                tag, kind = struct.unpack(order + "HH", entry[:4])
                count: int = struct.unpack(order + word, entry[4 : 4 + word_size])[0]
                inline = entry[4 + word_size :]
                fmt = {3: "H", 4: "I", 13: "I", 16: "Q", 18: "Q"}.get(kind)
                if tag == _SUBIFDS and fmt:
                    nbytes = struct.calcsize(fmt) * count
                    if nbytes > word_size:
                        sub_at: int = struct.unpack(order + word, inline)[0]
                        end = max(end, sub_at + nbytes)
                        pending.extend(read_values(sub_at, min(count, max_pages), fmt) or [])
                    else:
                        pending.extend(struct.unpack(f"{order}{count}{fmt}", inline[:nbytes]))
                    continue
                if tag not in _OFFSETS_TAGS and tag not in _OFFSETS_TAGS.values():
                    continue  # other values: a bad one is damage, not a file cut short
                nbytes = _TIFF_TYPE_SIZES.get(kind, 1) * count
                if nbytes > word_size:
                    at: int = struct.unpack(order + word, inline)[0]
                    end = max(end, at + nbytes)
                    arrays[tag] = read_values(at, count, fmt) if fmt else None
                elif fmt:
                    arrays[tag] = list(struct.unpack(f"{order}{count}{fmt}",
                                                     inline[: count * struct.calcsize(fmt)]))
            for offsets_tag, counts_tag in _OFFSETS_TAGS.items():
                offsets, counts = arrays.get(offsets_tag), arrays.get(counts_tag)
                if offsets and counts:
                    end = max([end] + [o + c for o, c in zip(offsets, counts) if c])
            pending.append(struct.unpack(order + word, table[n * entry_size :])[0])
        return end


def first_description(head: bytes, read_at: Callable[[int, int], bytes],
                      limit: int = 1 << 16) -> bytes | None:
    """The first ``limit`` bytes of the ImageDescription (tag 270) of a TIFF's first image
    directory, then ``b"..."`` and its last 64 bytes when it is longer; None when the file is
    not a TIFF or its first directory has none. ``head`` is the file's first 16 bytes,
    ``read_at(offset, count)`` reads any other bytes. Reads only that directory."""
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None or len(head) < 8:
        return None
    magic: int = struct.unpack(order + "H", head[2:4])[0]
    if magic == 42:
        word, count_fmt, entry_size = "I", "H", 12
        first: int = struct.unpack(order + "I", head[4:8])[0]
    elif magic == 43 and len(head) >= 16:
        word, count_fmt, entry_size = "Q", "Q", 20
        first = struct.unpack(order + "Q", head[8:16])[0]
    else:
        return None
    word_size, count_size = struct.calcsize(word), struct.calcsize(count_fmt)
    raw = read_at(first, count_size)
    if len(raw) < count_size:
        return None
    n: int = min(struct.unpack(order + count_fmt, raw)[0], 4096)
    table = read_at(first + count_size, n * entry_size)
    for i in range(len(table) // entry_size):
        entry = table[i * entry_size : (i + 1) * entry_size]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag != 270 or kind not in (1, 2, 7):
            continue
        count: int = struct.unpack(order + word, entry[4 : 4 + word_size])[0]
        inline = entry[4 + word_size :]
        if count <= word_size:
            return bytes(inline[:count])
        at: int = struct.unpack(order + word, inline)[0]
        if count <= limit + 64:
            return read_at(at, count)
        return read_at(at, limit) + b"..." + read_at(at + count - 64, 64)
    return None
