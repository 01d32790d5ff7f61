"""Colour sanity of the low-resolution image tissue is found on."""

from __future__ import annotations

import numpy as np
import pytest

from wsiseg.slide.geometry import plan_geometry
from wsiseg.slide.reader import open_slide
from wsiseg.slide.tissue import (
    MAX_GLASS_IMBALANCE,
    colour_warnings,
    mask_factor,
    own_pixels,
    read_tissue,
    tissue_mask,
)
from wsiseg.testing import synthetic_tissue, ycbcr_read_as_rgb


@pytest.mark.parametrize("seed,fraction", [(1, 0.2), (2, 0.4), (3, 0.7)])
def test_a_normal_synthetic_slide_does_not_warn(seed, fraction):
    rgb, _ = synthetic_tissue(160, 240, seed=seed, tissue_fraction=fraction)
    assert colour_warnings(rgb, tissue_mask(rgb)) == []


@pytest.mark.parametrize("seed", [1, 2])
def test_ycbcr_read_as_rgb_warns_of_the_glass_and_the_tissue_share(seed):
    rgb = ycbcr_read_as_rgb(synthetic_tissue(160, 240, seed=seed)[0])
    mask = tissue_mask(rgb)
    assert mask.mean() > 0.95  # the salmon glass is "tissue": what this check is for
    glass, share = colour_warnings(rgb, mask)
    assert glass.startswith("glass is not white (mean RGB ")
    assert "brightest 2%" in glass and "YCbCr read as RGB" in glass and "overlay" in glass
    assert share.startswith("tissue covers ") and "% of the slide" in share


def test_tinted_glass_warns_even_with_a_good_mask():
    rgb, truth = synthetic_tissue(160, 240, seed=1)
    tinted = rgb.copy()
    tinted[~truth] = (240, 200, 160)  # imbalance 0.33
    (warning,) = colour_warnings(tinted, truth)
    assert "mean RGB 240, 200, 160 of the glass)" in warning


def test_slightly_warm_white_balance_does_not_warn():
    rgb, truth = synthetic_tissue(160, 240, seed=1)
    warm = rgb.copy()
    warm[~truth] = (240, 236, 222)  # imbalance 0.075: a scanner's white balance
    assert (240 - 222) / 240 < MAX_GLASS_IMBALANCE
    assert colour_warnings(warm, truth) == []


def test_dark_glass_warns():
    rgb, truth = synthetic_tissue(160, 240, seed=1)
    dark = rgb.copy()
    dark[~truth] = 40
    (warning,) = colour_warnings(dark, truth)
    assert warning.startswith("glass is not white (mean RGB 40, 40, 40")


def test_all_tissue_warns_once():
    rgb, _ = synthetic_tissue(160, 240, seed=1)
    mask = np.ones(rgb.shape[:2], dtype=bool)
    (warning,) = colour_warnings(rgb, mask)  # the glass colour is fine: one warning
    assert warning.startswith("tissue covers 100.0% of the slide")


def test_empty_image_has_nothing_to_say():
    assert colour_warnings(np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), bool)) == []


@pytest.mark.parametrize("name,slide_mpp", [("CMU-1-Small-Region.svs", None),
                                            ("TCGA-CR-7395-01A-01-TS1.svs", 0.25)])
def test_real_slides_do_not_warn(shared_data, name, slide_mpp):
    with open_slide(shared_data / "slides" / name, slide_mpp=slide_mpp) as slide:
        analysis = plan_geometry(slide.level_downsamples, slide.bounds, slide.require_mpp(),
                                 1.0, source=name)
        mask, _, rgb = read_tissue(slide, analysis, mask_factor(400, 100, 1.0))
    assert 0.05 < mask.mean() < 0.9
    assert colour_warnings(rgb, mask) == []


# --- the slide's own pixels: padding past its edge is no glass ------------------------------

def _all_tissue_crop(tmp_path, colours=lambda rgb: rgb):
    """A small SVS that is tissue to its edges (a crop inside the tissue), 10 um/px, whose
    size is no multiple of the tissue mask's factor; its mask, own size, image."""
    from wsiseg.testing import write_svs

    rgb, _ = synthetic_tissue(97, 131, seed=4, tissue_fraction=1.0)
    path = write_svs(tmp_path / "crop.svs", colours(rgb), mpp=1.0, downsamples=(1,),
                     tile=64, compression="none")
    with open_slide(path) as slide:
        analysis = plan_geometry(slide.level_downsamples, slide.bounds, slide.require_mpp(),
                                 1.0, source=path.name)
        factor = 8  # 131 x 97 px is 16.4 x 12.1 mask pixels: a padded last column and row
        mask, geometry, image = read_tissue(slide, analysis, factor)
        own = own_pixels(geometry, slide.bounds)
    return mask, own, image


def test_own_pixels_leave_out_the_rounded_up_column_and_row(tmp_path):
    mask, own, image = _all_tissue_crop(tmp_path)
    assert image.shape[:2] == (13, 17) and own == (16, 12)
    assert mask[:12, :16].mean() > 0.95  # what the slide holds is tissue


def test_an_all_tissue_crop_warns_of_the_tissue_share_on_its_own_pixels(tmp_path):
    mask, own, image = _all_tissue_crop(tmp_path)
    assert not any("tissue covers" in w for w in colour_warnings(image, mask))  # padding hid it
    warnings = colour_warnings(image, mask, own)
    assert any(w.startswith("tissue covers ") for w in warnings)


def test_a_ycbcr_crop_warns_of_its_glass_colour_on_its_own_pixels(tmp_path):
    mask, own, image = _all_tissue_crop(tmp_path, ycbcr_read_as_rgb)
    warnings = colour_warnings(image, mask, own)
    assert any(w.startswith("glass is not white") for w in warnings)
    assert any(w.startswith("tissue covers ") for w in warnings)
