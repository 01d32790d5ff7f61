"""The pyramidal TIFF export: every level opens in OpenSlide and tifffile, sized, calibrated and
holding the label pyramid; the level-0 frame places the map at the slide's bounds offset."""

from __future__ import annotations

import json
import math

import numpy as np
import openslide
import pytest
import tifffile
import zarr
from click.testing import CliRunner

from wsiseg.cards import ClassInfo
from wsiseg.cli.main import main
from wsiseg.export import ExportOptions, export_result
from wsiseg.inference.pipeline import PredictConfig, predict_slide
from wsiseg.result.pyramid import mode_downsample, pyramid_paths
from wsiseg.testing.result import write_result

CLASSES = [{"index": 0, "name": "background", "color": [0, 0, 0]},
           {"index": 1, "name": "normal", "color": [0, 160, 0]},
           {"index": 2, "name": "tumour", "color": [200, 0, 0]}]


@pytest.fixture(scope="module")
def synthetic_result(svs_x40, pixel_model, tmp_path_factory):
    path, _ = pixel_model
    out = tmp_path_factory.mktemp("x40") / "x40.wsiseg.zarr"
    return predict_slide(svs_x40.path, PredictConfig(model=str(path), out=str(out))).path


def _check_levels(tif_path, levels, mpp, names, lut=None):
    """Each TIFF level, read by OpenSlide and by tifffile, equals ``levels`` (after ``lut``)."""
    with openslide.OpenSlide(str(tif_path)) as osr:
        assert osr.level_count == len(levels)
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(mpp[0], rel=1e-6)
        assert float(osr.properties["openslide.mpp-y"]) == pytest.approx(mpp[1], rel=1e-6)
        for k, expected in enumerate(levels):
            h, w = expected.shape
            assert osr.level_dimensions[k] == (w, h)
            rgba = np.asarray(osr.read_region((0, 0), k, (w, h)))
            if lut is None:
                assert np.array_equal(rgba[..., 0], expected)
            else:
                painted = expected > 0
                assert np.array_equal(rgba[painted][:, :3], lut[expected[painted], :3])
                assert (rgba[~painted][:, 3] == 0).all()  # background transparent
    with tifffile.TiffFile(tif_path) as tif:
        (series,) = tif.series
        assert len(series.levels) == len(levels)
        for k, (page, expected) in enumerate(zip(tif.pages, levels)):
            assert page.is_tiled and page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
            assert page.shape[:2] == expected.shape
            unit = page.tags["ResolutionUnit"].value
            assert unit == tifffile.RESUNIT.CENTIMETER
            x_per_cm, y_per_cm = page.get_resolution()
            assert 1e4 / x_per_cm == pytest.approx(mpp[0] * 2 ** k, rel=1e-6)
            assert 1e4 / y_per_cm == pytest.approx(mpp[1] * 2 ** k, rel=1e-6)
            data = page.asarray()
            assert np.array_equal(data if lut is None else data[..., :3],
                                  expected if lut is None else lut[expected, :3])
        description = json.loads(tif.pages[0].description)
        assert description["classes"] == {str(i): n for i, n in enumerate(names)}


@pytest.mark.slow
@pytest.mark.parametrize("which", ["synthetic_result", "cmu_result"])
def test_every_level_opens_sized_and_calibrated(which, request, tmp_path):
    result = request.getfixturevalue(which)
    written = export_result(result, ["tiff"], tmp_path, ExportOptions(tiff_overlay=True))
    assert [p.name for p in written] == [f"{result.name.split('.')[0]}.labels.tif",
                                         f"{result.name.split('.')[0]}.overlay.tif"]
    group = zarr.open_group(str(result), mode="r")
    attrs = group.attrs["wsiseg"]
    levels = [group[p][:] for p in pyramid_paths(group)]
    assert len(levels) >= 2
    lut = np.zeros((256, 3), dtype=np.uint8)
    for c in attrs["classes"]:
        lut[c["index"]] = c["color"]
    lut[0] = 0  # background is left unpainted (and transparent)
    names = [c["name"] for c in attrs["classes"]]
    _check_levels(written[0], levels, attrs["analysis_mpp"], names)
    _check_levels(written[1], levels, attrs["analysis_mpp"], names, lut=lut)
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".*"))


def _fake_result(path, labels, offset, scale, dimensions, mpp0=0.25):
    """A finished-looking result holding ``labels`` at ``offset`` in a slide of ``dimensions``."""
    classes = [ClassInfo(c["index"], c["name"], tuple(c["color"])) for c in CLASSES]
    return write_result(path, labels, classes, scale=scale, offset=offset,
                        slide_mpp=(mpp0, mpp0), dimensions=dimensions)


