"""Exact area-average resampling by any factor >= 1. Pure functions.

Output pixel ``k`` covers the input interval ``[origin + k * ratio, origin + (k + 1) * ratio)``;
its value is the mean of the input over that interval, each input pixel weighted by the length
of its overlap. The weights of a pixel depend only on its absolute index, so resampling a
region in pieces gives bit-for-bit the same pixels as resampling it whole.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import sparse


def area_weights(
    start: int, count: int, origin: float, ratio: float
) -> tuple[int, int, sparse.csr_matrix]:
    """Weights taking input pixels to output pixels ``[start, start + count)``.

    Returns ``(first, n_in, matrix)``: the input pixels needed are ``[first, first + n_in)``
    and ``matrix`` (count x n_in, float32) maps them to the outputs.
    """
    if ratio < 1:
        raise ValueError(f"area resampling only shrinks; ratio {ratio} < 1")
    k = np.arange(start, start + count, dtype=np.float64)
    lo = origin + k * ratio
    hi = origin + (k + 1) * ratio
    first = math.floor(lo[0])
    last = math.ceil(hi[-1])
    taps = math.ceil(ratio) + 1
    j = np.floor(lo)[:, None] + np.arange(taps)[None, :]
    overlap = np.minimum(j + 1, hi[:, None]) - np.maximum(j, lo[:, None])
    w = np.clip(overlap, 0, None) / ratio
    rows = np.repeat(np.arange(count), taps)
    cols = (j - first).astype(np.int64).ravel()
    keep = w.ravel() > 0
    n_in = last - first
    matrix = sparse.csr_matrix(
        (w.ravel()[keep].astype(np.float32), (rows[keep], cols[keep])), shape=(count, n_in)
    )
    matrix.sort_indices()
    return first, n_in, matrix


#: Input elements (pixels x channels) turned into float32 at a time by :func:`resample_area`:
#: 4 MB of scratch, so resampling needs little more memory than its uint8 input.
SLAB_ELEMENTS = 1 << 20


def resample_area(image: npt.NDArray[np.uint8], rows: sparse.csr_matrix,
                  cols: sparse.csr_matrix, out: npt.NDArray[np.uint8] | None = None
                  ) -> npt.NDArray[np.uint8]:
    """Apply row and column weights to an (H, W, C) uint8 image; returns uint8 (h, w, C).

    Written into ``out`` (uint8 (h, w, C), may be a view) when given. The output is made a few
    rows at a time, from the input rows they need: every output pixel is the same sum, in the
    same order, as with the whole image at once, so the result does not depend on the slabs.
    """
    h_in, w_in, c = image.shape
    h, w = rows.shape[0], cols.shape[0]
    if out is None:
        out = np.empty((h, w, c), dtype=np.uint8)
    flat = image.reshape(h_in, w_in * c)
    rows_per_output = max(1.0, h_in / max(h, 1))
    step = max(1, int(SLAB_ELEMENTS / (max(1, w_in * c) * rows_per_output)))
    for i0 in range(0, h, step):
        i1 = min(i0 + step, h)
        part = rows[i0:i1]
        j0, j1 = int(part.indices.min()), int(part.indices.max()) + 1
        part = sparse.csr_matrix((part.data, part.indices - j0, part.indptr),
                                 shape=(i1 - i0, j1 - j0))
        tmp = part @ flat[j0:j1].astype(np.float32)  # (i1 - i0, w_in * c)
        tmp = tmp.reshape(i1 - i0, w_in, c).transpose(1, 0, 2).reshape(w_in, (i1 - i0) * c)
        res = (cols @ tmp).reshape(w, i1 - i0, c).transpose(1, 0, 2)  # (i1 - i0, w, c)
        out[i0:i1] = np.clip(np.rint(res), 0, 255)
    return out
