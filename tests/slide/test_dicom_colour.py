"""JPEG frames that are YCbCr though labelled RGB are told from their markers and decoded in true
colour; properly labelled YCbCr and true RGB frames are left alone."""

from __future__ import annotations

import io
import struct

import imagecodecs
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pydicom")
import openslide

from wsiseg.slide.dicom_colour import (
    jpeg_colour_space,
    ycbcr_labelled_rgb,
    ycbcr_premultiplied_bgra_on_white,
    ycbcr_rgba_on_white,
    ycbcr_to_rgb_inplace,
)
from wsiseg.slide.dicom_series import first_fragment
from wsiseg.testing import synthetic_tissue, write_dicom_wsi, ycbcr_read_as_rgb


@pytest.fixture(scope="module")
def image():
    rgb, _ = synthetic_tissue(128, 192, seed=4)
    return rgb


def _jpeg(rgb, **options):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90, **options)
    return buf.getvalue()


def _segments(jpeg):
    """The marker segments before the frame header, as (marker, whole segment)."""
    out, pos = [], 2
    while jpeg[pos + 1] != 0xC0:
        length = struct.unpack_from(">H", jpeg, pos + 2)[0]
        out.append((jpeg[pos + 1], jpeg[pos:pos + 2 + length]))
        pos += 2 + length
    return out


def _without(jpeg, marker):
    for m, seg in _segments(jpeg):
        if m == marker:
            return jpeg.replace(seg, b"", 1)
    raise AssertionError(f"no marker {marker:#x}")


def _adobe(transform):
    body = b"Adobe" + struct.pack(">HHHB", 100, 0, 0, transform)
    return b"\xff\xee" + struct.pack(">H", len(body) + 2) + body


def test_the_markers_tell_the_colour_space_as_libjpeg_reads_them(image):
    ycc = _jpeg(image, subsampling=1)  # JFIF APP0, components 1, 2, 3
    rgb = _jpeg(image, keep_rgb=True, subsampling=0)  # Adobe APP14 transform 0, 'R', 'G', 'B'
    bare_ycc = _without(ycc, 0xE0)
    bare_rgb = _without(rgb, 0xEE)
    cases = {
        "jfif": (ycc, "ycbcr"),
        "ids 1,2,3": (bare_ycc, "ycbcr"),
        "adobe 1": (bare_ycc[:2] + _adobe(1) + bare_ycc[2:], "ycbcr"),
        "adobe 0 over ids 1,2,3": (bare_ycc[:2] + _adobe(0) + bare_ycc[2:], "rgb"),
        "adobe 0": (rgb, "rgb"),
        "ids R,G,B": (bare_rgb, "rgb"),
        "adobe 1 over ids R,G,B": (bare_rgb[:2] + _adobe(1) + bare_rgb[2:], "ycbcr"),
    }
    for name, (jpeg, space) in cases.items():
        assert jpeg_colour_space(jpeg) == space, name
    # libjpeg itself, left to its own rule, agrees: 'rgb' frames decode to what RGB gives.
    for jpeg, space in cases.values():
        decoded = imagecodecs.jpeg8_decode(jpeg)
        as_rgb = imagecodecs.jpeg8_decode(jpeg, colorspace="RGB", outcolorspace="RGB")
        assert np.array_equal(decoded, as_rgb) == (space == "rgb")
    grey = _jpeg(image[..., 0])
    for broken in (grey, b"", b"\xff\xd8", ycc[:40], b"GIF89a" + ycc, ycc[:2] + b"\xff\xda"):
        assert jpeg_colour_space(broken) is None


