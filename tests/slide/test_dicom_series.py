"""A folder of DICOM instances is one slide, opened through its level-0 instance."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pydicom")

from wsiseg.errors import SlideError
from wsiseg.slide.dicom_series import (
    dicom_problem,
    first_fragment,
    read_header,
    series_file,
    slide_stem,
)
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


def test_header_tells_the_encoding_and_first_fragment_is_the_first_frame(image, tmp_path):
    from pydicom import dcmread
    from pydicom.encaps import generate_frames

    jpeg = write_dicom_wsi(tmp_path / "j", image, 0.5, (1,), tile=64, compression="jpeg",
                           jpeg_colour="ycbcr-labelled-rgb")[0]
    raw = write_dicom_wsi(tmp_path / "r", image, 0.5, (1,), tile=64)[0]
    header = read_header(jpeg)
    assert (header.transfer_syntax, header.photometric) == ("1.2.840.10008.1.2.4.50", "RGB")
    assert read_header(raw).transfer_syntax == "1.2.840.10008.1.2.1"
    ds = dcmread(jpeg)
    frames = generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames)
    first = next(frames)
    assert first_fragment(jpeg) == first and first[:2] == b"\xff\xd8"
    assert first_fragment(jpeg, limit=10) == first[:10]
    assert first_fragment(raw) is None  # native pixel data: no fragments
    # Behind a sequence of undefined length.
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.SpecimenIdentifier = "S1"
    ds.SpecimenDescriptionSequence = Sequence([item])
    ds.save_as(tmp_path / "seq.dcm")
    assert first_fragment(tmp_path / "seq.dcm") == first
    (tmp_path / "short.dcm").write_bytes(jpeg.read_bytes()[:len(jpeg.read_bytes()) // 2])
    assert first_fragment(tmp_path / "short.dcm") in (None, first)
    assert first_fragment(tmp_path / "missing.dcm") is None


def test_a_series_without_image_type_is_told_so(image, tmp_path):
    import openslide

    files = write_dicom_wsi(tmp_path / "none", image, 0.5, (1, 4), tile=64, image_type=False)
    assert read_header(files[0]).image_type == () and not read_header(files[0]).has_image_type
    with pytest.raises(openslide.OpenSlideError):  # OpenSlide's own words do not say why
        openslide.OpenSlide(str(files[0]))
    message = dicom_problem(files[0])
    assert message is not None and "\n" not in message
    assert message.startswith(f"{files[0]}: has no ImageType (0008,0008) (as do 1 other file")
    assert "convert the slide again" in message and "TIFF/SVS" in message


def test_the_faulty_instance_of_a_series_is_the_one_named(image, tmp_path):
    import openslide
    from pydicom import dcmread

    files = write_dicom_wsi(tmp_path / "one", image, 0.5, (1, 4), tile=64)
    assert dicom_problem(files[0]) is None
    ds = dcmread(files[1])
    del ds.ImageType
    ds.save_as(files[1])
    with pytest.raises(openslide.OpenSlideError):
        openslide.OpenSlide(str(files[0]))
    assert dicom_problem(files[0]).startswith(f"{files[1]}: has no ImageType (0008,0008), ")
    # Another series in the folder is none of this one's business; nor is a non-DICOM file.
    other = write_dicom_wsi(tmp_path / "two", image, 0.5, (1,), tile=64)[0]
    files[1].rename(tmp_path / "two" / "stray.dcm")
    assert dicom_problem(other) is None
    ds = dcmread(files[0])
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME"]
    ds.save_as(files[0])
    assert dicom_problem(files[0]).startswith(
        f"{files[0]}: its ImageType (0008,0008) is ORIGINAL\\PRIMARY\\VOLUME: 3 value(s), "
        "where DICOM whole-slide images have four")
    (tmp_path / "x.svs").write_bytes(b"II*\0" + b"\0" * 200)
    assert dicom_problem(tmp_path / "x.svs") is None


def test_opening_a_series_without_image_type_says_so_in_one_line(image, tmp_path):
    files = write_dicom_wsi(tmp_path / "s", image, 0.5, (1, 4), tile=64, image_type=False)
    with pytest.raises(SlideError) as err:
        open_slide(tmp_path / "s")
    message = str(err.value)
    assert "\n" not in message and "may be damaged" not in message
    assert message.startswith(f"{files[0]}: has no ImageType (0008,0008)")
