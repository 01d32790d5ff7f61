"""OME-TIFF slides read with tifffile: levels, resolution, pixels, refusals, damage, the CLI,
the pipeline and the viewer."""

from __future__ import annotations

import io
import logging
import threading
import urllib.request

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from wsiseg.cli.main import main
from wsiseg.errors import DamagedSlideError, SlideError
from wsiseg.inference.pipeline import PredictConfig, predict_slide
from wsiseg.result.store import open_result
from wsiseg.slide.backends import backend_of, is_ome_tiff
from wsiseg.slide.backends.ome_tiff import OmeTiffSlide
from wsiseg.slide.reader import open_slide
from wsiseg.testing import area_downsample, synthetic_tissue, write_ome_tiff, write_svs
from wsiseg.testing.cli import error_line
from wsiseg.view.server import OVERLAP, TILE_SIZE


@pytest.fixture(scope="module")
def rgb():
    image, _ = synthetic_tissue(300, 400, seed=3, tissue_fraction=0.4)
    return image


def _read_all(slide, level):
    w, h = slide.level_dimensions[level]
    return slide.read_level(level, 0, 0, w, h)


@pytest.mark.parametrize("byteorder,compression,subifds", [
    (">", "zlib", True), ("<", "zstd", True), (">", "lzw", False), ("<", "jpeg2000", True)])
def test_lossless_ome_tiff_reads_back_exactly(rgb, tmp_path, byteorder, compression, subifds):
    path = write_ome_tiff(tmp_path / "s.ome.tif", rgb, mpp=0.5, levels=(1, 2, 4), tile=128,
                          compression=compression, byteorder=byteorder, subifds=subifds)
    with open_slide(path) as slide:
        assert slide.vendor == "ome-tiff"
        assert slide.level_dimensions == ((400, 300), (200, 150), (100, 75))
        assert slide.level_downsamples == (1.0, 2.0, 4.0)
        assert slide.mpp == (0.5, 0.5)
        assert slide.properties["openslide.level[1].tile-width"] == "128"
        np.testing.assert_array_equal(_read_all(slide, 0), rgb)
        np.testing.assert_array_equal(_read_all(slide, 2), area_downsample(rgb, 4))
        # A read across tile edges, partly outside the level: glass outside.
        part = slide.read_level(1, 150, 100, 100, 80)
        np.testing.assert_array_equal(part[:50, :50], area_downsample(rgb, 2)[100:150, 150:200])
        assert (part[50:] == 255).all() and (part[:, 50:] == 255).all()


def test_jpeg_tiles_are_the_pixels_tifffile_decodes(rgb, tmp_path):
    path = write_ome_tiff(tmp_path / "j.ome.tif", rgb, levels=(1, 4), tile=128,
                          compression="jpeg", byteorder=">")
    with tifffile.TiffFile(path) as tif:
        expected = tif.series[0].levels[1].asarray()
    with open_slide(path) as slide:
        np.testing.assert_array_equal(_read_all(slide, 1), expected)
        assert np.abs(_read_all(slide, 0).astype(int) - rgb).mean() < 3


def test_an_ome_tiff_openslide_opens_as_generic_tiff_keeps_its_resolution(rgb, tmp_path):
    import openslide

    path = write_ome_tiff(tmp_path / "le.ome.tif", rgb, mpp=0.25, levels=(1,), tile=128,
                          compression="zlib", byteorder="<")
    with openslide.OpenSlide(str(path)) as osr:  # OpenSlide would take it, without the mpp
        assert osr.properties["openslide.vendor"] == "generic-tiff"
        assert "openslide.mpp-x" not in osr.properties
    assert is_ome_tiff(path) and backend_of(path) == "ome-tiff"
    with open_slide(path, reader="tifffile") as slide:
        assert slide.vendor == "ome-tiff" and slide.mpp == (0.25, 0.25)


@pytest.mark.parametrize("unit,expected", [("nm", 0.5), ("mm", 0.5), ("Å", 0.5)])
def test_resolution_in_other_length_units_is_converted(rgb, tmp_path, unit, expected):
    path = write_ome_tiff(tmp_path / "u.ome.tif", rgb[:64, :64], mpp=0.5, unit=unit,
                          levels=(1,), tile=64, compression="zlib")
    with open_slide(path) as slide:
        assert slide.mpp == pytest.approx((expected, expected))


def test_a_resolution_that_is_not_a_length_is_left_out_with_a_warning(rgb, tmp_path, caplog):
    path = write_ome_tiff(tmp_path / "p.ome.tif", rgb[:64, :64], mpp=1.0, unit="pixel",
                          levels=(1,), tile=64, compression="zlib")
    with caplog.at_level(logging.WARNING, "wsiseg"), open_slide(path) as slide:
        assert slide.mpp is None
    assert "not a length" in caplog.text and "--slide-mpp" in caplog.text


def test_the_largest_rgb_series_is_the_slide_and_the_others_associated(rgb, tmp_path):
    path = write_ome_tiff(tmp_path / "m.ome.tif", rgb, levels=(1, 2), tile=128,
                          compression="zlib",
                          extra_series={"label": rgb[:40, :60], "macro": rgb[:80, :90]})
    run = CliRunner().invoke(main, ["info", str(path)])
    assert run.exit_code == 0, run.output
    assert "vendor:          ome-tiff" in run.output
    assert "0.5 x 0.5 um/px" in run.output
    assert "OME-TIFF series 0 of 3 ('slide')" in run.output
    assert "label (60 x 40)" in run.output and "macro (90 x 80)" in run.output
    with open_slide(path) as slide:
        assert slide.level_dimensions == ((400, 300), (200, 150))
        label = slide._osr.associated_images["label"]
        np.testing.assert_array_equal(np.asarray(label), rgb[:40, :60])


