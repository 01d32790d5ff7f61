"""``wsiseg info --check``: which reader opens each slide, why the others do not, where its
resolution comes from, and whether a sample of its tiles decodes."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from wsiseg.cli.main import main
from wsiseg.slide.check import check_slide
from wsiseg.testing import synthetic_tissue, write_ome_tiff, write_ome_zarr, write_svs


@pytest.fixture(scope="module")
def tissue():
    return synthetic_tissue(600, 800, seed=41)[0]


def test_each_reader_is_named_with_why_the_others_are_not(tissue, tmp_path):
    svs = check_slide(write_svs(tmp_path / "a.svs", tissue, 0.5, tile=128))
    assert (svs.status, svs.reader, svs.vendor) == ("ready", "openslide", "aperio")
    assert svs.mpp == pytest.approx((0.5, 0.5)) and "Aperio" in svs.mpp_origin
    assert svs.others == {"ome-tiff": "no OME-XML in its first ImageDescription",
                          "ome-zarr": "not a folder"}
    assert svs.decoded == svs.samples == 16 * len(svs.levels)

    ome = check_slide(write_ome_tiff(tmp_path / "b.ome.tiff", tissue, 0.25, levels=(1, 2)))
    assert (ome.status, ome.reader, ome.levels) == ("ready", "ome-tiff", ((800, 600), (400, 300)))
    assert ome.mpp == pytest.approx((0.25, 0.25)) and "OME-XML" in ome.mpp_origin
    assert ome.others["openslide"].startswith("OpenSlide would read it as generic-tiff")

    zarr = check_slide(write_ome_zarr(tmp_path / "c.ome.zarr", tissue, 0.0005,
                                      unit="millimeter", levels=(1,)))
    assert (zarr.status, zarr.reader) == ("ready", "ome-zarr")
    assert zarr.mpp == pytest.approx((0.5, 0.5)) and "NGFF" in zarr.mpp_origin
    assert set(zarr.others) == {"openslide", "ome-tiff"}
    # A unit read wrongly somewhere upstream: 2 mm/px is no scan, and predict would refuse it.
    wrong = check_slide(write_ome_zarr(tmp_path / "d.ome.zarr", tissue, 2.0, unit="millimeter",
                                       levels=(1,)))
    assert wrong.status == "no mpp" and "which no scanner gives" in wrong.mpp_error


def test_slides_that_are_not_ready_say_why(tissue, tmp_path, tiff_no_mpp, shared_data):
    no_mpp = check_slide(tiff_no_mpp.path)
    assert no_mpp.status == "no mpp" and no_mpp.vendor == "generic-tiff"
    assert any("--slide-mpp" in line for line in no_mpp.lines())
    damaged = check_slide(shared_data / "slides" / "bad" / "unreadable.svs")
    assert damaged.status == "damaged" and damaged.decoded == 0
    assert "cannot be decoded" in damaged.sample_error
    junk = tmp_path / "junk.svs"
    junk.write_bytes(b"not a slide at all" * 100)
    bad = check_slide(junk)
    assert bad.status == "unreadable" and "junk.svs" in bad.error and not bad.levels


def test_the_command_checks_a_folder_and_fails_unless_every_slide_is_ready(tissue, tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    write_svs(folder / "good.svs", tissue, 0.5, tile=128)
    (folder / "notes.qptiff").write_bytes(b"x")
    result = CliRunner().invoke(main, ["info", "--check", str(folder)])
    assert result.exit_code == 0, result.output
    assert f"{folder / 'good.svs'}: ready" in result.output
    assert "1 slide: 1 ready" in result.output and "ignored: 1 file (.qptiff)" in result.output
    (folder / "bad.svs").write_bytes(b"\0" * 64)
    result = CliRunner().invoke(main, ["info", "--check", str(folder)])
    assert result.exit_code == 1
    assert "2 slides: 1 ready, 1 unreadable" in result.output
    assert "Traceback" not in result.output


def test_the_result_records_who_read_the_slide(tissue, tmp_path, pixel_model):
    from wsiseg.export.report import build_report
    from wsiseg.result.store import open_result

    for name, path in (("openslide", write_svs(tmp_path / "a.svs", tissue, 0.5, tile=128)),
                       ("ome-tiff", write_ome_tiff(tmp_path / "b.ome.tiff", tissue, 0.5))):
        out = tmp_path / f"{name}.wsiseg.zarr"
        result = CliRunner().invoke(main, ["predict", str(path), "--model", str(pixel_model[0]),
                                           "--out", str(out), "--quiet"])
        assert result.exit_code == 0, result.output
        assert open_result(out)[1].slide.reader == name
        assert build_report(out)["slide_reader"] == name
