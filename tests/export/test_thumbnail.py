"""The png export: a thumbnail of the stated size, then a title, a legend with swatches scaled
to the image, a scale bar of a round length and the model's intended use; every class visible."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import zarr
from PIL import Image

from wsiseg.export import ExportOptions, export_result
from wsiseg.models.card import ClassInfo
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
    (2048, (1008, 800)),  # larger than the slide: the slide's own size, never enlarged
])
def test_thumbnail_part_has_the_stated_size_and_a_caption_below(tissue_result, shipped_card,
                                                                size, expected, tmp_path):
    result, labels = tissue_result
    png, info = _export(result, size, tmp_path)
    tw, th = expected
    assert png.shape[1] == tw and png.shape[0] > th
    assert info["wsiseg thumbnail"].startswith(f"{tw} x {th} px")
    # The thumbnail part is the slide: unpainted where the map is background.
    with open_slide(_slide(result)) as slide:
        thumb = read_grid(slide, overview_geometry(slide.level_downsamples, slide.dimensions,
                                                   1008)).astype(int)
    if (tw, th) == (1008, 800):
        background = np.kron(labels == 0, np.ones((2, 2), dtype=bool))
        assert np.abs(png[:th][background] - thumb[background]).max() <= 1
    caption = png[th:]
    unit = max(12, round(max(tw, th) / 64))
    # Legend: a swatch of each class but background, in its colour, scaled with the image.
    for c in shipped_card["classes"][1:]:
        swatch = (caption == c["color"]).all(axis=-1)
        ys, xs = np.nonzero(swatch)
        assert len(ys) >= (unit - 2) ** 2, c["name"]
        assert ys.max() - ys.min() + 1 >= unit - 2 and xs.max() - xs.min() + 1 >= unit - 2
    # Title, legend names, scale bar label and intended use: dark text in the caption.
    assert ((caption < 100).all(axis=-1).sum(axis=1) > 0).sum() >= 4 * (unit // 2)
    assert info["Title"] == f"x20.svs · model {shipped_card['name']}"
    assert "research use only" in info["Description"]


def _slide(result):
    return zarr.open_group(str(result), mode="r").attrs["wsiseg"]["slide"]["path"]


@pytest.mark.parametrize("size", [250, 1008])
def test_scale_bar_is_a_round_length_drawn_to_the_thumbnail_scale(tissue_result, size, tmp_path):
    result, _ = tissue_result
    png, info = _export(result, size, tmp_path)
    tw = png.shape[1]
    th = round(800 * tw / 1008)
    um_per_px = 1008 / tw * SLIDE_MPP
    um, px = re.fullmatch(r"([\d.]+) um = (\d+) px", info["wsiseg scale bar"]).groups()
    um = float(um)
    mantissa = um / 10 ** np.floor(np.log10(um))
    assert round(mantissa, 6) in (1, 2, 5)
    run = _longest_black_run(png[th:])
    assert run == int(px) and abs(run - um / um_per_px) <= 1
    assert tw / 12.5 <= run <= tw / 5 + 1


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
