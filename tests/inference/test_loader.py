"""The band loader: every window's pixels are right, and each pixel is read once."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from wsiseg.inference.grid import PatchGrid
from wsiseg.inference.loader import BandLoader, merge_intervals, plan_bands, subtract_intervals


class ArrayReader:
    """A RegionReader over an in-memory image that counts how often each pixel is read."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.reads = np.zeros(image.shape[:2], dtype=np.int32)

    def read(self, x, y, w, h, out=None):
        if out is None:
            out = np.empty((h, w, 3), dtype=np.uint8)
        out[...] = 255
        H, W = self.image.shape[:2]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self.image[y0:y1, x0:x1]
            self.reads[y0:y1, x0:x1] += 1
        return out


def test_interval_arithmetic():
    assert merge_intervals([(5, 9), (0, 3), (2, 4), (9, 10)]) == [(0, 4), (5, 10)]
    assert subtract_intervals([(0, 10), (20, 30)], [(2, 4), (8, 22)]) == [(0, 2), (4, 8), (22, 30)]
    assert subtract_intervals([(0, 5)], []) == [(0, 5)]


@pytest.mark.parametrize("band_height,chunk", [(100, 64), (350, 1000), (1000, 97)])
def test_windows_are_cut_correctly_and_pixels_read_once(band_height, chunk):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (611, 523, 3), dtype=np.uint8)
    grid = PatchGrid(523, 611, 96, 24)
    kept = rng.random(grid.shape) > 0.5
    kept[10:20] = False  # a gap of grid rows taller than a band
    reader = ArrayReader(image)
    loader = BandLoader(reader, grid, kept, batch_size=7, band_height=band_height, threads=3,
                        chunk=chunk, queue_batches=2)
    padded = np.full((611 + 2 * 96, 523 + 2 * 96, 3), 255, dtype=np.uint8)
    padded[96:707, 96:619] = image
    seen = []
    for batch in loader:
        assert len(batch.rows) <= 7
        for r, c, patch in zip(batch.rows, batch.cols, batch.patches):
            y, x = grid.ys[r] + 96, grid.xs[c] + 96
            assert np.array_equal(patch, padded[y : y + 96, x : x + 96])
            seen.append((r, c))
    assert seen == sorted(seen) and len(seen) == kept.sum()
    assert set(seen) == set(zip(*np.nonzero(kept)))
    assert reader.reads.max() == 1  # nothing decoded twice
    # ... and every pixel of a kept window was read (bands read whole column ranges, so some
    # pixels outside kept windows are read too, once).
    need = np.zeros(image.shape[:2], dtype=bool)
    for r, c in seen:
        y, x = grid.ys[r], grid.xs[c]
        need[max(y, 0) : y + 96, max(x, 0) : x + 96] = True
    assert (reader.reads[need] == 1).all()


def test_bands_cover_kept_windows_and_overlap_by_patch_minus_stride():
    grid = PatchGrid(1000, 2000, 400, 100)
    kept = np.ones(grid.shape, dtype=bool)
    bands = plan_bands(grid, kept, 1000)
    assert sum(b.r1 - b.r0 for b in bands) == grid.shape[0]
    for a, b in itertools.pairwise(bands):
        assert a.y1 - b.y0 == 300


def test_reader_failure_reaches_the_consumer():
    class Broken(ArrayReader):
        def read(self, x, y, w, h, out=None):
            raise OSError("Bogus marker length")

    grid = PatchGrid(200, 200, 64, 16)
    loader = BandLoader(Broken(np.zeros((200, 200, 3), np.uint8)), grid,
                        np.ones(grid.shape, dtype=bool), threads=2)
    with pytest.raises(OSError, match="Bogus marker"):
        list(loader)


def test_chunks_are_cut_on_tile_edges():
    from wsiseg.inference.loader import _split

    pieces = _split(-300, 1000, 256, 40)
    assert pieces[0][0] == -300 and sum(n for _, n in pieces) == 1300
    assert all((start - 40) % 256 == 0 for start, _ in pieces[1:])
    assert all(n <= 256 for _, n in pieces)
