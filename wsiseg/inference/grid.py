"""The patch grid over the analysis image, and which windows hold enough tissue. Pure code.

Windows of ``patch_size`` at ``stride`` start at ``-(patch_size - stride)`` and continue until the
last one passes the far edge, so every real pixel lies in the same number of windows,
``(patch_size / stride) ** 2`` when the stride divides the patch size. Outside the image the
windows see glass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from wsiseg.errors import ConfigError


@dataclass(frozen=True)
class PatchGrid:
    """Window positions over a ``width x height`` analysis image."""

    width: int
    height: int
    patch_size: int
    stride: int

    def __post_init__(self) -> None:
        if self.patch_size < 1:
            raise ConfigError(f"patch size must be at least 1 pixel, got {self.patch_size}")
        if not 1 <= self.stride <= self.patch_size:
            raise ConfigError(
                f"stride must be between 1 and the patch size ({self.patch_size}), "
                f"got {self.stride}"
            )

    @property
    def origin(self) -> int:
        """Position of the first window's top-left corner (negative: padding)."""
        return -(self.patch_size - self.stride)

    def _starts(self, extent: int) -> npt.NDArray[np.int64]:
        n = (extent - 1 - self.origin) // self.stride + 1
        return self.origin + self.stride * np.arange(n, dtype=np.int64)

    @property
    def xs(self) -> npt.NDArray[np.int64]:
        """Left edges of the window columns."""
        return self._starts(self.width)

    @property
    def ys(self) -> npt.NDArray[np.int64]:
        """Top edges of the window rows."""
        return self._starts(self.height)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of windows."""
        return (len(self.ys), len(self.xs))


#: Tissue-mask pixels whose summed-area table is held at a time (beyond a window's height):
#: a few MB of int64 whatever the slide's size, where one table of the whole mask took 8 bytes
#: a mask pixel, three times over while it was summed.
SAT_BAND_PIXELS = 1 << 20


def window_tissue_fractions(tissue: npt.NDArray[np.bool_], factor: int, grid: PatchGrid
                            ) -> npt.NDArray[np.float64]:
    """Fraction of each window's area that is tissue, (rows, columns) float64.

    ``tissue`` is a boolean mask whose pixels are ``factor x factor`` analysis pixels. The
    windows of a band of grid rows are computed at once from a summed-area table of the mask
    rows they cover (bands of about :data:`SAT_BAND_PIXELS` mask pixels); the area outside the
    mask counts as glass. Window edges that do not fall on mask-pixel edges are rounded to the
    nearest.
    """
    def edges(starts: npt.NDArray[np.int64], limit: int
              ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        lo = np.clip(np.rint(starts / factor).astype(np.int64), 0, limit)
        hi = np.clip(np.rint((starts + grid.patch_size) / factor).astype(np.int64), 0, limit)
        return lo, hi

    height, width = tissue.shape[:2]
    y0, y1 = edges(grid.ys, height)
    x0, x1 = edges(grid.xs, width)
    counts = np.zeros((len(y0), len(x0)), dtype=np.int64)
    band_rows = max(1, SAT_BAND_PIXELS // max(1, width))
    r = 0
    while r < len(y0):
        # Grid rows r .. end - 1: those whose windows end within band_rows of row r's top
        # (edges never decrease down the grid), at least one.
        top = int(y0[r])
        end = max(r + 1, int(np.searchsorted(y1, max(int(y1[r]), top + band_rows), "right")))
        bottom = int(y1[end - 1])
        sat = np.zeros((bottom - top + 1, width + 1), dtype=np.int64)
        sat[1:, 1:] = np.cumsum(np.cumsum(tissue[top:bottom], axis=0, dtype=np.int64), axis=1)
        ya, yb = y0[r:end] - top, y1[r:end] - top
        counts[r:end] = sat[yb][:, x1] - sat[ya][:, x1] - sat[yb][:, x0] + sat[ya][:, x0]
        r = end
    window_area = (grid.patch_size / factor) ** 2
    return counts.astype(np.float64) / window_area
