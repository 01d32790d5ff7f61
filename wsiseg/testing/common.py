"""What the slide writers share beyond :mod:`wsiseg.slide.svs_writer` (whose compressions and
checks of arguments they use too): dropping tags from a written TIFF."""

from __future__ import annotations

import struct
from pathlib import Path

import tifffile


def _drop_tags(path: Path, codes: frozenset[int]) -> None:
    """Remove the tags ``codes`` from every IFD of a TIFF, in place.

    Each IFD is rewritten where it is, shorter; the values of dropped tags stay in the file,
    unreferenced.
    """
    with tifffile.TiffFile(path) as tif:
        order = tif.byteorder
        big = tif.is_bigtiff
        offsets = [page.offset for page in tif.pages]
    count_fmt, entry_size, next_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
    count_size, next_size = struct.calcsize(count_fmt), struct.calcsize(next_fmt)
    with open(path, "r+b") as f:
        for offset in offsets:
            f.seek(offset)
            (n,) = struct.unpack(order + count_fmt, f.read(count_size))
            entries = f.read(n * entry_size)
            nxt = f.read(next_size)
            kept = [
                entries[i : i + entry_size]
                for i in range(0, len(entries), entry_size)
                if struct.unpack(order + "H", entries[i : i + 2])[0] not in codes
            ]
            f.seek(offset)
            f.write(struct.pack(order + count_fmt, len(kept)) + b"".join(kept) + nxt)

