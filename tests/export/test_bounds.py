"""Exports of a slide with a bounds offset land on the right slide pixels.

The slide is a Leica SCN whose scanned region starts at level-0 pixel (1200, 600) of a larger
scan; the model is a per-pixel function, so the class every level-0 pixel must get is known
from the image alone, independently of the pipeline.
"""

from __future__ import annotations

import numpy as np
import openslide
import pytest
import torch

from wsiseg.export import ExportOptions, export_result
from wsiseg.inference.pipeline import PredictConfig, predict_slide
from wsiseg.result.store import open_result
from wsiseg.slide.geometry import overview_geometry
from wsiseg.slide.reader import open_slide
from wsiseg.slide.region import read_grid
from wsiseg.testing import area_downsample, synthetic_tissue, write_scn

OFFSET = (1200, 600)  # level-0 pixels
MPP = 0.5  # level 0; the analysis resolution is 1.0, so one map pixel is 2 x 2 slide pixels


@pytest.fixture(scope="module")
def offset_slide(pixel_model, tmp_path_factory):
    """(slide path, result path, expected map, where the expected map is decided)."""
    model_path, module = pixel_model
    rgb, _ = synthetic_tissue(600, 800, seed=9, tissue_fraction=0.5)
    folder = tmp_path_factory.mktemp("offset")
    slide = write_scn(folder / "offset.scn", rgb, mpp=MPP, offset=OFFSET)
    result = predict_slide(slide, PredictConfig(model=str(model_path), tissue_threshold=0.0,
                                                out=str(folder / "offset.wsiseg.zarr"),
                                                progress=False)).path
    image = torch.from_numpy(area_downsample(rgb, 2)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        probs = torch.softmax(module(image), dim=1)[0].numpy()
    top2 = np.sort(probs, axis=0)[-2:]
    # Readers may round a 2 x 2 average differently (by one grey level): leave near-ties out.
    return slide, result, probs.argmax(axis=0), top2[1] - top2[0] > 0.1


@pytest.mark.slow
def test_the_map_starts_at_the_bounds_offset(offset_slide):
    _, result, expected, decided = offset_slide
    labels, info = open_result(result)
    attrs = info.to_attrs()
    assert attrs["offset_level0"] == list(OFFSET) and attrs["scale_to_level0"] == [2.0, 2.0]
    assert labels.shape == expected.shape
    assert decided.mean() > 0.8
    assert np.array_equal(labels[:][decided], expected[decided])


@pytest.mark.parametrize("origin", ["level0", "bounds"])
def test_tiff_pixels_land_on_the_slide_pixels(offset_slide, origin, tmp_path):
    slide, result, expected, decided = offset_slide
    (tif,) = export_result(result, ["tiff"], tmp_path, ExportOptions(origin=origin))
    with openslide.OpenSlide(str(tif)) as osr:
        page = np.asarray(osr.read_region((0, 0), 0, osr.dimensions))[..., 0]
    with openslide.OpenSlide(str(slide)) as osr:
        w0, h0 = osr.dimensions
    y0, x0 = (OFFSET[1] // 2, OFFSET[0] // 2) if origin == "level0" else (0, 0)
    if origin == "level0":
        assert page.shape == (h0 // 2, w0 // 2)  # the slide's frame at the map's resolution
    h, w = expected.shape
    inside = page[y0:y0 + h, x0:x0 + w]
    assert np.array_equal(inside[decided], expected[decided])
    outside = page.copy()
    outside[y0:y0 + h, x0:x0 + w] = 0
    assert not outside.any()


def test_png_overlay_is_painted_inside_the_bounds_only(offset_slide, tmp_path):
    from PIL import Image

    slide, result, _, _ = offset_slide
    export_result(result, ["png"], tmp_path, ExportOptions(png_size=512))
    with open_slide(slide) as s:
        geometry = overview_geometry(s.level_downsamples, s.dimensions, 512)
        thumb = read_grid(s, geometry).astype(int)
    overlay = np.asarray(Image.open(tmp_path / "offset.overlay.png").convert("RGB")).astype(int)
    th, tw = thumb.shape[:2]
    assert max(th, tw) == 512
    painted = (np.abs(overlay[:th] - thumb).sum(axis=2) > 6)
    ys, xs = np.nonzero(painted)
    # Thumbnail pixel centres inside the scanned region: [1200, 2000) x [600, 1200) level-0.
    sx, sy = geometry.scale
    assert ((xs + 0.5) * sx >= OFFSET[0]).all() and ((xs + 0.5) * sx < OFFSET[0] + 800).all()
    assert ((ys + 0.5) * sy >= OFFSET[1]).all() and ((ys + 0.5) * sy < OFFSET[1] + 600).all()
    assert painted.sum() > 0.3 * (800 / sx) * (600 / sy)


@pytest.mark.slow
@pytest.mark.parametrize("origin", ["level0", "bounds"])
def test_geojson_outlines_cover_the_slide_pixels_of_their_class(offset_slide, origin, tmp_path):
    import json

    import shapely

    _, result, expected, decided = offset_slide
    _, info = open_result(result)
    index_of = {c.name: c.index for c in info.classes}
    (path,) = export_result(result, ["geojson"], tmp_path, ExportOptions(origin=origin))
    features = json.loads(path.read_text())["features"]
    # The centre of every map pixel, in level-0 pixels of the chosen frame.
    x0, y0 = OFFSET if origin == "level0" else (0, 0)
    rows, cols = np.mgrid[: expected.shape[0], : expected.shape[1]] + 0.5
    xs, ys = x0 + 2 * cols, y0 + 2 * rows
    painted = np.zeros(expected.shape, dtype=np.int16)
    for feature in features:
        geometry = shapely.geometry.shape(feature["geometry"])
        assert geometry.is_valid
        inside = shapely.contains_xy(geometry, xs, ys)
        assert not (painted[inside] > 0).any(), "features overlap"
        painted[inside] = index_of[feature["properties"]["classification"]["name"]]
    assert np.array_equal(painted[decided], expected[decided])