def test_fluorescence_is_refused_in_one_line(rgb, tmp_path):
    channels = np.random.default_rng(0).integers(0, 4000, (4, 64, 64), dtype=np.uint16)
    path = write_ome_tiff(tmp_path / "fl.ome.tif", channels, levels=(1,), tile=64,
                          compression="zlib")
    error_line(CliRunner().invoke(main, ["info", str(path)]), str(path), "uint16",
               "brightfield RGB")


def test_a_damaged_tile_is_reported_by_its_place(rgb, tmp_path):
    path = write_ome_tiff(tmp_path / "d.ome.tif", rgb, levels=(1,), tile=128,
                          compression="zlib")
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[5], page.databytecounts[5]  # column 1, row 1 (4 across)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * count)
    with open_slide(path) as slide:
        with pytest.raises(DamagedSlideError, match="level-0 x 128, y 128") as err:
            _read_all(slide, 0)
        assert err.value.region is not None and err.value.region.box == (128, 128, 128, 128)
    with open_slide(path, skip_damaged=True) as slide:
        image = _read_all(slide, 0)
        assert [r.box for r in slide.damaged_regions()] == [(128, 128, 128, 128)]
        assert (image[128:256, 128:256] == 255).all()
        np.testing.assert_array_equal(image[:128], rgb[:128])


def test_a_file_cut_short_says_so(rgb, tmp_path):
    path = write_ome_tiff(tmp_path / "cut.ome.tif", rgb, levels=(1, 2, 4), tile=128,
                          compression="zlib", byteorder=">")
    data = path.read_bytes()
    with tifffile.TiffFile(path) as tif:
        level = tif.series[0].levels[2].keyframe
        end = max(o + c for o, c in zip(level.dataoffsets, level.databytecounts))
    path.write_bytes(data[: end - 10])  # a SubIFD level's last tile cut
    with pytest.raises(SlideError, match="cut short"):
        open_slide(path).close()


def test_a_file_object_reads_as_the_path(rgb, tmp_path):
    path = write_ome_tiff(tmp_path / "f.ome.tif", rgb, levels=(1, 2), tile=128,
                          compression="zlib", byteorder=">")
    with open(path, "rb") as f:
        assert is_ome_tiff(f) and f.tell() == 0
        slide = OmeTiffSlide(f, "remote.ome.tif")
        try:
            out = np.empty((150, 200, 3), np.uint8)
            assert slide.read_into(1, 0, 0, out) == []
            np.testing.assert_array_equal(out, area_downsample(rgb, 2))
        finally:
            slide.close()


@pytest.fixture(scope="module")
def same_pixels(tmp_path_factory):
    """An SVS and an OME-TIFF of the same pixels (lossless), same levels and resolution."""
    image, _ = synthetic_tissue(800, 1008, seed=11, tissue_fraction=0.4)
    folder = tmp_path_factory.mktemp("ome_tiff_same")
    svs = write_svs(folder / "s.svs", image, mpp=0.5, downsamples=(1, 4, 16),
                    compression="deflate")
    ome = write_ome_tiff(folder / "s.ome.tif", image, mpp=0.5, levels=(1, 4, 16), tile=256,
                         compression="zlib", byteorder=">")
    return svs, ome


def test_predict_on_an_ome_tiff_gives_the_map_of_the_same_svs(same_pixels, pixel_model,
                                                                 tmp_path):
    svs, ome = same_pixels
    maps = []
    for slide in (svs, ome):
        out = tmp_path / f"{slide.name}.wsiseg.zarr"
        info = predict_slide(slide, PredictConfig(model=str(pixel_model[0]), out=str(out),
                                                  progress=False))
        labels, _ = open_result(info.path)
        maps.append(np.asarray(labels[:]))
    assert maps[0].shape == maps[1].shape and len(np.unique(maps[0])) > 1
    np.testing.assert_array_equal(maps[0], maps[1])


def test_the_viewer_shows_a_result_of_an_ome_tiff(same_pixels, pixel_model, tmp_path):
    from wsiseg.view import make_server, server_url

    _, ome = same_pixels
    info = predict_slide(ome, PredictConfig(model=str(pixel_model[0]),
                                            out=str(tmp_path / "v.wsiseg.zarr"), progress=False))
    server, viewer = make_server(info.path, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        top = viewer.single.max_level
        url = server_url(server) + f"slide_files/{top}/0_0.jpeg"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.headers["Content-Type"] == "image/jpeg"
            tile = np.asarray(Image.open(io.BytesIO(response.read())))
        with open_slide(ome) as slide:
            expected = slide.read_level(0, 0, 0, tile.shape[1], tile.shape[0])
        assert tile.shape[:2] == (TILE_SIZE + OVERLAP, TILE_SIZE + OVERLAP)
        assert np.abs(tile.astype(int) - expected).mean() < 3  # JPEG of the same pixels
    finally:
        server.shutdown()
        server.server_close()
        viewer.close()