def test_conversion_is_libjpegs_to_the_bit():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)
    jpeg = _jpeg(rgb, subsampling=0)
    ycc = imagecodecs.jpeg8_decode(jpeg, outcolorspace="YCbCr")
    got = ycbcr_to_rgb_inplace(ycc.copy())
    np.testing.assert_array_equal(got, imagecodecs.jpeg8_decode(jpeg))
    # Against the formula in floating point: libjpeg's fixed point is off by one at most.
    x = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    f = x.astype(np.float64)
    y, cb, cr = f[..., 0], f[..., 1] - 128, f[..., 2] - 128
    exact = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1)
    exact = np.clip(np.rint(exact), 0, 255)
    out = np.empty_like(x)
    assert ycbcr_to_rgb_inplace(x, out) is out
    assert np.abs(out - exact).max() <= 1
    # In place, also on a view of a larger array, and several chunks long.
    big = rng.integers(0, 256, (300, 700, 3), dtype=np.uint8)
    expected = ycbcr_to_rgb_inplace(big[:, 100:600].copy())
    view = big[:, 100:600]
    ycbcr_to_rgb_inplace(view)
    np.testing.assert_array_equal(big[:, 100:600], expected)
    with pytest.raises(ValueError, match="uint8"):
        ycbcr_to_rgb_inplace(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="out"):
        ycbcr_to_rgb_inplace(x, np.empty((2, 2, 3), np.uint8))


def test_glass_where_openslide_drew_nothing():
    # White as YCbCr is magenta: transparent pixels must become glass after the conversion.
    white = np.full((1, 1, 3), 255, np.uint8)
    assert ycbcr_to_rgb_inplace(white).tolist() != [[[255, 255, 255]]]
    ycc = np.array([[[200, 120, 140], [90, 150, 100], [0, 0, 0]]], np.uint8)  # Y, Cb, Cr
    true = ycbcr_to_rgb_inplace(ycc.copy())
    alpha = np.array([[255, 128, 0]], np.uint8)
    straight = np.concatenate([ycc, alpha[..., None]], axis=-1)
    out = np.empty((1, 3, 3), np.uint8)
    ycbcr_rgba_on_white(straight, out)
    composite = np.rint(true * (alpha[..., None] / 255) + 255 * (1 - alpha[..., None] / 255))
    assert out[0, 0].tolist() == true[0, 0].tolist()
    assert np.abs(out[0, 1].astype(int) - composite[0, 1]).max() <= 1
    assert out[0, 2].tolist() == [255, 255, 255]
    # OpenSlide's own words: premultiplied, B G R A in memory.
    premultiplied = np.rint(ycc * (alpha[..., None] / 255)).astype(np.uint8)
    bgra = np.concatenate([premultiplied[..., ::-1], alpha[..., None]], axis=-1)
    ycbcr_premultiplied_bgra_on_white(bgra, out)
    assert out[0, 0].tolist() == true[0, 0].tolist()
    assert np.abs(out[0, 1].astype(int) - composite[0, 1]).max() <= 2
    assert out[0, 2].tolist() == [255, 255, 255]
    opaque = np.concatenate([ycc[..., ::-1], np.full((1, 3, 1), 255, np.uint8)], axis=-1)
    ycbcr_premultiplied_bgra_on_white(opaque, out)
    np.testing.assert_array_equal(out, true)


@pytest.mark.parametrize(("compression", "jpeg_colour", "flagged"), [
    ("jpeg", "ycbcr-labelled-rgb", True),
    ("jpeg", "ycbcr", False),  # YBR_FULL_422: OpenSlide converts it
    ("jpeg", "rgb", False),  # RGB frames, Adobe transform 0
    ("none", "ycbcr", False),
])
def test_only_ycbcr_frames_labelled_rgb_are_flagged(image, tmp_path, compression, jpeg_colour,
                                                    flagged):
    files = write_dicom_wsi(tmp_path, image, 0.5, (1, 4), tile=64, compression=compression,
                            jpeg_colour=jpeg_colour)
    assert [ycbcr_labelled_rgb(f) for f in files] == [flagged] * 2