@pytest.mark.parametrize("origin", ["bounds", "level0"])
def test_map_lands_at_the_bounds_offset_in_the_level0_frame(origin, tmp_path):
    labels = np.zeros((300, 280), dtype=np.uint8)
    labels[10:20, 30:50] = 2
    labels[-1, -1] = 1  # the map's last pixel
    offset, scale, dimensions = (1000, 600), (4, 4), (3000, 2000)
    result = _fake_result(tmp_path / "off.wsiseg.zarr", labels, offset, scale, dimensions)
    (path,) = export_result(result, ["tiff"], tmp_path / "out", ExportOptions(origin=origin))
    with openslide.OpenSlide(str(path)) as osr:
        page = np.asarray(osr.read_region((0, 0), 0, osr.dimensions))[..., 0]
    if origin == "bounds":
        assert page.shape == labels.shape and np.array_equal(page, labels)
        return
    assert page.shape == (math.ceil(2000 / 4), math.ceil(3000 / 4))
    ys, xs = np.nonzero(page == 2)
    # Tumour at map rows 10-19, columns 30-49: level-0 y 640-679, x 1120-1199.
    assert (ys.min() * 4 + 0, ys.max() * 4 + 4) == (600 + 40, 600 + 80)
    assert (xs.min() * 4, xs.max() * 4 + 4) == (1000 + 120, 1000 + 200)
    assert page[150 + 299, 250 + 279] == 1 and (page > 0).sum() == (labels > 0).sum()


@pytest.mark.slow
def test_result_without_pyramid_gets_one_built_on_the_side(tmp_path):
    rng = np.random.default_rng(5)
    labels = np.kron(rng.integers(0, 3, size=(20, 30)), np.ones((31, 31))).astype(np.uint8)
    result = _fake_result(tmp_path / "old.wsiseg.zarr", labels, (0, 0), (2, 2), (1860, 1240))
    (path,) = export_result(result, ["tiff"], tmp_path / "out")
    expected = [labels]
    while max(expected[-1].shape) > 256:
        expected.append(mode_downsample(expected[-1], 3))
    _check_levels(path, expected, [0.5, 0.5], [c["name"] for c in CLASSES])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["old.labels.tif"]


def test_cli_export_tiff_with_overlay_and_origin(synthetic_result, tmp_path):
    result = CliRunner().invoke(main, ["export", str(synthetic_result), "--to", "tiff",
                                       "--tiff-overlay", "--origin", "level0",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x40.labels.tif").is_file() and (tmp_path / "x40.overlay.tif").is_file()
    bad = CliRunner().invoke(main, ["export", str(synthetic_result), "--to", "tiff",
                                    "--origin", "corner", "--out", str(tmp_path)])
    assert bad.exit_code != 0 and "corner" in bad.output


def test_description_holds_file_names_and_no_word_asap_refuses(tmp_path):
    folder = tmp_path / "DICOM exports" / "xml"
    labels = np.zeros((40, 60), dtype=np.uint8)
    labels[5:9, 5:9] = 2
    result = _fake_result(folder / "run.wsiseg.zarr", labels, (0, 0), (2, 2), (120, 80))
    group = zarr.open_group(str(result), mode="r+")
    attrs = group.attrs["wsiseg"]
    attrs["slide"]["path"] = "/data/DICOM/xml/DICOM_slide.xml.tiff"
    group.attrs["wsiseg"] = attrs
    (path,) = export_result(result, ["tiff"], folder / "out")
    with tifffile.TiffFile(path) as tif:
        raw = tif.pages[0].tags["ImageDescription"].value
    assert "/" not in raw
    assert "DICOM" not in raw and "xml" not in raw.lower() and "dicom" not in raw.lower()
    description = json.loads(raw)  # escaped, not altered: JSON gives the names back
    assert description["slide"] == "DICOM_slide.xml.tiff" and description["model"] == "test-model"
    assert description["classes"] == {str(c["index"]): c["name"] for c in CLASSES}


@pytest.mark.slow
def test_tiff_defaults_to_the_level0_frame_and_geojson_to_bounds(tmp_path):
    labels = np.zeros((300, 280), dtype=np.uint8)
    labels[10:20, 30:50] = 2
    offset, scale, dimensions = (1000, 600), (4, 4), (3000, 2000)
    result = _fake_result(tmp_path / "off.wsiseg.zarr", labels, offset, scale, dimensions)
    level0_shape = (math.ceil(2000 / 4), math.ceil(3000 / 4))

    def frames(out):
        with tifffile.TiffFile(out / "off.labels.tif") as tif:
            page = tif.pages[0]
            tiff = (page.shape, json.loads(page.description)["origin"])
        geojson = json.loads((out / "off.geojson").read_text())["wsiseg"]["origin"]
        return tiff, geojson

    export_result(result, ["tiff", "geojson"], tmp_path / "api")
    assert frames(tmp_path / "api") == ((level0_shape, "level0"), "bounds")
    runner = CliRunner()
    for origin, expected in ((None, ((level0_shape, "level0"), "bounds")),
                             ("bounds", ((labels.shape, "bounds"), "bounds")),
                             ("level0", ((level0_shape, "level0"), "level0"))):
        out = tmp_path / f"cli-{origin}"
        args = ["export", str(result), "--to", "tiff,geojson", "--out", str(out)]
        run = runner.invoke(main, args + (["--origin", origin] if origin else []))
        assert run.exit_code == 0, run.output
        assert frames(out) == expected, origin
