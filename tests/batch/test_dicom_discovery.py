"""Batch discovery of DICOM slides: a folder of one series is one slide."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pydicom")

from wsiseg.batch.discovery import find_slides, is_batch, output_for
from wsiseg.errors import ConfigError
from wsiseg.testing import synthetic_tissue, write_dicom_wsi


@pytest.fixture(scope="module")
def image():
    rgb, _ = synthetic_tissue(128, 160, seed=4)
    return rgb


def _series(folder: Path, image, levels=(1, 2, 4), name="level"):
    return write_dicom_wsi(folder, image, 0.5, levels, tile=32, name=name)


def test_a_series_folder_is_one_slide_not_a_batch(image, tmp_path):
    folder = tmp_path / "case1"
    _series(folder, image)
    assert find_slides([folder]) == [folder]
    assert not is_batch([folder])
    assert output_for(folder, tmp_path / "out") == tmp_path / "out" / "case1.wsiseg.zarr"


def test_a_folder_of_series_folders_is_a_batch_of_them(image, tmp_path):
    for name in ("1.2.840.5", "1.2.840.6"):  # UID names: no suffix is cut off
        _series(tmp_path / name, image)
    (tmp_path / "notes").mkdir()  # a folder without .dcm files is not a slide
    slides = find_slides([tmp_path])
    assert slides == [tmp_path / "1.2.840.5", tmp_path / "1.2.840.6"]
    assert is_batch([tmp_path])
    outs = {output_for(s, tmp_path).name for s in slides}
    assert outs == {"1.2.840.5.wsiseg.zarr", "1.2.840.6.wsiseg.zarr"}


def test_a_glob_of_instances_names_their_series_once(image, tmp_path):
    _series(tmp_path / "a", image)
    _series(tmp_path / "b", image)
    assert find_slides([str(tmp_path / "*" / "*.dcm")]) == [tmp_path / "a", tmp_path / "b"]


def test_a_folder_mixing_series_is_refused(image, tmp_path):
    _series(tmp_path, image, (1,), name="x")
    _series(tmp_path, image, (1,), name="y")
    with pytest.raises(ConfigError) as err:
        find_slides([tmp_path])
    message = str(err.value)
    assert message.startswith(f"{tmp_path}: holds DICOM instances of 2 series")
    assert "folder of its own" in message and "\n" not in message


def test_a_folder_mixing_dicom_and_other_slides_is_refused(image, tmp_path):
    _series(tmp_path, image, (1,))
    (tmp_path / "other.svs").write_bytes(b"x")
    with pytest.raises(ConfigError, match="other.svs.*move the DICOM series into a folder"):
        find_slides([tmp_path])


def test_an_empty_folder_says_the_way_out(tmp_path):
    with pytest.raises(ConfigError) as err:
        find_slides([tmp_path])
    message = str(err.value)
    assert message.startswith(f"{tmp_path}: folder holds no slide")
    assert "give the folder that holds the slides" in message and ".dcm" in message
