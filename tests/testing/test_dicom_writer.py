"""The synthetic DICOM WSI series opens in OpenSlide as a ``dicom`` slide with its resolution
and its pixels."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pydicom")
import openslide

from wsiseg.testing import area_downsample, synthetic_tissue, write_dicom_wsi, ycbcr_read_as_rgb


@pytest.fixture(scope="module")
def image():
    rgb, _ = synthetic_tissue(300, 420, seed=5)
    return rgb


@pytest.mark.parametrize("opened", [0, 1])
def test_openslide_opens_the_series_through_any_level(image, tmp_path, opened):
    files = write_dicom_wsi(tmp_path / "s", image, 0.5, (1, 4), tile=128)
    assert [f.name for f in files] == ["level-0.dcm", "level-1.dcm"]
    with openslide.OpenSlide(str(files[opened])) as osr:
        assert osr.properties["openslide.vendor"] == "dicom"
        assert osr.level_dimensions == ((420, 300), (105, 75))
        assert osr.level_downsamples == (1.0, 4.0)
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(0.5)
        assert float(osr.properties["openslide.mpp-y"]) == pytest.approx(0.5)
        # Uncompressed frames read back exactly, the padded edge tiles cut off.
        level0 = np.asarray(osr.read_region((0, 0), 0, (420, 300)))
        level1 = np.asarray(osr.read_region((0, 0), 1, (105, 75)))
    assert (level0[..., 3] == 255).all()
    np.testing.assert_array_equal(level0[..., :3], image)
    np.testing.assert_array_equal(level1[..., :3], area_downsample(image, 4))


def test_jpeg_frames_open_close_to_the_image(image, tmp_path):
    files = write_dicom_wsi(tmp_path / "j", image, 0.25, (1, 2), tile=64, compression="jpeg")
    with openslide.OpenSlide(str(files[0])) as osr:
        assert osr.properties["openslide.vendor"] == "dicom"
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(0.25)
        level0 = np.asarray(osr.read_region((0, 0), 0, (420, 300)))[..., :3]
    assert np.abs(level0.astype(int) - image).mean() < 4


@pytest.mark.parametrize(("jpeg_colour", "photometric", "marker"), [
    ("ycbcr", "YBR_FULL_422", b"JFIF"),
    ("ycbcr-labelled-rgb", "RGB", b"JFIF"),
    ("rgb", "RGB", b"Adobe"),
])
def test_jpeg_colours_and_their_labels(image, tmp_path, jpeg_colour, photometric, marker):
    from pydicom import dcmread
    from pydicom.encaps import generate_frames

    files = write_dicom_wsi(tmp_path / "c", image[:128, :192], 0.5, (1,), tile=64,
                            compression="jpeg", jpeg_colour=jpeg_colour)
    ds = dcmread(files[0])
    assert ds.PhotometricInterpretation == photometric
    assert marker in next(generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))[:40]
    with openslide.OpenSlide(str(files[0])) as osr:
        seen = np.asarray(osr.read_region((0, 0), 0, (192, 128)))[..., :3].astype(int)
    # Only the mislabelled frames reach the reader as Y, Cb and Cr in place of R, G and B.
    shown = (ycbcr_read_as_rgb(image[:128, :192]) if jpeg_colour == "ycbcr-labelled-rgb"
             else image[:128, :192])
    assert np.abs(seen - shown).mean() < 4


def test_a_series_without_image_type(image, tmp_path):
    from pydicom import dcmread

    files = write_dicom_wsi(tmp_path / "n", image, 0.5, (1, 4), tile=128, image_type=False)
    assert all("ImageType" not in dcmread(f) for f in files)
    with pytest.raises(openslide.OpenSlideError):
        openslide.OpenSlide(str(files[0]))


def test_bad_arguments_are_refused(image, tmp_path):
    with pytest.raises(ValueError, match="compression"):
        write_dicom_wsi(tmp_path / "x", image, 0.5, compression="webp")
    with pytest.raises(ValueError, match="tile"):
        write_dicom_wsi(tmp_path / "x", image, 0.5, tile=100)
    with pytest.raises(ValueError, match="jpeg_colour"):
        write_dicom_wsi(tmp_path / "x", image, 0.5, compression="jpeg", jpeg_colour="ybr")
