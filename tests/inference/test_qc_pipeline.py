"""Artefacts found in the prediction's read: pen over glass is no tissue, labels/qc is written,
and the report gives the artefacts' areas and the analysable tissue."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from wsiseg.cli.main import main
from wsiseg.export.report import build_report
from wsiseg.result.store import open_result
from wsiseg.slide.artefacts import QC_NAMES, QC_PEN
from wsiseg.testing import synthetic_tissue, write_svs
from wsiseg.testing.artefacts import add_pen


@pytest.fixture(scope="module")
def inked(tmp_path_factory):
    """A 1.5 x 1.25 mm x20 slide with one blue pen stroke, mostly over glass; its truth."""
    rgb, tissue = synthetic_tissue(2500, 3000, seed=5, tissue_fraction=0.35)
    rgb, pen = add_pen(rgb, 0.5, "blue", seed=2, strokes=1, width_um=(500.0, 800.0))
    path = write_svs(tmp_path_factory.mktemp("inked") / "inked.svs", rgb, 0.5,
                     downsamples=(1, 4, 16), tile=256)
    return path, pen, tissue


def _predict(slide, model, out, *more):
    result = CliRunner().invoke(main, ["predict", str(slide), "--model", str(model), "--stride",
                                       "400", "--out", str(out), "--quiet", *more])
    assert result.exit_code == 0, result.output
    return zarr.open_group(str(out), mode="r")


def _on_grid(mask, shape):
    step = mask.shape[0] // shape[0]
    return mask[::step, ::step][: shape[0], : shape[1]]


def test_pen_over_glass_is_recorded_and_is_no_tissue(inked, pixel_model, tmp_path):
    slide, pen, tissue = inked
    group = _predict(slide, pixel_model[0], tmp_path / "qc.wsiseg.zarr")
    mask = np.asarray(group["labels/tissue/0"])
    qc = np.asarray(group["labels/qc/0"])
    assert qc.shape == mask.shape
    pen_grid, tissue_grid = _on_grid(pen, mask.shape), _on_grid(tissue, mask.shape)
    over_glass = pen_grid & ~tissue_grid
    assert mask[over_glass].mean() < 0.02 and mask[tissue_grid & ~pen_grid].mean() > 0.9
    found = qc == QC_PEN
    assert (found & pen_grid).sum() / (found | pen_grid).sum() > 0.6  # 0.71 measured
    # An NGFF label image with its names, listed with the others.
    assert "qc" in group["labels"].attrs["ome"]["labels"]
    names = {p["label-value"]: p["name"]
             for p in group["labels/qc"].attrs["ome"]["image-label"]["properties"]}
    assert names == QC_NAMES
    _, info = open_result(tmp_path / "qc.wsiseg.zarr")
    assert info.qc == "record"
    report = build_report(tmp_path / "qc.wsiseg.zarr")
    assert report["qc_mode"] == "record" and report["qc"]["pen"] > 0.1
    assert 0 < report["analysable_tissue_mm2"] <= report["tissue_area_mm2"]

    # Without artefact detection the ink over glass is tissue, and nothing is recorded.
    off = _predict(slide, pixel_model[0], tmp_path / "off.wsiseg.zarr", "--qc", "off")
    assert np.asarray(off["labels/tissue/0"])[over_glass].mean() > 0.9
    assert "qc" not in off["labels"] and "qc" not in off["labels"].attrs["ome"]["labels"]
    plain = build_report(tmp_path / "off.wsiseg.zarr")
    assert not {"qc", "qc_mode", "analysable_tissue_mm2"} & set(plain)
    assert plain["tissue_area_mm2"] > report["tissue_area_mm2"]


def test_exclude_leaves_out_the_windows_on_artefacts(inked, pixel_model, tmp_path):
    slide, _, _ = inked
    _predict(slide, pixel_model[0], tmp_path / "r.wsiseg.zarr", "--qc", "record")
    _predict(slide, pixel_model[0], tmp_path / "x.wsiseg.zarr", "--qc", "exclude")
    recorded, excluded = (open_result(tmp_path / n)[1] for n in ("r.wsiseg.zarr",
                                                                 "x.wsiseg.zarr"))
    assert excluded.qc == "exclude" and excluded.patches_kept < recorded.patches_kept


def test_a_result_whose_artefact_labels_are_lost_is_refused(inked, pixel_model, tmp_path):
    import shutil

    from wsiseg.errors import ResultError

    slide, _, _ = inked
    out = tmp_path / "lost.wsiseg.zarr"
    _predict(slide, pixel_model[0], out)
    shutil.rmtree(out / "labels" / "qc" / "0")
    with pytest.raises(ResultError):
        open_result(out)


def test_the_clean_real_slide_is_not_flagged(cmu_result):
    # CMU-1-Small-Region holds no pen, fold or blur: the detectors, at the resolution the
    # prediction runs them at, must leave its tissue analysable.
    group = zarr.open_group(str(cmu_result), mode="r")
    qc = np.asarray(group["labels/qc/0"])
    tissue = np.asarray(group["labels/tissue/0"]) > 0
    assert tissue.sum() > 5000
    assert np.count_nonzero(qc[tissue]) <= 0.01 * tissue.sum()
    _, info = open_result(cmu_result)
    assert not [r for r in info.review or () if "artefact" in r or "analysable" in r]
