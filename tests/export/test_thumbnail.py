"""The png export: a thumbnail of the stated size, then a title, a legend with swatches scaled
to the image, a scale bar of a round length and the model's intended use; every class visible."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import zarr
from PIL import Image
from scipy import ndimage

from wsiseg.cards import ClassInfo
from wsiseg.export import ExportOptions, export_result
from wsiseg.models.loading import CARDS_DIR, DEFAULT_MODEL
from wsiseg.slide.geometry import overview_geometry
from wsiseg.slide.reader import open_slide
from wsiseg.slide.region import read_grid
from wsiseg.testing.result import write_result

SLIDE_MPP = 0.5  # svs_x20, 1008 x 800


@pytest.fixture(scope="module")
def shipped_card():
    return json.loads((CARDS_DIR / f"{DEFAULT_MODEL}.json").read_text())


@pytest.fixture(scope="module")
def tissue_result(svs_x20, shipped_card, tmp_path_factory):
    """A result of svs_x20 by the shipped model's classes: the tissue is 'other tissue', with a
    block of each other class; map pixels are 2 x 2 slide pixels."""
    labels = svs_x20.tissue[::2, ::2].astype(np.uint8)
    labels[20:60, 20:80] = 2
    labels[100:140, 20:80] = 3
    classes = [ClassInfo(c["index"], c["name"], tuple(c["color"])) for c in shipped_card["classes"]]
    path = write_result(tmp_path_factory.mktemp("png") / "x20.wsiseg.zarr", labels, classes,
                        scale=(2, 2), slide_mpp=(SLIDE_MPP, SLIDE_MPP), dimensions=(1008, 800))
    group = zarr.open_group(str(path), mode="r+")
    attrs = group.attrs["wsiseg"]
    attrs["slide"]["path"] = str(svs_x20.path)
    attrs["model"].update(name=shipped_card["name"], card=shipped_card)
    group.attrs["wsiseg"] = attrs
    return path, labels


def _export(result, size, out):
    (path,) = export_result(result, ["png"], out, ExportOptions(png_size=size))
    image = Image.open(path)
    return np.asarray(image.convert("RGB")).astype(int), image.info


def _caption_top(png: np.ndarray) -> int:
    """The first row that is white all across: the caption's (the slide's glass is not white)."""
    white = (png == 255).all(axis=-1).all(axis=-1)
    assert white.any(), "no caption below the thumbnail"
    return int(np.argmax(white))


def _block_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), ends exclusive, of the largest connected part of ``mask``."""
    parts, n = ndimage.label(mask)
    assert n, "no painted block found"
    largest = parts == 1 + int(np.argmax(np.bincount(parts.ravel())[1:]))
    ys, xs = np.nonzero(largest)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def _dark_bands(rows: np.ndarray) -> list[tuple[int, int]]:
    """(first row, height) of each run of rows holding dark (text or bar) pixels."""
    dark = (rows < 100).all(axis=-1).any(axis=1)
    edges = np.diff(np.concatenate([[0], dark.astype(int), [0]]))
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    return [(int(a), int(b - a)) for a, b in zip(starts, ends)]


def _longest_black_run(rows: np.ndarray) -> int:
    black = (rows == 0).all(axis=-1)
    best = 0
    for row in black:
        edges = np.diff(np.concatenate([[0], row.astype(int), [0]]))
        starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
        if len(starts):
            best = max(best, int((ends - starts).max()))
    return best


