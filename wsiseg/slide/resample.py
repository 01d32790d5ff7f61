"""Exact area-average resampling by any factor >= 1. Pure functions.

Output pixel ``k`` covers the input interval ``[origin + k * ratio, origin + (k + 1) * ratio)``;
its value is the mean of the input over that interval, each input pixel weighted by the length
of its overlap. The weights of a pixel depend only on its absolute index, so resampling a
region in pieces gives bit-for-bit the same pixels as resampling it whole.
"""

from __future__ import annotations

import math

import numpy as np
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


def resample_area(image: np.ndarray, rows: sparse.csr_matrix, cols: sparse.csr_matrix) -> np.ndarray:
    """Apply row and column weights to an (H, W, C) uint8 image; returns uint8 (h, w, C)."""
    h_in, w_in, c = image.shape
    tmp = rows @ image.reshape(h_in, w_in * c).astype(np.float32)  # (h, w_in * c)
    h = tmp.shape[0]
    tmp = tmp.reshape(h, w_in, c).transpose(1, 0, 2).reshape(w_in, h * c)
    out = cols @ tmp  # (w, h * c)
    out = out.reshape(cols.shape[0], h, c).transpose(1, 0, 2)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
