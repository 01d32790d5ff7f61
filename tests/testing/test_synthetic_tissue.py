"""wsiseg.testing.tissue: synthetic tissue looks like H&E on glass; area averaging is exact."""

from __future__ import annotations

import numpy as np
import pytest

from wsiseg.testing import area_downsample, synthetic_tissue


def saturation(rgb: np.ndarray) -> np.ndarray:
    mx = rgb.max(axis=-1).astype(np.float32)
    mn = rgb.min(axis=-1).astype(np.float32)
    return (mx - mn) / np.maximum(mx, 1)


# -- area averaging -----------------------------------------------------------------------------
def test_area_downsample_averages_blocks_and_partial_edge_blocks():
    image = np.zeros((5, 6, 3), dtype=np.uint8)
    image[:4, :4] = 10
    image[0, 0] = 11  # block mean 10.0625 -> 10
    image[:4, 4:] = np.array([1, 2, 1, 2], dtype=np.uint8)[:, None, None]  # mean 1.5 of the 8 pixels there: rounds half up to 2
    image[4, :4] = 200
    image[4, 4:] = 7
    out = area_downsample(image, 4)
    assert out.shape == (2, 2, 3)
    assert out[..., 0].tolist() == [[10, 2], [200, 7]]
    assert np.array_equal(area_downsample(image, 1), image)
    with pytest.raises(ValueError, match="positive integer"):
        area_downsample(image, 0)


# -- synthetic tissue ---------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.2, 0.4, 0.6])
def test_synthetic_tissue_covers_about_the_requested_fraction(fraction):
    _, tissue = synthetic_tissue(800, 1000, seed=5, tissue_fraction=fraction)
    assert tissue.dtype == bool and tissue.shape == (800, 1000)
    assert abs(tissue.mean() - fraction) < 0.05


def test_synthetic_tissue_looks_like_h_and_e_on_glass():
    rgb, tissue = synthetic_tissue(600, 800, seed=2)
    assert rgb.dtype == np.uint8 and rgb.shape == (600, 800, 3)
    sat = saturation(rgb)
    glass = rgb[~tissue].astype(np.float32)
    assert abs(glass.mean() - 240) < 1 and glass.std() < 3 and sat[~tissue].max() < 0.05
    # Every tissue pixel is stained (a saturation-based tissue detector sees all of it) ...
    assert sat[tissue].min() > 0.15
    # ... pink stroma (red above blue) with purple nuclei (blue above red).
    r, b = rgb[..., 0].astype(int), rgb[..., 2].astype(int)
    nuclei = (b > r)[tissue].mean()
    assert 0.05 < nuclei < 0.3
    assert (r > b)[tissue].mean() > 0.6


def test_synthetic_tissue_is_deterministic_given_the_seed():
    a = synthetic_tissue(300, 400, seed=9)
    b = synthetic_tissue(300, 400, seed=9)
    c = synthetic_tissue(300, 400, seed=10)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_synthetic_tissue_extremes():
    rgb, tissue = synthetic_tissue(100, 120, seed=0, tissue_fraction=0.0)
    assert not tissue.any() and saturation(rgb).max() < 0.05
    _, tissue = synthetic_tissue(100, 120, seed=0, tissue_fraction=1.0)
    assert tissue.all()


# -- the session's slides (tests/conftest.py) ---------------------------------------------------
@pytest.mark.parametrize("name", ["svs_x40", "svs_x20", "tiff_no_mpp"])
def test_fixture_tissue_mask_matches_its_pixels(request, name):
    slide = request.getfixturevalue(name)
    sat = saturation(slide.rgb_level0)
    # JPEG blurs colour across the tissue edge: look one block away from it.
    from scipy import ndimage

    inner = ndimage.binary_erosion(slide.tissue, iterations=8)
    outer = ~ndimage.binary_dilation(slide.tissue, iterations=8)
    assert (sat[inner] > 0.15).mean() > 0.999
    assert (sat[outer] < 0.05).mean() > 0.999
