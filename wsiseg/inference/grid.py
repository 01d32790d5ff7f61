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


def window_tissue_fractions(tissue: npt.NDArray[np.bool_], factor: int, grid: PatchGrid
                            ) -> npt.NDArray[np.float64]:
    """Fraction of each window's area that is tissue, (rows, columns) float64.

    ``tissue`` is a boolean mask whose pixels are ``factor x factor`` analysis pixels. All
    windows are computed at once from a summed-area table; the area outside the mask counts
    as glass. Window edges that do not fall on mask-pixel edges are rounded to the nearest.
    """
    sat = np.zeros((tissue.shape[0] + 1, tissue.shape[1] + 1), dtype=np.int64)
    sat[1:, 1:] = np.cumsum(np.cumsum(tissue, axis=0, dtype=np.int64), axis=1)

    def edges(starts: npt.NDArray[np.int64], limit: int
              ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        lo = np.clip(np.rint(starts / factor).astype(np.int64), 0, limit)
        hi = np.clip(np.rint((starts + grid.patch_size) / factor).astype(np.int64), 0, limit)
        return lo, hi

    y0, y1 = edges(grid.ys, tissue.shape[0])
    x0, x1 = edges(grid.xs, tissue.shape[1])
    counts = (
        sat[y1][:, x1] - sat[y0][:, x1] - sat[y1][:, x0] + sat[y0][:, x0]
    ).astype(np.float64)
    window_area = (grid.patch_size / factor) ** 2
    return counts / window_area