@pytest.mark.parametrize("size, expected", [
    (250, (250, 198)),    # near a pyramid level (x4): read there and resized to the size
    (504, (504, 400)),
    # Larger than the slide: the slide's own size, never enlarged.
    pytest.param(2048, (1008, 800), marks=pytest.mark.slow),
])
def test_thumbnail_part_has_the_stated_size_and_a_caption_below(tissue_result, shipped_card,
                                                                size, expected, tmp_path):
    result, labels = tissue_result
    png, info = _export(result, size, tmp_path)
    tw, th = expected
    assert png.shape[1] == tw and png.shape[0] > th
    assert info["wsiseg thumbnail"].startswith(f"{tw} x {th} px")
    assert _caption_top(png) == th
    # The map lands where it is, at the thumbnail's scale on both axes: its blocks of 'normal'
    # (green) and 'tumour' (purple), level 0 x 40..160 and y 40..120 / 200..280 (map pixels
    # 20..80 x 20..60 / 100..140), found by their tint.
    r, g, b = (png[:th, :, i] for i in range(3))
    s = tw / 1008
    for tinted, (top, bottom) in [((g > r + 40) & (g > b + 40), (40, 120)),
                                  ((r > g + 40) & (b > g + 40), (200, 280))]:
        found = _block_box(tinted)
        assert np.allclose(found, (top * s, bottom * s, 40 * s, 160 * s), atol=1), found
    # The thumbnail part is the slide: unpainted where the map is background.
    with open_slide(_slide(result)) as slide:
        thumb = read_grid(slide, overview_geometry(slide.level_downsamples, slide.dimensions,
                                                   1008)).astype(int)
    if (tw, th) == (1008, 800):
        background = np.kron(labels == 0, np.ones((2, 2), dtype=bool))
        assert np.abs(png[:th][background] - thumb[background]).max() <= 1
    caption = png[th:]
    # Nothing of the map spills into the caption: only greys (text, on white) and the swatches'
    # own colours are there.
    colours = [c["color"] for c in shipped_card["classes"][1:]]
    in_swatch = np.zeros(png.shape[:2], dtype=bool)
    for colour in colours:
        in_swatch |= (png == colour).all(axis=-1)
    assert not in_swatch[:th].any()  # and no swatch over the map
    grey = (caption[..., 0] == caption[..., 1]) & (caption[..., 1] == caption[..., 2])
    assert (grey | in_swatch[th:]).all()
    # Legend: a swatch of each class but background, a solid square in its colour, legible and
    # scaled with the image, its name in dark text beside it.
    legible = max(10, max(tw, th) / 72)  # px: text and swatches grow with the image
    for c in shipped_card["classes"][1:]:
        swatch = (caption == c["color"]).all(axis=-1)
        ys, xs = np.nonzero(swatch)
        top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        side = bottom - top
        assert abs((right - left) - side) <= 1 and len(ys) == side * (right - left), c["name"]
        assert side >= legible, (c["name"], side)
        beside = caption[top:bottom, right + 2:right + 2 + 3 * side]
        assert (beside < 100).all(axis=-1).sum() >= side, c["name"]
    # Title, legend, scale bar label and bar, intended use: bands of dark rows in the caption,
    # the first (the title) taller than the least legible text.
    bands = _dark_bands(caption)
    assert len(bands) >= 4, bands
    assert bands[0][1] >= legible, bands
    assert info["Title"] == f"x20.svs · model {shipped_card['name']}"
    assert "research use only" in info["Description"]


def _slide(result):
    return zarr.open_group(str(result), mode="r").attrs["wsiseg"]["slide"]["path"]


@pytest.mark.parametrize("size", [250, 1008])
def test_scale_bar_is_a_round_length_drawn_to_the_thumbnail_scale(tissue_result, size, tmp_path):
    result, _ = tissue_result
    png, info = _export(result, size, tmp_path)
    tw = png.shape[1]
    th = _caption_top(png)
    assert abs(th / tw - 800 / 1008) <= 1 / tw  # the slide's aspect, to the pixel
    um_per_px = 1008 / tw * SLIDE_MPP
    um, px = re.fullmatch(r"([\d.]+) um = (\d+) px", info["wsiseg scale bar"]).groups()
    um = float(um)
    mantissa = um / 10 ** np.floor(np.log10(um))
    assert round(mantissa, 6) in (1, 2, 5)
    run = _longest_black_run(png[th:])
    assert run == int(px) and abs(run - um / um_per_px) <= 1
    assert tw / 12.5 <= run <= tw / 5 + 1


@pytest.mark.slow
def test_other_tissue_is_painted_visibly(tissue_result, shipped_card, tmp_path):
    result, labels = tissue_result
    png, _ = _export(result, 1008, tmp_path)
    with open_slide(_slide(result)) as slide:
        thumb = read_grid(slide, overview_geometry(slide.level_downsamples, slide.dimensions,
                                                   1008)).astype(int)
    other = np.kron(labels == 1, np.ones((2, 2), dtype=bool))
    assert other.mean() > 0.2
    change = np.abs(png[:800][other] - thumb[other]).sum(axis=1).mean()
    # The colour the card had before, light pink, all but vanished on H&E: the test tells.
    faint = (0.45 * np.abs(np.array([240, 200, 200]) - thumb[other])).sum(axis=1).mean()
    assert faint < 60 <= change
