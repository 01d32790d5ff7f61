"""OME-Zarr slides read with zarr: bioformats2raw (NGFF 0.4, zarr v2) and NGFF 0.5 (zarr v3),
refusals, a wsiseg result given as a slide, the CLI and the pipeline."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from wsiseg.cli.main import main
from wsiseg.errors import DamagedSlideError, SlideError
from wsiseg.inference.pipeline import PredictConfig, predict_slide
from wsiseg.result.store import open_result, open_result_group
from wsiseg.slide.backends import is_ome_zarr
from wsiseg.slide.reader import open_slide
from wsiseg.testing import area_downsample, synthetic_tissue, write_ome_zarr, write_svs
from wsiseg.testing.cli import error_line


@pytest.fixture(scope="module")
def rgb():
    image, _ = synthetic_tissue(300, 400, seed=5, tissue_fraction=0.4)
    return image


@pytest.mark.parametrize("layout", ["bioformats2raw", "ngff-0.5"])
def test_levels_resolution_and_pixels(rgb, tmp_path, layout):
    path = write_ome_zarr(tmp_path / "s.ome.zarr", rgb, mpp=500.0, unit="nanometer",
                          levels=(1, 2, 4), chunk=128, layout=layout)
    assert is_ome_zarr(path)
    with open_slide(path) as slide:
        assert slide.vendor == "ome-zarr"
        assert slide.level_dimensions == ((400, 300), (200, 150), (100, 75))
        assert slide.level_downsamples == (1.0, 2.0, 4.0)
        assert slide.mpp == pytest.approx((0.5, 0.5))
        np.testing.assert_array_equal(slide.read_level(0, 0, 0, 400, 300), rgb)
        part = slide.read_level(2, 50, 40, 60, 50)
        np.testing.assert_array_equal(part[:35, :50], area_downsample(rgb, 4)[40:, 50:])
        assert (part[35:] == 255).all() and (part[:, 50:] == 255).all()


def test_without_a_unit_there_is_no_resolution(rgb, tmp_path):
    path = write_ome_zarr(tmp_path / "n.ome.zarr", rgb, mpp=None, levels=(1,), chunk=128)
    with open_slide(path) as slide:
        assert slide.mpp is None
    with open_slide(path, slide_mpp=0.5) as slide:
        assert slide.mpp == (0.5, 0.5)


def test_info_on_an_ome_zarr_folder(rgb, tmp_path):
    path = write_ome_zarr(tmp_path / "i.ome.zarr", rgb, levels=(1, 2), chunk=128)
    run = CliRunner().invoke(main, ["info", str(path)])
    assert run.exit_code == 0, run.output
    assert "vendor:          ome-zarr" in run.output and "0.5 x 0.5 um/px" in run.output
    assert "level 1: 200 x 150, downsample 2" in run.output
    assert "DICOM" not in run.output


@pytest.mark.parametrize("layout", ["bioformats2raw", "ngff-0.5"])
def test_fluorescence_is_refused_in_one_line(tmp_path, layout):
    channels = np.random.default_rng(1).integers(0, 4000, (4, 64, 64), dtype=np.uint16)
    path = write_ome_zarr(tmp_path / "fl.ome.zarr", channels, levels=(1,), chunk=64,
                          layout=layout)
    error_line(CliRunner().invoke(main, ["info", str(path)]), str(path), "uint16",
               "brightfield RGB")


def test_a_damaged_chunk_is_reported_by_its_place(rgb, tmp_path):
    path = write_ome_zarr(tmp_path / "d.ome.zarr", rgb, levels=(1,), chunk=128,
                          layout="ngff-0.5")
    (path / "0" / "c" / "0" / "1" / "2").write_bytes(b"not a chunk")  # c 0, row 1, column 2
    with open_slide(path) as slide, pytest.raises(DamagedSlideError,
                                                  match="level-0 x 256, y 128"):
        slide.read_level(0, 0, 0, 400, 300)
    with open_slide(path, skip_damaged=True) as slide:
        image = slide.read_level(0, 0, 0, 400, 300)
        assert [r.box for r in slide.damaged_regions()] == [(256, 128, 128, 128)]
        assert (image[128:256, 256:384] == 255).all()
        np.testing.assert_array_equal(image[:128], rgb[:128])


def test_folders_that_are_not_ome_zarr_slides(rgb, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    assert not is_ome_zarr(plain) and not is_ome_zarr(tmp_path / "missing")
    zarr_group = tmp_path / "g.zarr"
    zarr_group.mkdir()
    (zarr_group / "zarr.json").write_text(json.dumps(
        {"zarr_format": 3, "node_type": "group", "attributes": {}}))
    assert not is_ome_zarr(zarr_group)
    with pytest.raises(SlideError, match="not an OME-Zarr image"):
        open_slide(zarr_group)


@pytest.fixture(scope="module")
def same_pixels(tmp_path_factory):
    """An SVS and an OME-Zarr (bioformats2raw) of the same pixels, levels and resolution."""
    image, _ = synthetic_tissue(800, 1008, seed=11, tissue_fraction=0.4)
    folder = tmp_path_factory.mktemp("ome_zarr_same")
    svs = write_svs(folder / "s.svs", image, mpp=0.5, downsamples=(1, 4, 16),
                    compression="deflate")
    ome = write_ome_zarr(folder / "s.ome.zarr", image, mpp=0.5, levels=(1, 4, 16), chunk=256)
    return svs, ome


def test_predict_on_an_ome_zarr_gives_the_map_of_the_same_svs(same_pixels, pixel_model,
                                                                tmp_path):
    svs, ome = same_pixels
    info = predict_slide(svs, PredictConfig(model=str(pixel_model[0]),
                                            out=str(tmp_path / "svs.wsiseg.zarr"),
                                            progress=False))
    out = tmp_path / "ome.wsiseg.zarr"
    run = CliRunner().invoke(main, ["predict", str(ome), "--model", str(pixel_model[0]),
                                    "--out", str(out), "--quiet"])
    assert run.exit_code == 0, run.output
    expected = np.asarray(open_result(info.path)[0][:])
    labels, result = open_result(out)
    assert len(np.unique(expected)) > 1
    np.testing.assert_array_equal(np.asarray(labels[:]), expected)
    assert result.slide.vendor == "ome-zarr"


def test_a_result_is_refused_as_a_slide_but_its_picture_reads(same_pixels, pixel_model,
                                                              tmp_path):
    _, ome = same_pixels
    info = predict_slide(ome, PredictConfig(model=str(pixel_model[0]),
                                            out=str(tmp_path / "r.wsiseg.zarr"),
                                            progress=False))
    assert not is_ome_zarr(info.path)
    run = CliRunner().invoke(main, ["info", str(info.path)])
    error_line(run, str(info.path), "wsiseg result, not a slide", str(ome))
    with pytest.raises(SlideError, match="wsiseg result, not a slide"):
        predict_slide(info.path, PredictConfig(model=str(pixel_model[0]), progress=False,
                                               out=str(tmp_path / "again.wsiseg.zarr")))
    # The picture is an NGFF 0.5 image (c, y, x): without the result's record, it is a slide.
    picture = tmp_path / "picture.ome.zarr"
    shutil.copytree(info.path, picture)
    meta = json.loads((picture / "zarr.json").read_text())
    del meta["attributes"]["wsiseg"]
    (picture / "zarr.json").write_text(json.dumps(meta))
    group = open_result_group(info.path)
    level0 = np.asarray(group["0"][:]).transpose(1, 2, 0)
    scale = meta["attributes"]["ome"]["multiscales"][0]["datasets"][0][
        "coordinateTransformations"][0]["scale"]
    with open_slide(picture) as slide:
        assert slide.vendor == "ome-zarr"
        assert slide.mpp == pytest.approx((scale[-1], scale[-2]))
        h, w = level0.shape[:2]
        np.testing.assert_array_equal(slide.read_level(0, 0, 0, w, h), level0)
