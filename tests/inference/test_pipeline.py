"""Slide to map, end to end, against the same function applied to the whole image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr
from scipy import ndimage

from wsiseg.errors import OutputError, ResolutionError
from wsiseg.inference.grid import PatchGrid
from wsiseg.inference.pipeline import PredictConfig, predict_slide
from wsiseg.naming import partial_path
from wsiseg.result.store import result_array
from wsiseg.slide.geometry import plan_geometry
from wsiseg.slide.reader import open_slide
from wsiseg.slide.region import RegionReader


def reference(slide_path, model, slide_mpp=None, target_mpp=1.0):
    """The per-pixel model applied to the whole analysis image at once: probs (C, H, W)."""
    with open_slide(slide_path, slide_mpp) as slide:
        g = plan_geometry(slide.level_downsamples, slide.bounds, slide.mpp, target_mpp)
        image = RegionReader(slide, g).read(0, 0, g.width, g.height)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        return torch.softmax(model(x), dim=1)[0].numpy()


def coverage(attrs, kept_windows):
    h, w = attrs["shape"]
    grid = PatchGrid(w, h, attrs["patch_size"], attrs["stride"])
    cover = np.zeros((h, w), dtype=bool)
    for r, c in kept_windows:
        y, x = grid.ys[r], grid.xs[c]
        cover[max(y, 0) : y + grid.patch_size, max(x, 0) : x + grid.patch_size] = True
    return cover


def check_invariance(result, ref, attrs_cover=None):
    g = zarr.open_group(str(result), mode="r")
    labels = result_array(g, "labels")[:]
    probs = result_array(g, "probabilities")[:]
    assert labels.shape == ref.shape[1:]
    cover = np.ones(labels.shape, dtype=bool) if attrs_cover is None else attrs_cover
    # float32 blending cannot resolve classes closer than ~1e-6: leave exact ties out.
    top2 = np.sort(ref, axis=0)[-2:]
    decided = cover & (top2[1] - top2[0] > 1e-4)
    assert decided.sum() > 0.5 * cover.sum()
    assert np.array_equal(labels[decided], ref.argmax(axis=0)[decided])
    diff = np.abs(probs.astype(int) - np.rint(ref * 255).astype(int))
    assert diff[:, cover].max() <= 1
    assert (labels[~cover] == 0).all()
    return labels


@pytest.mark.slow
@pytest.mark.parametrize(
    "patch,stride",
    [(400, 100), (96, 32), (100, 30), (64, 64)],  # 100/30 and 64/64: odd overlaps, no overlap
)
def test_map_equals_per_pixel_function_everywhere(svs_x40, pixel_model, tmp_path, patch, stride):
    """With every window kept, the map is the function of the whole image, borders included."""
    model_path, module = pixel_model
    out = tmp_path / "out.wsiseg.zarr"
    cfg = PredictConfig(model=str(model_path), out=str(out), patch_size=patch, stride=stride,
                        tissue_threshold=0.0, probabilities=True, progress=False, band_height=250)
    result = predict_slide(svs_x40.path, cfg).path
    ref = reference(svs_x40.path, module)
    labels = check_invariance(result, ref)
    assert len(np.unique(labels)) >= 3  # the test model really separates classes here
    attrs = zarr.open_group(str(result), mode="r").attrs["wsiseg"]
    assert attrs["patches_kept"] == attrs["patches_total"]


@pytest.mark.slow
def test_resampled_slide_with_tissue_filter(svs_x20, pixel_model, tmp_path):
    """x20 -> x10 by area averaging; only windows with 20% tissue are predicted."""
    model_path, module = pixel_model
    out = tmp_path / "x20.wsiseg.zarr"
    cfg = PredictConfig(model=str(model_path), out=str(out), patch_size=128, stride=32,
                        probabilities=True, progress=False, band_height=200, threads=3)
    result = predict_slide(svs_x20.path, cfg).path
    g = zarr.open_group(str(result), mode="r")
    attrs = g.attrs["wsiseg"]
    assert attrs["level"] == 0 and attrs["resample"] == [2.0, 2.0]
    assert attrs["scale_to_level0"] == [2.0, 2.0] and attrs["analysis_mpp"] == [1.0, 1.0]
    assert 0 < attrs["patches_kept"] < attrs["patches_total"]
    # Which windows were kept follows from the stored tissue mask.
    from wsiseg.inference.grid import window_tissue_fractions

    h, w = attrs["shape"]
    grid = PatchGrid(w, h, 128, 32)
    kept = window_tissue_fractions(result_array(g, "tissue")[:].astype(bool), attrs["tissue"]["factor"], grid) >= 0.2
    assert kept.sum() == attrs["patches_kept"]
    cover = coverage(attrs, zip(*np.nonzero(kept)))
    check_invariance(result, reference(svs_x20.path, module), cover)
    # Every piece of true tissue the detector keeps (0.01 mm^2 = 10 000 px at 1 um/px and up)
    # is covered by predicted windows; smaller specks are dropped by design.
    truth = svs_x20.tissue[::2, ::2][:h, :w]
    pieces, _ = ndimage.label(truth)
    sizes = np.bincount(pieces.ravel())
    large = (sizes >= 10_000)[pieces] & truth
    assert large.sum() > 0.5 * truth.sum()
    assert cover[large].all()


@pytest.mark.slow
def test_constant_model_gives_constant_map(svs_x40, constant_model, tmp_path):
    out = tmp_path / "c.wsiseg.zarr"
    cfg = PredictConfig(model=str(constant_model), out=str(out), probabilities=True,
                        progress=False, tissue_threshold=0.0, patch_size=200, stride=50)
    g = zarr.open_group(str(predict_slide(svs_x40.path, cfg).path), mode="r")
    probs = result_array(g, "probabilities")[:]
    assert (result_array(g, "labels")[:] == 2).all()
    for c, expected in enumerate(np.rint(255 * torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0).numpy())):
        assert np.abs(probs[c].astype(int) - int(expected)).max() <= 1


@pytest.mark.slow
def test_output_is_refused_when_present_and_replaced_with_overwrite(svs_x40, pixel_model, tmp_path):
    out = tmp_path / "o.wsiseg.zarr"
    cfg = PredictConfig(model=str(pixel_model[0]), out=str(out), progress=False)
    predict_slide(svs_x40.path, cfg)
    with pytest.raises(OutputError, match="exists already; pass --overwrite"):
        predict_slide(svs_x40.path, cfg)
    predict_slide(svs_x40.path, PredictConfig(model=str(pixel_model[0]), out=str(out),
                                              progress=False, overwrite=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.wsiseg.zarr"]


def test_failure_midway_leaves_nothing_that_looks_complete(svs_x40, pixel_model, tmp_path,
                                                          monkeypatch):
    from wsiseg.inference.predictor import Predictor

    calls = {"n": 0}
    real = Predictor.__call__

    def failing(self, patches):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("device lost")
        return real(self, patches)

    monkeypatch.setattr(Predictor, "__call__", failing)
    out = tmp_path / "f.wsiseg.zarr"
    cfg = PredictConfig(model=str(pixel_model[0]), out=str(out), progress=False, batch_size=2)
    with pytest.raises(RuntimeError, match="device lost"):
        predict_slide(svs_x40.path, cfg)
    assert calls["n"] == 3
    assert list(tmp_path.iterdir()) == []


def test_missing_mpp_is_an_error_unless_given(tiff_no_mpp, pixel_model, tmp_path):
    out = tmp_path / "n.wsiseg.zarr"
    cfg = PredictConfig(model=str(pixel_model[0]), out=str(out), progress=False)
    with pytest.raises(ResolutionError, match="no resolution metadata.*--slide-mpp"):
        predict_slide(tiff_no_mpp.path, cfg)
    assert not out.exists() and not partial_path(out).exists()
    cfg = PredictConfig(model=str(pixel_model[0]), out=str(out), progress=False, slide_mpp=0.5)
    attrs = zarr.open_group(str(predict_slide(tiff_no_mpp.path, cfg).path), mode="r").attrs["wsiseg"]
    assert attrs["slide"]["mpp_source"] == "user" and attrs["analysis_mpp"] == [1.0, 1.0]


@pytest.mark.slow
def test_column_stripes_give_the_same_map(svs_x40, pixel_model, tmp_path):
    """Blending in column stripes (windows across an edge predicted for both) changes nothing."""
    common = {"model": str(pixel_model[0]), "probabilities": True, "progress": False,
              "patch_size": 96, "stride": 32}
    whole = predict_slide(svs_x40.path, PredictConfig(out=str(tmp_path / "a.zarr"), **common)).path
    striped = predict_slide(svs_x40.path, PredictConfig(
        out=str(tmp_path / "b.zarr"), stripe_width=128, chunk_size=64, **common)).path
    a, b = zarr.open_group(str(whole), mode="r"), zarr.open_group(str(striped), mode="r")
    assert b.attrs["wsiseg"]["stripes"] == 4 and a.attrs["wsiseg"]["stripes"] == 1
    assert b.attrs["wsiseg"]["patches_predicted"] > b.attrs["wsiseg"]["patches_kept"]
    assert result_array(b, "labels").chunks == (64, 64)
    assert np.array_equal(result_array(a, "labels")[:], result_array(b, "labels")[:])
    assert np.array_equal(result_array(a, "probabilities")[:], result_array(b, "probabilities")[:])
