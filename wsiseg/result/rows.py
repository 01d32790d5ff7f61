"""Finished rows of the map: what the stitcher hands to the result's writer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass
class FinishedRows:
    """Rows ``[y, y + labels.shape[0])`` of the output, complete."""

    y: int
    labels: npt.NDArray[np.uint8]  # (h, w)
    probabilities: npt.NDArray[np.uint8] | None  # (C, h, w), round(255 p)
    x: int = 0  # output column of the first column
    uncertainty: npt.NDArray[np.uint8] | None = None  # (h, w), round(255 u), 0 certain
