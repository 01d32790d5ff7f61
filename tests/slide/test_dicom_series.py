"""A folder of DICOM instances is one slide, opened through its level-0 instance."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pydicom")

from wsiseg.errors import SlideError
from wsiseg.slide.dicom_series import read_header, series_file, slide_stem
from wsiseg.slide.reader import open_slide
from wsiseg.testing import synthetic_tissue, write_dicom_wsi


@pytest.fixture(scope="module")
def image():
    rgb, _ = synthetic_tissue(256, 320, seed=3)
    return rgb


def test_header_of_each_instance(image, tmp_path):
    files = write_dicom_wsi(tmp_path, image, 0.5, (1, 2, 4), tile=64, series_uid="1.2.3.4")
    headers = [read_header(f) for f in files]
    assert [h.size for h in headers] == [(320, 256), (160, 128), (80, 64)]
    assert all(h.series_uid == "1.2.3.4" and h.is_level for h in headers)
    assert headers[0].image_type[:3] == ("ORIGINAL", "PRIMARY", "VOLUME")


def test_header_behind_nested_sequences_and_in_implicit_vr(image, tmp_path):
    from pydicom import dcmread
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ImplicitVRLittleEndian

    path = write_dicom_wsi(tmp_path / "a", image, 0.5, (1,), tile=64, series_uid="9.8")[0]
    ds = dcmread(path)
    inner = Dataset()
    inner.CodeValue = "1"
    item = Dataset()
    item.SpecimenIdentifier = "S1"
    item.SpecimenPreparationSequence = Sequence([inner])
    ds.SpecimenDescriptionSequence = Sequence([item])  # (0040,0560): before the sizes
    ds.save_as(path)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(tmp_path / "implicit.dcm", enforce_file_format=True)
    for p in (path, tmp_path / "implicit.dcm"):
        header = read_header(p)
        assert (header.series_uid, header.size) == ("9.8", (320, 256)), p


def test_not_dicom_has_no_header(tmp_path):
    (tmp_path / "x.dcm").write_bytes(b"\0" * 200)
    assert read_header(tmp_path / "x.dcm") is None


def test_level_zero_is_chosen_whatever_the_names(image, tmp_path):
    files = write_dicom_wsi(tmp_path, image, 0.5, (1, 4), tile=64)
    files[0].rename(tmp_path / "zzz.dcm")  # level 0 last in sorted order
    files[1].rename(tmp_path / "aaa.dcm")
    assert series_file(tmp_path).name == "zzz.dcm"


def test_slide_opens_the_folder(image, tmp_path):
    folder = tmp_path / "1.2.840.99"
    files = write_dicom_wsi(folder, image, 0.5, (1, 4), tile=64)
    with open_slide(folder) as slide:
        assert slide.path == folder and slide.file == files[0]
        assert slide.vendor == "dicom" and slide.mpp == (0.5, 0.5)
        assert slide.dimensions == (320, 256)
        assert slide.size_bytes == sum(f.stat().st_size for f in files)
        np.testing.assert_array_equal(slide.read_level(0, 0, 0, 320, 256), image)
        info = slide.info()
    assert (info.files, info.opened) == (2, str(files[0]))
    assert slide_stem(folder) == "1.2.840.99"


def test_mixed_series_is_refused_in_one_line(image, tmp_path):
    write_dicom_wsi(tmp_path, image, 0.5, (1,), tile=64, name="a")
    write_dicom_wsi(tmp_path, image, 0.5, (1,), tile=64, name="b")
    with pytest.raises(SlideError) as err:
        open_slide(tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path) in message and "2 series" in message and "folder of its own" in message


def test_a_foreign_file_in_the_folder_is_named(image, tmp_path):
    write_dicom_wsi(tmp_path, image, 0.5, (1,), tile=64)
    (tmp_path / "notes.dcm").write_text("not dicom")
    with pytest.raises(SlideError, match="notes.dcm: not a DICOM file.*remove it"):
        open_slide(tmp_path)


def test_a_folder_without_dicom_is_not_a_slide(tmp_path):
    with pytest.raises(SlideError, match="without DICOM .*give a slide file, or the folder"):
        open_slide(tmp_path)
