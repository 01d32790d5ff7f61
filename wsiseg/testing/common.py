"""What the slide writers share: the tile compressions and the checks of their arguments."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile

#: Tile compressions :func:`write_svs` and :func:`write_generic_tiff` accept, and their
#: tifffile names. All of them are read by OpenSlide; only ``"jpeg"`` is lossy.
COMPRESSIONS: dict[str, str | None] = {
    "jpeg": "jpeg",
    "none": None,
    "deflate": "zlib",
    "lzw": "lzw",
    "zstd": "zstd",
}


def _check_common(tile: int, compression: str, quality: int) -> str | None:
    if compression not in COMPRESSIONS:
        raise ValueError(
            f"compression {compression!r} is not one OpenSlide reads here; use one of "
            f"{', '.join(repr(c) for c in COMPRESSIONS)}"
        )
    if tile < 16 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16 (JPEG 4:2:0 blocks), got {tile}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    return COMPRESSIONS[compression]


def _check_downsamples(downsamples: Sequence[int]) -> tuple[int, ...]:
    ds = tuple(int(d) for d in downsamples)
    if (
        not ds
        or ds[0] != 1
        or any(int(d) != d for d in downsamples)
        or any(b <= a for a, b in zip(ds, ds[1:]))
    ):
        raise ValueError(
            f"downsamples must be increasing integers starting with 1, e.g. (1, 4, 16); got "
            f"{tuple(downsamples)}"
        )
    return ds


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb)



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

