"""The viewer's confidence layer: uncertainty tiles, the confidence under the cursor, and the
page's toggle, for a result with the uncertainty and one without."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import zarr
from PIL import Image

from wsiseg.cards import ClassInfo
from wsiseg.result.pyramid import uncertainty_level_path
from wsiseg.result.store import open_result
from wsiseg.testing.result import write_result
from wsiseg.view.server import OVERLAP, TILE_SIZE, UNCERTAINTY_COLOUR


def _uncertainty(view_result, level: int = 0) -> np.ndarray:
    group = zarr.open_group(str(view_result), mode="r")
    return np.asarray(group[uncertainty_level_path(level)][:])


def _expected_tile(u: np.ndarray, info, level_k: int, x: int, y: int, w: int, h: int,
                   down: float) -> np.ndarray:
    """The ramp of ``u`` (map level ``level_k``) over a Deep Zoom tile's pixels, by hand."""
    (sx, sy), (ox, oy) = info.scale_to_level0, info.offset_level0
    mx = np.floor(((np.arange(x, x + w) + 0.5) * down - ox) / (sx * 2 ** level_k)).astype(int)
    my = np.floor(((np.arange(y, y + h) + 0.5) * down - oy) / (sy * 2 ** level_k)).astype(int)
    expected = np.zeros((h, w, 4), dtype=np.uint8)
    for j, row in enumerate(my):
        for i, col in enumerate(mx):
            if 0 <= row < u.shape[0] and 0 <= col < u.shape[1]:
                expected[j, i] = (*UNCERTAINTY_COLOUR, u[row, col])
    return expected


def _tile(http_get, url: str, level: int, col: int, row: int) -> np.ndarray:
    status, kind, body = http_get(url + f"uncertainty_files/{level}/{col}_{row}.png")
    assert (status, kind) == (200, "image/png")
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGBA"))


def test_uncertainty_tiles_are_the_ramp_of_the_array_at_the_matching_level(view_server,
                                                                           view_result, http_get):
    url, viewer = view_server
    _, info = open_result(view_result)
    view = viewer.single
    assert json.loads(http_get(url + "info.json")[2])["uncertainty"] is True
    status, _, body = http_get(url + "uncertainty.dzi")
    assert status == 200 and b'Width="2000" Height="1600"' in body
    top = view.max_level
    u0 = _uncertainty(view_result)
    assert len(np.unique(u0)) > 5, "the test map's uncertainty should vary"
    # Full resolution: a tile over tissue and glass.
    x, y, w, h, down = view._tile_box(top, 1, 1)
    tile = _tile(http_get, url, top, 1, 1)
    np.testing.assert_array_equal(tile, _expected_tile(u0, info, 0, x, y, w, h, down))
    assert len(np.unique(tile[..., 3])) > 5
    # Eight times smaller: pixels of the mean pyramid's level 1 (the map is at 4 px of level 0).
    x, y, w, h, down = view._tile_box(top - 3, 0, 0)
    k = 1
    np.testing.assert_array_equal(_tile(http_get, url, top - 3, 0, 0),
                                  _expected_tile(_uncertainty(view_result, k), info, k, x, y, w,
                                                 h, down))


def test_a_tile_reads_only_its_window_of_one_level(view_server, recorded):
    _, viewer = view_server
    view = viewer.single
    levels = view.uncertainty_levels
    view.uncertainty_levels, reads = recorded(levels)
    try:
        top = view.max_level
        view.uncertainty_rgba(*view._tile_box(top, 2, 1))
        view.uncertainty_rgba(*view._tile_box(top - 5, 0, 0))
    finally:
        view.uncertainty_levels = levels
    (k0, ys0, xs0), (k1, ys1, xs1) = reads
    sx, sy = view.info.scale_to_level0
    # A full-resolution tile is 256 level-0 px: 64 (+1 for the overlap) map pixels a side.
    assert k0 == 0 and xs0.stop - xs0.start <= (TILE_SIZE + 2 * OVERLAP) / sx + 1
    assert ys0.stop - ys0.start <= (TILE_SIZE + 2 * OVERLAP) / sy + 1
    assert xs0.start >= (2 * TILE_SIZE - OVERLAP) / sx - 1
    # 32 times smaller: the whole slide from the pyramid's coarsest level (level 1 of 2, 8
    # level-0 px a pixel), from the pixel under the first tile pixel's centre (16 px) on.
    assert len(levels) == 2 and k1 == 1 and (ys1.start, xs1.start) == (2, 2)


