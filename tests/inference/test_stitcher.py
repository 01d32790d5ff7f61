"""Blending: exact Gaussian-weighted means everywhere, borders included, streamed in rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsiseg.inference.grid import PatchGrid
from wsiseg.inference.stitcher import Stitcher, gaussian_weight
from wsiseg.result.rows import FinishedRows


def run_stitcher(grid, probs_of, kept, classes, keep_probabilities=True, columns=None):
    rows_out: list[FinishedRows] = []
    st = Stitcher(grid, classes, grid.patch_size / 8, rows_out.append,
                  keep_probabilities=keep_probabilities, columns=columns)
    for r in range(grid.shape[0]):
        cols = np.nonzero(kept[r])[0]
        if len(cols):
            st.add(np.full(len(cols), r), cols, torch.stack([probs_of(r, c) for c in cols]))
    st.finish()
    ys = [o.y for o in rows_out]
    assert ys == sorted(ys) and ys[0] == 0
    labels = np.concatenate([o.labels for o in rows_out])
    probs = np.concatenate([o.probabilities for o in rows_out], axis=1) if keep_probabilities else None
    return labels, probs, st


def test_gaussian_has_peak_one_and_no_floor():
    w = gaussian_weight(400, 50)
    assert w.max() == pytest.approx(1.0)
    assert w[0, 0] < 1e-6  # exp(-16) at the corners: nothing clamps it
    assert np.allclose(w, w.T) and np.allclose(w, w[::-1, ::-1])


def test_constant_model_gives_the_constant_everywhere_without_nan():
    grid = PatchGrid(237, 181, 64, 16)
    const = torch.tensor([0.2, 0.45, 0.35]).view(3, 1, 1).expand(3, 64, 64)
    kept = np.ones(grid.shape, dtype=bool)
    labels, probs, _ = run_stitcher(grid, lambda r, c: const, kept, 3)
    assert labels.shape == (181, 237) and (labels == 1).all()
    assert [np.unique(p).tolist() for p in probs] == [[51], [115], [89]]  # round(255 p)


def test_border_pixels_get_the_gaussian_weighted_mean_not_the_plain_mean():
    # Each window predicts its own constant; the expected map is the exact weighted mean of the
    # windows covering each pixel, computed independently in float64.
    grid = PatchGrid(150, 110, 48, 12)
    rng = np.random.default_rng(0)
    values = rng.random(grid.shape)
    def probs_of(r, c):
        v = float(values[r, c])
        return torch.tensor([v, 1 - v]).view(2, 1, 1).expand(2, 48, 48)
    kept = np.ones(grid.shape, dtype=bool)
    _, probs, _ = run_stitcher(grid, probs_of, kept, 2)
    w = gaussian_weight(48, 6).astype(np.float64)
    num = np.zeros((110 + 96, 150 + 96))
    den = np.zeros_like(num)
    plain = np.zeros_like(num)
    cnt = np.zeros_like(num)
    for r, y in enumerate(grid.ys):
        for c, x in enumerate(grid.xs):
            sl = np.s_[y + 48 : y + 96, x + 48 : x + 96]
            num[sl] += w * values[r, c]
            den[sl] += w
            plain[sl] += values[r, c]
            cnt[sl] += 1
    with np.errstate(invalid="ignore"):  # padding corners that no window reaches
        want = (num / den)[48:158, 48:198]
        plain = (plain / cnt)[48:158, 48:198]
    got = probs[0].astype(np.float64) / 255
    assert np.abs(got - want).max() <= 0.5 / 255 + 1e-6
    # The test would catch a fallback to plain averaging: near the border the two differ.
    assert np.abs(plain - want)[:, :18].max() > 3 / 255


def test_uncovered_pixels_are_background_and_rows_stream_in_order():
    grid = PatchGrid(300, 420, 100, 25)
    kept = np.zeros(grid.shape, dtype=bool)
    kept[3:6, 4:7] = True  # one island of windows; many grid rows skipped in between
    kept[12, 2] = True
    one = torch.tensor([0.0, 1.0]).view(2, 1, 1).expand(2, 100, 100)
    labels, probs, st = run_stitcher(grid, lambda r, c: one, kept, 2)
    cover = np.zeros((420, 300), dtype=bool)
    for r, c in zip(*np.nonzero(kept)):
        y, x = grid.ys[r], grid.xs[c]
        cover[max(y, 0) : y + 100, max(x, 0) : x + 100] = True
    assert np.array_equal(labels == 1, cover)
    assert (probs[0][~cover] == 255).all() and (probs[1][~cover] == 0).all()
    # The accumulators hold ceil(P / S) * S rows of the image's width (rounded out to whole
    # blocks) for each class and the weight sum, whatever the image's height.
    assert st.acc.numel() <= 3 * 100 * (300 + 2 * st.block) + 3 * st.block**2


def test_column_stripes_blend_to_exactly_the_whole():
    grid = PatchGrid(301, 157, 64, 16)
    rng = np.random.default_rng(3)
    kept = rng.random(grid.shape) < 0.7
    table = torch.softmax(torch.from_numpy(rng.normal(size=grid.shape + (3, 64, 64))).float(), dim=2)
    whole_labels, whole_probs, _ = run_stitcher(grid, lambda r, c: table[r, c], kept, 3)
    labels, probs = [], []
    for x0, x1 in ((0, 128), (128, 256), (256, 301)):
        # Each stripe gets only the windows that overlap it.
        near = (grid.xs < x1) & (grid.xs + 64 > x0)
        lab, pr, st = run_stitcher(grid, lambda r, c: table[r, c], kept & near[None, :], 3,
                                   columns=(x0, x1))
        assert st.acc.numel() <= 4 * 64 * (x1 - x0 + 2 * st.block) + 4 * st.block**2
        labels.append(lab)
        probs.append(pr)
    assert np.array_equal(np.concatenate(labels, axis=1), whole_labels)
    assert np.array_equal(np.concatenate(probs, axis=2), whole_probs)


def test_windows_out_of_row_order_are_refused():
    grid = PatchGrid(100, 300, 40, 20)
    st = Stitcher(grid, 2, 5, lambda rows: None)
    p = torch.ones(1, 2, 40, 40) / 2
    st.add(np.array([5]), np.array([0]), p)
    with pytest.raises(ValueError, match="arrived after"):
        st.add(np.array([2]), np.array([0]), p)


def _reference(grid, table, kept, sigma):
    """Weighted means in float64, one window at a time: (C, H, W), NaN where nothing covers."""
    p = grid.patch_size
    w = gaussian_weight(p, sigma).astype(np.float64)
    c = table.shape[2]
    num = np.zeros((c, grid.height + 2 * p, grid.width + 2 * p))
    den = np.zeros(num.shape[1:])
    for r, col in zip(*np.nonzero(kept)):
        y, x = grid.ys[r] + p, grid.xs[col] + p
        num[:, y : y + p, x : x + p] += w * table[r, col].double().numpy()
        den[y : y + p, x : x + p] += w
    with np.errstate(invalid="ignore"):
        return (num / den)[:, p : p + grid.height, p : p + grid.width]


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("patch, stride", [
    pytest.param(48, 12, marks=pytest.mark.slow), (30, 20),
    pytest.param(37, 10, marks=pytest.mark.slow), (24, 24)])
def test_batches_across_grid_rows_blend_exactly(patch, stride, batched):
    # Blocks of gcd(patch, stride): 12, 10, 1 and 24 pixels. Batches of any size, spanning
    # grid rows, within stripes or not, give the float64 reference to within uint8 rounding.
    grid = PatchGrid(131, 97, patch, stride)
    rng = np.random.default_rng(patch)
    kept = rng.random(grid.shape) < 0.8
    table = torch.softmax(torch.from_numpy(
        rng.normal(size=grid.shape + (3, patch, patch))).float(), dim=2)
    want = _reference(grid, table, kept, patch / 8)
    for columns in (None, (0, 64), (64, 131)):
        out: list[FinishedRows] = []
        st = Stitcher(grid, 3, patch / 8, out.append, keep_probabilities=True, columns=columns,
                      batched=batched)
        rows, cols = np.nonzero(kept)
        at = 0
        while at < len(rows):
            n = int(rng.integers(1, 9))
            st.add(rows[at : at + n], cols[at : at + n],
                   table[rows[at : at + n], cols[at : at + n]])
            at += n
        st.finish()
        x0, x1 = columns or (0, 131)
        probs = np.concatenate([o.probabilities for o in out], axis=1).astype(np.float64) / 255
        labels = np.concatenate([o.labels for o in out])
        sub = want[:, :, x0:x1]
        covered = ~np.isnan(sub[0])
        assert np.abs(probs - sub)[:, covered].max() <= 0.5 / 255 + 1e-6
        clear = np.sort(sub, axis=0)[-1] - np.sort(sub, axis=0)[-2] > 1e-5
        assert np.array_equal(labels[covered & clear], sub.argmax(0)[covered & clear])
        assert (labels[~covered] == 0).all()


@pytest.mark.slow
def test_batched_or_window_by_window_any_batch_size_gives_the_same_bits():
    # Both ways add the same products in the same order into the same accumulators.
    grid = PatchGrid(90, 70, 40, 10)
    rng = np.random.default_rng(5)
    kept = rng.random(grid.shape) < 0.9
    table = torch.softmax(torch.from_numpy(rng.normal(size=grid.shape + (4, 40, 40))).float(), dim=2)
    rows, cols = np.nonzero(kept)
    results = []
    for size, batched in ((1, False), (7, False), (len(rows), False), (1, True), (7, True),
                          (len(rows), True)):
        out: list[FinishedRows] = []
        st = Stitcher(grid, 4, 5, out.append, keep_probabilities=True, columns=(10, 90),
                      batched=batched)
        for at in range(0, len(rows), size):
            sl = slice(at, at + size)
            st.add(rows[sl], cols[sl], table[rows[sl], cols[sl]])
        st.finish()
        results.append(np.concatenate([o.probabilities for o in out], axis=1))
    assert all(np.array_equal(results[0], r) for r in results[1:])
