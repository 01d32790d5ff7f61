"""wsiseg.testing.generic: the tiled TIFF, with and without a resolution, read by OpenSlide."""

from __future__ import annotations

import numpy as np
import openslide
import tifffile

from wsiseg.testing import area_downsample, synthetic_tissue, write_generic_tiff


def read_level(osr: openslide.OpenSlide, level: int) -> np.ndarray:
    rgba = np.asarray(osr.read_region((0, 0), level, osr.level_dimensions[level]))
    assert (rgba[..., 3] == 255).all()
    return rgba[..., :3]


# -- generic TIFF -------------------------------------------------------------------------------
def test_generic_tiff_fixture_has_no_resolution(tiff_no_mpp):
    with openslide.OpenSlide(str(tiff_no_mpp.path)) as osr:
        props = osr.properties
        assert props["openslide.vendor"] == "generic-tiff"
        assert osr.level_dimensions == ((640, 512), (160, 128))
        assert osr.level_downsamples == (1.0, 4.0)
        assert "openslide.mpp-x" not in props and "openslide.objective-power" not in props
        # (libtiff reports the default ResolutionUnit, inch, even when the tag is absent.)
        assert "tiff.XResolution" not in props and "tiff.YResolution" not in props
        assert np.array_equal(read_level(osr, 0), tiff_no_mpp.rgb_level0)
        assert np.array_equal(read_level(osr, 1), area_downsample(tiff_no_mpp.rgb_level0, 4))
    with tifffile.TiffFile(tiff_no_mpp.path) as tif:
        for page in tif.pages:
            assert not {282, 283, 296} & {tag.code for tag in page.tags.values()}
    assert tiff_no_mpp.mpp is None


def test_generic_tiff_with_mpp_has_resolution_in_centimetres(tmp_path):
    rgb, _ = synthetic_tissue(128, 192, seed=6)
    path = write_generic_tiff(tmp_path / "r.tiff", rgb, mpp=0.5, tile=64, levels=(1, 2))
    with openslide.OpenSlide(str(path)) as osr:
        props = osr.properties
        assert props["openslide.vendor"] == "generic-tiff"
        assert float(props["openslide.mpp-x"]) == 0.5 and float(props["openslide.mpp-y"]) == 0.5
        assert props["tiff.ResolutionUnit"] == "centimeter"
        assert osr.level_downsamples == (1.0, 2.0)
