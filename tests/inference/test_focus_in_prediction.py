"""Out-of-focus tissue found in a prediction: the loader feeds the bands it reads to one focus
accumulator, each pixel once, and labels/qc records the blur after the windows are predicted."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import zarr

from wsiseg.inference.grid import PatchGrid
from wsiseg.inference.loader import BandLoader
from wsiseg.inference.pipeline import (
    PredictConfig,
    _add_blur,
    _Tissue,
    column_stripes,
    overlapping_columns,
    predict_slide,
)
from wsiseg.slide import artefacts as qc
from wsiseg.testing import synthetic_tissue, write_svs
from wsiseg.testing.artefacts import add_blur

SIDE = 1536  # analysis pixels (1 um/px): about 100 focus blocks of tissue


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    """A sharp slide at 1 um/px and the same with a rectangle out of focus (a pillbox of 3 px),
    both losslessly compressed, and where the blur is."""
    folder = tmp_path_factory.mktemp("focus")
    rgb, _ = synthetic_tissue(SIDE, SIDE, seed=4, tissue_fraction=0.7)
    region = np.zeros((SIDE, SIDE), dtype=bool)
    region[SIDE // 4 : SIDE // 4 + SIDE * 3 // 8, SIDE // 5 : SIDE // 5 + SIDE // 2] = True
    paths = {name: write_svs(folder / f"{name}.svs", image, 1.0, downsamples=(1, 4, 16),
                             compression="deflate")
             for name, image in (("sharp", rgb), ("blurred", add_blur(rgb, 3.0, region)))}
    return paths, region


def _predict(slide, model, out, **more):
    config = PredictConfig(model=str(model), out=str(out), stride=400, progress=False, **more)
    info = predict_slide(slide, config)
    return info, zarr.open_group(str(info.path), mode="r")


def test_blurred_tissue_is_recorded_and_sharp_tissue_is_not(slides, pixel_model, tmp_path):
    paths, region = slides
    info, group = _predict(paths["blurred"], pixel_model[0], tmp_path / "b.wsiseg.zarr")
    labels, mask = np.asarray(group["labels/qc/0"]), np.asarray(group["labels/tissue/0"])
    f = info.tissue.factor
    truth = region[f // 2 :: f, f // 2 :: f][: mask.shape[0], : mask.shape[1]] & (mask > 0)
    found = labels == qc.QC_BLUR
    assert (found & truth).sum() / (found | truth).sum() >= 0.6  # 0.73 measured
    assert 0 < info.timings["focus"] < 5  # CPU s; 0.17 measured (0.07 s per megapixel)

    info, group = _predict(paths["sharp"], pixel_model[0], tmp_path / "s.wsiseg.zarr")
    assert not (np.asarray(group["labels/qc/0"]) == qc.QC_BLUR).any()
    assert "focus" in info.timings


def test_no_focus_work_without_artefact_detection(slides, pixel_model, tmp_path):
    paths, _ = slides
    info, group = _predict(paths["blurred"], pixel_model[0], tmp_path / "o.wsiseg.zarr",
                           qc="off")
    assert "qc" not in group["labels"] and info.qc is None
    assert "focus" not in info.timings


class _Reader:
    """Reads rectangles of an in-memory image (glass outside it)."""

    def __init__(self, image):
        self.image = image

    def read(self, x, y, w, h, out=None):
        out = np.empty((h, w, 3), dtype=np.uint8) if out is None else out
        out[...] = 240
        H, W = self.image.shape[:2]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self.image[y0:y1, x0:x1]
        return out


class _Counter:
    """Stands for the accumulator: how often each analysis pixel is counted."""

    def __init__(self, height, width):
        self.counts = np.zeros((height, width), dtype=np.int32)

    def energies(self, band, y, x=0, own=None):
        top, bottom, left, right = own or (0, band.shape[0], 0, band.shape[1])
        assert y + top >= 0 and x + left >= 0  # padding past the image is never counted
        return (slice(y + top, y + bottom), slice(x + left, x + right))

    def add_energies(self, placed):
        self.counts[placed] += 1


def _feed(sink, image, grid, kept, stripe_width, band_height, threads=4):
    """Feed ``sink`` from the loaders of each column stripe, as the pipeline does."""
    for x0, x1 in column_stripes(grid.width, stripe_width, 128):
        stripe = kept & overlapping_columns(grid, x0, x1)[None, :]
        loader = BandLoader(_Reader(image), grid, stripe, band_height=band_height, chunk=64,
                            strip=64, focus=sink, focus_columns=(x0, x1), threads=threads)
        for _ in loader:
            pass


@pytest.mark.parametrize("patch,stride,band_height,share", [
    (96, 24, 100, 1.0),  # bands and stripes overlapping by much more than the filters reach
    (120, 40, 250, 0.6),  # windows left out: parts of the slide never read
])
def test_stripe_bands_count_each_pixel_once_and_give_the_whole_image_scores(
        patch, stride, band_height, share):
    height, width = 576, 640
    image, _ = synthetic_tissue(height, width, seed=3, tissue_fraction=0.9)
    grid = PatchGrid(width, height, patch, stride)
    kept = np.random.default_rng(1).random(grid.shape) < share
    if share < 1:
        kept[3:10] = False  # no window on rows 120-320
    counter = _Counter(height, width)
    _feed(counter, image, grid, kept, 256, band_height)
    footprint = np.zeros((height + 2 * patch, width + 2 * patch), dtype=bool)
    for r, c in zip(*np.nonzero(kept)):
        y, x = grid.ys[r] + patch, grid.xs[c] + patch
        footprint[y : y + patch, x : x + patch] = True
    footprint = footprint[patch:-patch, patch:-patch]
    # Each pixel the windows need counted once; strips of rows may read (and count) a few more.
    assert counter.counts.max() == 1 and counter.counts[footprint].min() == 1

    focus = qc.FocusAccumulator(width, height, 64)
    _feed(focus, image, grid, kept, 256, band_height)
    scores, whole = focus.scores(), qc.focus_scores(image, 64)
    if share == 1.0:  # every pixel read, each with its context: the one-pass scores
        np.testing.assert_allclose(scores, whole, rtol=1e-4)
    else:  # blocks never read stay unscored
        blocks = qc.block_fractions(counter.counts > 0, 64) == 0
        assert blocks.any() and np.isnan(scores[blocks]).all()
        assert np.isfinite(scores).sum() > 0.5 * scores.size


def test_focus_found_on_many_threads_is_summed_as_on_one():
    image, _ = synthetic_tissue(700, 600, seed=5, tissue_fraction=0.8)
    grid = PatchGrid(600, 700, 96, 24)
    kept = np.ones(grid.shape, dtype=bool)
    scores = []
    for threads in (1, 4):
        focus = qc.FocusAccumulator(600, 700, 64)
        _feed(focus, image, grid, kept, 256, 100, threads=threads)
        scores.append(focus.scores())
    assert np.isfinite(scores[0]).any()
    np.testing.assert_array_equal(scores[0], scores[1])  # to the bit: blur marks repeat


def test_accumulator_pieces_with_context_sum_to_the_whole():
    image, _ = synthetic_tissue(300, 260, seed=2, tissue_fraction=0.9)
    focus, reach = qc.FocusAccumulator(260, 300, 64), qc.FOCUS_CONTEXT
    for y in range(0, 300, 70):  # pieces that cut blocks, each with its context
        for x in range(0, 260, 90):
            top, left = max(0, y - reach), max(0, x - reach)
            bottom, right = min(300, y + 70 + reach), min(260, x + 90 + reach)
            focus.add(image[top:bottom, left:right], top, left,
                      own=(y - top, min(300, y + 70) - top, x - left, min(260, x + 90) - left))
    np.testing.assert_allclose(focus.scores(), qc.focus_scores(image, 64), rtol=1e-4)


def test_blur_keeps_out_of_pen_and_folds():
    mask = np.ones((40, 40), dtype=bool)
    labels = np.zeros((40, 40), dtype=np.uint8)
    labels[:4, :4] = qc.QC_PEN
    labels[4:8, :4] = qc.QC_FOLD
    scores = np.full((10, 10), 0.5, dtype=np.float32)
    scores[:2, :2] = 0.01  # the top-left 8 x 8 mask pixels out of focus
    tissue = _Tissue(mask, SimpleNamespace(mpp=(10.0, 10.0)), 4, np.ones((1, 1), dtype=bool),
                     np.zeros((40, 40, 3), dtype=np.uint8), qc=labels)
    plan = SimpleNamespace(geometry=SimpleNamespace(mpp=(1.0, 1.0)))
    focus = SimpleNamespace(block=16, scores=lambda: scores)
    out, _ = _add_blur(SimpleNamespace(path=SimpleNamespace(name="s.svs")), plan, tissue, focus,
                       0.0)
    assert out.qc is not None and tissue.qc is labels
    assert (out.qc[:4, :4] == qc.QC_PEN).all() and (out.qc[4:8, :4] == qc.QC_FOLD).all()
    assert (out.qc[:8, 4:8] == qc.QC_BLUR).all() and (out.qc[8:, :] == 0).all()