def test_anything_unreadable_is_not_flagged(image, tmp_path, caplog):
    path = write_dicom_wsi(tmp_path, image, 0.5, (1,), tile=64, compression="jpeg",
                           jpeg_colour="ycbcr-labelled-rgb")[0]
    data = path.read_bytes()
    fragment = first_fragment(path)
    assert fragment is not None and data.index(fragment[:64]) > 0
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:data.index(fragment[:64]) + 8])  # the frame's first markers only
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(data[:132] + b"\xff" * 500)
    caplog.set_level("DEBUG", logger="wsiseg.slide.dicom_colour")
    for bad in (cut, junk, tmp_path / "missing.dcm", tmp_path):
        assert ycbcr_labelled_rgb(bad) is False, bad
    assert "colours taken as labelled" in caplog.text


def test_openslide_read_of_a_mislabelled_series_converts_to_its_true_colours(image, tmp_path):
    wrong = write_dicom_wsi(tmp_path / "wrong", image, 0.5, (1,), tile=64, compression="jpeg",
                            jpeg_colour="ycbcr-labelled-rgb")[0]
    right = write_dicom_wsi(tmp_path / "right", image, 0.5, (1,), tile=64, compression="jpeg")[0]
    with openslide.OpenSlide(str(wrong)) as osr:
        rgba = np.asarray(osr.read_region((0, 0), 0, (192, 128)))
    with openslide.OpenSlide(str(right)) as osr:
        labelled = np.asarray(osr.read_region((0, 0), 0, (192, 128)))[..., :3]
    # OpenSlide shows Y, Cb and Cr as R, G and B (salmon glass, green tissue).
    assert np.abs(rgba[..., :3].astype(int) - ycbcr_read_as_rgb(image)).mean() < 4
    out = np.empty((128, 192, 3), np.uint8)
    ycbcr_rgba_on_white(rgba, out)
    # The same frames, decoded by libjpeg told they are YCbCr: identical.
    np.testing.assert_array_equal(out, labelled)
    frame = imagecodecs.jpeg8_decode(first_fragment(wrong))
    np.testing.assert_array_equal(out[:64, :64], frame)
    assert np.abs(out.astype(int) - image).mean() < 4  # JPEG's loss only


def test_a_mislabelled_series_reads_views_and_maps_as_its_labelled_copy(pixel_model, tmp_path):
    from wsiseg.inference.pipeline import PredictConfig, predict_slide
    from wsiseg.result.reading import result_reads
    from wsiseg.result.store import open_result
    from wsiseg.slide.dicom_colour import true_colour
    from wsiseg.slide.reader import open_slide

    rgb, _ = synthetic_tissue(512, 640, seed=9)
    for name, colour in (("wrong", "ycbcr-labelled-rgb"), ("right", "ycbcr")):
        write_dicom_wsi(tmp_path / name, rgb, 0.5, (1, 4), tile=128, compression="jpeg",
                        jpeg_colour=colour)
    reads, maps = {}, {}
    for name in ("wrong", "right"):
        with open_slide(tmp_path / name) as slide:
            assert slide.ycbcr_as_rgb == (name == "wrong")
            # Runs past the level's right edge: glass there.
            reads[name] = slide.read_level(0, 600, 400, 150, 130)
            tile = true_colour(openslide.OpenSlide(str(slide.file))) if slide.ycbcr_as_rgb \
                else openslide.OpenSlide(str(slide.file))
            viewed = np.asarray(tile.read_region((0, 0), 1, (160, 128)))
            tile.close()
            reads[name + "-viewer"] = viewed
        config = PredictConfig(model=str(pixel_model[0]), out=str(tmp_path / f"{name}.zarr"),
                               progress=False, tissue_threshold=0.0)
        path = predict_slide(tmp_path / name, config).path
        with result_reads(path):
            maps[name] = np.asarray(open_result(path)[0][...])
    np.testing.assert_array_equal(reads["wrong"], reads["right"])
    assert (reads["wrong"][:, 40:] == 255).all()  # past the edge: white glass, not magenta
    np.testing.assert_array_equal(reads["wrong-viewer"], reads["right-viewer"])
    np.testing.assert_array_equal(maps["wrong"], maps["right"])
