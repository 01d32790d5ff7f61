"""``wsiseg info`` and ``predict`` on a folder of DICOM instances, and colour warnings on
screen and in the result."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("pydicom")

from wsiseg.cli.main import main
from wsiseg.result.store import open_result
from wsiseg.testing import (
    synthetic_tissue,
    write_dicom_wsi,
    write_svs,
    ycbcr_read_as_rgb,
)
from wsiseg.testing.cli import error_line


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def image():
    rgb, _ = synthetic_tissue(600, 800, seed=7)
    return rgb


def _labels(path):
    labels, info = open_result(path)
    return np.asarray(labels[:]), info


def test_info_on_a_series_folder(image, tmp_path):
    folder = tmp_path / "case1"
    write_dicom_wsi(folder, image, 0.5, (1, 4), tile=128)
    result = run("info", folder)
    assert result.exit_code == 0, result.stderr
    assert f"file:            {folder} (" in result.stdout
    assert "series:          2 DICOM files, opened through level-0.dcm" in result.stdout
    assert "vendor:          dicom" in result.stdout
    assert "mpp (level 0):   0.5 x 0.5 um/px" in result.stdout
    assert "level 1: 200 x 150, downsample 4, 2 um/px" in result.stdout


@pytest.mark.slow
def test_predict_a_series_folder_gives_the_map_of_the_same_svs(image, pixel_model, tmp_path):
    folder = tmp_path / "case1"
    write_dicom_wsi(folder, image, 0.5, (1, 4), tile=128)
    svs = write_svs(tmp_path / "same.svs", image, 0.5, (1, 4), tile=128, compression="none")
    model = pixel_model[0]
    result = run("predict", folder, "--model", model, "--quiet")
    assert result.exit_code == 0, result.stderr
    assert "warning" not in result.stderr
    out = tmp_path / "case1.wsiseg.zarr"  # beside the folder, named after it
    assert out.is_dir()
    result = run("predict", svs, "--model", model, "--quiet")
    assert result.exit_code == 0, result.stderr
    dicom_map, info = _labels(out)
    svs_map, _ = _labels(tmp_path / "same.wsiseg.zarr")
    assert info.slide.vendor == "dicom" and info.slide.path == folder.resolve()
    assert info.slide.size_bytes == sum(f.stat().st_size for f in folder.iterdir())
    assert info.warnings == ()
    assert dicom_map.shape == (300, 400) and (dicom_map > 0).any()
    np.testing.assert_array_equal(dicom_map, svs_map)


def test_a_batch_of_series_folders_and_its_rerun(image, pixel_model, tmp_path):
    scans = tmp_path / "scans"
    small = image[:256, :320]
    for name in ("1.2.840.1", "1.2.840.2"):
        write_dicom_wsi(scans / name, small, 0.5, (1, 2), tile=64)
    out = tmp_path / "maps"
    args = ("predict", scans, "--out", out, "--model", pixel_model[0], "--quiet")
    result = run(*args)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.wsiseg.zarr")) == [
        "1.2.840.1.wsiseg.zarr", "1.2.840.2.wsiseg.zarr"]
    result = run(*args)  # complete results of the same slides are kept
    assert result.exit_code == 0, result.stderr
    manifest = (out / "manifest.csv").read_text()
    assert manifest.count(",skipped,") == 2, manifest


@pytest.mark.parametrize("command", ["info", "predict"])
def test_a_folder_mixing_series_fails_in_one_line(image, tmp_path, command):
    folder = tmp_path / "mixed"
    write_dicom_wsi(folder, image[:128, :128], 0.5, (1,), tile=64, name="a")
    write_dicom_wsi(folder, image[:128, :128], 0.5, (1,), tile=64, name="b")
    result = run(command, folder)
    error_line(result, str(folder), "2 series", "folder of its own")
    assert not (tmp_path / "mixed.wsiseg.zarr").exists()


@pytest.mark.slow
def test_ycbcr_read_as_rgb_warns_on_screen_and_in_the_result(image, pixel_model, tmp_path):
    svs = write_svs(tmp_path / "cast.svs", ycbcr_read_as_rgb(image), 0.5, (1, 4), tile=128,
                    compression="none")
    result = run("predict", svs, "--model", pixel_model[0], "--quiet")
    assert result.exit_code == 0, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("wsiseg: warning: ")]
    assert any(f"{svs}: glass is not white" in ln and "YCbCr read as RGB" in ln for ln in lines)
    assert any(f"{svs}: tissue covers" in ln for ln in lines)
    _, info = open_result(tmp_path / "cast.wsiseg.zarr")
    assert len(info.warnings) == 2
    assert info.warnings[0].startswith("glass is not white")
    assert info.warnings[1].startswith("tissue covers")


def test_a_folder_without_slides_says_so_before_asking_for_out(tmp_path):
    (tmp_path / "notes").mkdir()
    error_line(run("predict", tmp_path), str(tmp_path), "folder holds no slide",
               "give the folder that holds the slides")