def test_the_confidence_under_the_cursor_is_the_arrays(view_server, view_result, http_get):
    url, _ = view_server
    _, info = open_result(view_result)
    (sx, sy), (ox, oy) = info.scale_to_level0, info.offset_level0
    u0 = _uncertainty(view_result)
    flat = np.argsort(u0, axis=None, kind="stable")
    for i in (flat[0], flat[len(flat) // 2], flat[int(len(flat) * 0.9)], flat[-1]):
        my, mx = np.unravel_index(i, u0.shape)
        x0, y0 = ox + (mx + 0.5) * sx, oy + (my + 0.5) * sy
        status, _, body = http_get(url + f"class?x={x0}&y={y0}")
        answer = json.loads(body)
        assert status == 200 and answer["confidence"] == round(1 - int(u0[my, mx]) / 255, 2)
        assert answer["name"] is not None
    assert json.loads(http_get(url + "class?x=-5&y=10")[2])["confidence"] is None


@pytest.mark.parametrize("path", [
    "uncertainty_files/99/0_0.png", "uncertainty_files/11/8_0.png", "uncertainty_files/0/1_0.png",
    "uncertainty_files/8/0_0.jpeg", "uncertainty_files/-1/0_0.png", "uncertainty.dzi/",
])
def test_uncertainty_tiles_out_of_range_are_not_found(view_server, path, http_get):
    url, _ = view_server
    assert http_get(url + path)[0] == 404


@pytest.fixture(scope="module")
def plain_server(svs_x40, tmp_path_factory, serving):
    """A server of a result of the x40 slide that holds no uncertainty (written without it)."""
    from wsiseg.view import server_url

    labels = np.zeros((400, 500), dtype=np.uint8)
    labels[100:300, 100:400] = 1
    path = write_result(tmp_path_factory.mktemp("plain") / "plain.wsiseg.zarr", labels,
                        [ClassInfo(0, "background", (0, 0, 0)),
                         ClassInfo(1, "gland", (0, 160, 0))],
                        scale=(4.0, 4.0), dimensions=(2000, 1600))
    group = zarr.open_group(str(path), mode="r+")
    attrs = dict(group.attrs["wsiseg"])
    attrs["slide"] = {**attrs["slide"], "path": str(svs_x40.path)}
    group.attrs["wsiseg"] = attrs
    with serving(path) as (server, viewer):
        yield server_url(server), viewer


def test_a_result_without_uncertainty_has_no_layer(plain_server, http_get):
    url, viewer = plain_server
    assert viewer.single.uncertainty_levels is None
    assert json.loads(http_get(url + "info.json")[2])["uncertainty"] is False
    assert http_get(url + "uncertainty.dzi")[0] == 404
    top = viewer.single.max_level
    assert http_get(url + f"map_files/{top}/1_1.png")[0] == 200
    assert http_get(url + f"uncertainty_files/{top}/1_1.png")[0] == 404
    assert json.loads(http_get(url + "class?x=800&y=800")[2]) == {
        "index": 1, "name": "gland", "confidence": None, "artefact": None}


# -- in the browser ------------------------------------------------------------------------

WINDOW = (700, 480)




def _magenta(picture: np.ndarray) -> np.ndarray:
    """How much redder-and-bluer than green each pixel is."""
    return (picture[..., 0] + picture[..., 2]) / 2 - picture[..., 1]


@pytest.mark.slow
def test_the_toggle_shows_and_hides_the_uncertainty_layer(browser, view_server, plain_server, page):
    from selenium.webdriver.support.ui import WebDriverWait

    url, viewer = view_server
    browser.get(url)
    WebDriverWait(browser, 15).until(
        lambda d: page.loaded(d, 2) and d.find_element("id", "uncertainty").is_displayed())
    assert not browser.find_element("id", "uncertainty").is_selected()  # off at first
    assert "uncertainty: 0 ... 1" in browser.find_element("id", "panel").text
    off = page.canvas(browser)
    browser.find_element("id", "uncertainty").click()
    WebDriverWait(browser, 15).until(lambda d: page.loaded(d, 3) and d.execute_script(
        "return window.wsisegUncertainty().getOpacity() > 0")
        and (_magenta(page.canvas(d)) - _magenta(off) > 20).mean() > 0.02)
    on = page.canvas(browser)
    assert browser.find_element("id", "overlay").is_selected()  # the map's toggle as it was
    browser.find_element("id", "uncertainty").click()
    WebDriverWait(browser, 10).until(lambda d: d.execute_script(
        "return window.wsisegUncertainty().getOpacity() === 0") and page.loaded(d, 3)
        and (_magenta(page.canvas(d)) - _magenta(off) > 20).mean() < 0.002)
    hidden = page.canvas(browser)
    changed = np.abs(on - off).sum(axis=2) > 30
    assert changed.mean() > 0.02
    assert _magenta(on)[changed].mean() > _magenta(hidden)[changed].mean() + 20

    # The status line: the class and its confidence under the cursor.
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = browser.find_element("css selector", "#viewer .openseadragon-canvas")
    ActionChains(browser).move_to_element(canvas).move_by_offset(5, 3).perform()
    WebDriverWait(browser, 5).until(lambda d: "level 0 px" in d.find_element("id", "status").text)
    text = browser.find_element("id", "status").text
    x0, y0 = (int(v) for v in text.split("level 0 px ")[1].split(", "))
    view = viewer.single
    name = {c.index: c.name for c in view.info.classes}[view.class_at(x0, y0)]
    assert text.splitlines()[0] == f"{name}, confidence {view.confidence_at(x0, y0):.2f}"

    url, _ = plain_server
    browser.get(url)
    WebDriverWait(browser, 15).until(lambda d: page.loaded(d, 2))
    assert not browser.find_element("id", "uncertainty").is_displayed()
    assert not browser.find_element("id", "uncertainty-legend").is_displayed()
    ActionChains(browser).move_to_element(
        browser.find_element("css selector", "#viewer .openseadragon-canvas")).perform()
    WebDriverWait(browser, 5).until(lambda d: "level 0 px" in d.find_element("id", "status").text)
    assert "confidence" not in browser.find_element("id", "status").text
