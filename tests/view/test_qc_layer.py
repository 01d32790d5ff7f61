"""The viewer's artefact layer: qc tiles, the artefact under the cursor, and the page's toggle,
for results with painted artefact labels and one without."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import zarr
from PIL import Image

from wsiseg.cards import ClassInfo
from wsiseg.result.pyramid import QC_LABEL, label_level_path, mode_downsample
from wsiseg.result.store import open_result
from wsiseg.slide.artefacts import QC_BLUR, QC_COLOURS, QC_FOLD, QC_NAMES, QC_OTHER, QC_PEN
from wsiseg.testing.result import write_result
from wsiseg.view.server import QC_FILL_ALPHA, QC_HATCH_PERIOD, QC_HATCH_WIDTH

#: Where the artefacts are painted, in pixels of the labels' level 0 (rows, columns): on the
#: x40 slide's result, 40 level-0 px a pixel, so pen covers level-0 x 200..1000, y 200..800.
PAINTED = {QC_PEN: (slice(5, 20), slice(5, 25)), QC_BLUR: (slice(25, 35), slice(30, 45)),
           QC_FOLD: (slice(2, 5), slice(40, 48)), QC_OTHER: (slice(37, 38), slice(3, 4))}


def _paint(shape: tuple[int, int]) -> np.ndarray:
    qc = np.zeros(shape, dtype=np.uint8)
    for value, (rows, cols) in PAINTED.items():
        qc[rows, cols] = value
    return qc


def _with_slide(path, slide_path) -> None:
    """Point the result at ``path`` to the slide at ``slide_path``."""
    group = zarr.open_group(str(path), mode="r+")
    attrs = dict(group.attrs["wsiseg"])
    attrs["slide"] = {**attrs["slide"], "path": str(slide_path)}
    group.attrs["wsiseg"] = attrs


@pytest.fixture(scope="module")
def qc_result(view_result, tmp_path_factory):
    """A copy of the x40 result with artefacts painted into its labels/qc and its pyramid."""
    path = tmp_path_factory.mktemp("qc") / "painted.wsiseg.zarr"
    shutil.copytree(view_result, path)
    group = zarr.open_group(str(path), mode="r+")
    qc = _paint(group[label_level_path(QC_LABEL, 0)].shape)
    group[label_level_path(QC_LABEL, 0)][...] = qc
    group[label_level_path(QC_LABEL, 1)][...] = mode_downsample(qc, 5)
    return path


@pytest.fixture(scope="module")
def qc_server(qc_result, serving):
    from wsiseg.view import server_url

    with serving(qc_result) as (server, viewer):
        yield server_url(server), viewer


def _levels(path) -> list[np.ndarray]:
    group = zarr.open_group(str(path), mode="r")
    return [np.asarray(group[label_level_path(QC_LABEL, k)][:]) for k in range(2)]


def _expected_tile(qc: np.ndarray, info, k: int, x: int, y: int, w: int, h: int,
                   down: float) -> np.ndarray:
    """The artefacts of ``qc`` (level ``k`` of the labels) over a Deep Zoom tile's pixels, by
    hand: each artefact's colour, faint, opaque on the hatch lines."""
    (sx, sy), (ox, oy) = info.tissue.scale_to_level0, info.tissue.offset_level0
    mx = np.floor(((np.arange(x, x + w) + 0.5) * down - ox) / (sx * 2 ** k)).astype(int)
    my = np.floor(((np.arange(y, y + h) + 0.5) * down - oy) / (sy * 2 ** k)).astype(int)
    expected = np.zeros((h, w, 4), dtype=np.uint8)
    for j, row in enumerate(my):
        for i, col in enumerate(mx):
            if 0 <= row < qc.shape[0] and 0 <= col < qc.shape[1] and qc[row, col]:
                line = (x + i + y + j) % QC_HATCH_PERIOD < QC_HATCH_WIDTH
                expected[j, i] = (*QC_COLOURS[int(qc[row, col])], 255 if line else QC_FILL_ALPHA)
    return expected


def _tile(http_get, url: str, level: int, col: int, row: int) -> np.ndarray:
    status, kind, body = http_get(url + f"qc_files/{level}/{col}_{row}.png")
    assert (status, kind) == (200, "image/png")
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGBA"))


def test_qc_tiles_are_the_artefacts_of_the_labels_at_the_matching_level(qc_server, qc_result,
                                                                        http_get):
    url, viewer = qc_server
    view = viewer.single
    _, info = open_result(qc_result)
    qc0, qc1 = _levels(qc_result)
    info_json = json.loads(http_get(url + "info.json")[2])
    assert info_json["qc"] is True
    t_mm2 = info.tissue.mpp[0] * info.tissue.mpp[1] / 1e6
    assert [(a["name"], a["color"]) for a in info_json["artefacts"]] == [
        (QC_NAMES[v], list(QC_COLOURS[v])) for v in (QC_PEN, QC_BLUR, QC_FOLD, QC_OTHER)]
    assert [a["area_mm2"] for a in info_json["artefacts"]] == pytest.approx(
        [(qc0 == v).sum() * t_mm2 for v in (QC_PEN, QC_BLUR, QC_FOLD, QC_OTHER)])
    status, _, body = http_get(url + "qc.dzi")
    assert status == 200 and b'Width="2000" Height="1600"' in body
    top = view.max_level
    # Full resolution: a tile over the pen's right edge, 40 level-0 px a label pixel.
    x, y, w, h, down = view._tile_box(top, 3, 2)
    tile = _tile(http_get, url, top, 3, 2)
    np.testing.assert_array_equal(tile, _expected_tile(qc0, info, 0, x, y, w, h, down))
    assert {0, QC_FILL_ALPHA, 255} <= set(np.unique(tile[..., 3]))
    # A tile over the edge of the folds and glass, from a tile with overlap on both sides.
    x, y, w, h, down = view._tile_box(top, 7, 0)
    np.testing.assert_array_equal(_tile(http_get, url, top, 7, 0),
                                  _expected_tile(qc0, info, 0, x, y, w, h, down))
    # 128 times smaller: pixels of the mode pyramid's level 1 (80 level-0 px each).
    x, y, w, h, down = view._tile_box(top - 7, 0, 0)
    tile = _tile(http_get, url, top - 7, 0, 0)
    np.testing.assert_array_equal(tile, _expected_tile(qc1, info, 1, x, y, w, h, down))
    assert (tile[..., 3] > 0).any()


def test_a_qc_tile_reads_only_its_window_of_one_level(qc_server, recorded):
    _, viewer = qc_server
    view = viewer.single
    levels = view.qc_levels
    view.qc_levels, reads = recorded(levels)
    try:
        top = view.max_level
        view.qc_rgba(*view._tile_box(top, 2, 1))
        view.qc_rgba(*view._tile_box(top - 7, 0, 0))
    finally:
        view.qc_levels = levels
    (k0, ys0, xs0), (k1, ys1, xs1) = reads
    # A full-resolution tile is 256 level-0 px: 7 or 8 label pixels a side, from 507 // 40 on.
    assert k0 == 0 and (ys0.start, ys0.stop, xs0.start, xs0.stop) == (6, 13, 12, 20)
    # 128 times smaller: the whole slide from level 1 (80 level-0 px a pixel; the centre of
    # the last tile row, level-0 y 1600, lies past the labels).
    assert k1 == 1 and (ys1.start, xs1.start) == (0, 0) and (ys1.stop, xs1.stop) == (19, 25)


@pytest.mark.parametrize("path", [
    "qc_files/99/0_0.png", "qc_files/11/8_0.png", "qc_files/0/1_0.png", "qc_files/8/0_0.jpeg",
    "qc_files/-1/0_0.png", "qc.dzi/", "qc_files/11/0_7.png",
])
def test_qc_tiles_out_of_range_are_not_found(qc_server, path, http_get):
    url, _ = qc_server
    assert http_get(url + path)[0] == 404


def _artefact(http_get, url: str, x0: float, y0: float) -> str | None:
    status, _, body = http_get(url + f"class?x={x0}&y={y0}")
    assert status == 200
    return json.loads(body)["artefact"]


def test_the_artefact_under_the_cursor_is_the_labels(qc_server, qc_result, http_get):
    url, _ = qc_server
    _, info = open_result(qc_result)
    (sx, sy), (ox, oy) = info.tissue.scale_to_level0, info.tissue.offset_level0
    for value, (rows, cols) in PAINTED.items():
        for qy, qx in ((rows.start, cols.start), (rows.stop - 1, cols.stop - 1)):
            # The label pixel's first and last level-0 pixels, and just outside it.
            assert _artefact(http_get, url, ox + qx * sx, oy + qy * sy) == QC_NAMES[value]
            assert _artefact(http_get, url, ox + (qx + 1) * sx - 0.5,
                             oy + (qy + 1) * sy - 0.5) == QC_NAMES[value]
        assert _artefact(http_get, url, ox + cols.stop * sx + 1, oy + rows.start * sy) is None
    answer = json.loads(http_get(url + "class?x=210&y=210")[2])
    assert answer["artefact"] == "pen" and answer["name"] is not None
    assert answer["confidence"] is not None
    assert _artefact(http_get, url, 1900, 1500) is None  # no artefact there
    assert _artefact(http_get, url, -5, 10) is None  # outside


@pytest.fixture(scope="module")
def offset_server(svs_x40, tmp_path_factory, serving):
    """A result whose map starts at level-0 (30, 50), 4 level-0 px a pixel, with artefact
    labels 3 map pixels a side (12 level-0 px), and one written without artefact labels."""
    from wsiseg.view import server_url

    labels = np.zeros((400, 500), dtype=np.uint8)
    labels[100:300, 100:400] = 1
    classes = [ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "gland", (0, 160, 0))]
    root = tmp_path_factory.mktemp("qc_offset")
    qc = _paint((130, 165))
    painted = write_result(root / "offset.wsiseg.zarr", labels[:388, :493], classes,
                           scale=(4.0, 4.0), offset=(30, 50), dimensions=(2000, 1600), qc=qc,
                           tissue_factor=3)
    plain = write_result(root / "plain.wsiseg.zarr", labels, classes, scale=(4.0, 4.0),
                         dimensions=(2000, 1600))
    for path in (painted, plain):
        _with_slide(path, svs_x40.path)
    with serving(painted) as (s1, v1), serving(plain) as (s2, v2):
        yield (server_url(s1), v1, qc), (server_url(s2), v2)


def test_artefacts_on_a_grid_with_an_offset(offset_server, http_get):
    (url, viewer, qc), _ = offset_server
    view = viewer.single
    assert view.qc_levels is not None and len(view.qc_levels) == 1
    for value, (rows, cols) in PAINTED.items():
        x0, y0 = 30 + cols.start * 12, 50 + rows.start * 12
        assert _artefact(http_get, url, x0, y0) == QC_NAMES[value]
        assert _artefact(http_get, url, x0 - 1, y0) is None
        assert _artefact(http_get, url, x0, y0 - 1) is None
    top = view.max_level
    for level, col, row in ((top, 0, 0), (top, 1, 0), (top - 3, 0, 0)):
        x, y, w, h, down = view._tile_box(level, col, row)
        np.testing.assert_array_equal(_tile(http_get, url, level, col, row),
                                      _expected_tile(qc, view.info, 0, x, y, w, h, down))


def test_a_result_without_artefact_labels_has_no_layer(offset_server, http_get):
    _, (url, viewer) = offset_server
    assert viewer.single.qc_levels is None
    info = json.loads(http_get(url + "info.json")[2])
    assert info["qc"] is False and info["artefacts"] == []
    assert http_get(url + "qc.dzi")[0] == 404
    top = viewer.single.max_level
    assert http_get(url + f"map_files/{top}/1_1.png")[0] == 200
    assert http_get(url + f"qc_files/{top}/1_1.png")[0] == 404
    assert json.loads(http_get(url + "class?x=800&y=800")[2]) == {
        "index": 1, "name": "gland", "confidence": None, "artefact": None}


# -- in the browser ------------------------------------------------------------------------

WINDOW = (700, 480)




def _cyan(picture: np.ndarray) -> np.ndarray:
    """How much greener-and-bluer than red each pixel is (pen's colour is (0, 200, 255))."""
    return (picture[..., 1] + picture[..., 2]) / 2 - picture[..., 0]


def _on_screen(driver, x0: float, y0: float) -> tuple[float, float]:
    """The viewer element's pixel showing level-0 pixel (x0, y0)."""
    return tuple(driver.execute_script(
        "const p = window.wsisegViewer.world.getItemAt(0).imageToViewerElementCoordinates("
        "new OpenSeadragon.Point(arguments[0], arguments[1])); return [p.x, p.y];", x0, y0))


def _status_at(driver, canvas, x: float, y: float, before: str) -> str:
    """The status line once the cursor is over the canvas's pixel (x, y)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    size = canvas.size
    ActionChains(driver).move_to_element_with_offset(
        canvas, int(x - size["width"] / 2), int(y - size["height"] / 2)).perform()
    WebDriverWait(driver, 5).until(lambda d: "level 0 px" in d.find_element("id", "status").text
                                   and d.find_element("id", "status").text != before)
    return str(driver.find_element("id", "status").text)


@pytest.mark.slow
def test_the_toggle_shows_and_hides_the_artefacts_and_the_status_names_them(browser, qc_server,
                                                                             qc_result, page):
    from selenium.webdriver.support.ui import WebDriverWait

    url, viewer = qc_server
    browser.get(url)
    WebDriverWait(browser, 15).until(
        lambda d: page.loaded(d, 2) and d.find_element("id", "qc").is_displayed())
    assert not browser.find_element("id", "qc").is_selected()  # off at first
    legend = browser.find_element("id", "qc-legend").text.splitlines()
    assert [line.split(":")[0] for line in legend] == [
        "pen", "out of focus", "fold or dark", "other artefact"]
    off = page.canvas(browser)
    browser.find_element("id", "qc").click()
    WebDriverWait(browser, 15).until(lambda d: page.loaded(d, 3) and d.execute_script(
        "return window.wsisegQc().getOpacity() > 0")
        and (_cyan(page.canvas(d)) - _cyan(off) > 20).mean() > 0.02)
    on = page.canvas(browser)
    assert browser.find_element("id", "overlay").is_selected()  # the map's toggle as it was
    # The pen turns up where it was painted (level-0 x 200..1000, y 200..800), nowhere else.
    (left, top), (right, bottom) = _on_screen(browser, 200, 200), _on_screen(browser, 1000, 800)
    bluer = _cyan(on) - _cyan(off) > 20
    n_left, n_top, n_right, n_bottom = browser.execute_script(
        "const n = window.wsisegViewer.navigator.element.getBoundingClientRect(),"
        " c = window.wsisegViewer.container.getBoundingClientRect();"
        "return [n.left - c.left, n.top - c.top, n.right - c.left, n.bottom - c.top];")
    bluer[int(n_top):int(n_bottom) + 1, int(n_left):int(n_right) + 1] = False  # the navigator
    ys, xs = np.nonzero(bluer)
    inside = (xs >= left - 1) & (xs <= right + 1) & (ys >= top - 1) & (ys <= bottom + 1)
    assert inside.mean() > 0.99
    assert bluer[int(top) + 2:int(bottom) - 2, int(left) + 2:int(right) - 2].mean() > 0.2
    browser.find_element("id", "qc").click()
    WebDriverWait(browser, 10).until(lambda d: d.execute_script(
        "return window.wsisegQc().getOpacity() === 0") and page.loaded(d, 3)
        and (_cyan(page.canvas(d)) - _cyan(off) > 20).mean() < 0.002)

    # The status line: the class, its confidence and the artefact under the cursor.
    canvas = browser.find_element("css selector", "#viewer .openseadragon-canvas")
    view = viewer.single
    names = {c.index: c.name for c in view.info.classes}
    text = _status_at(browser, canvas, (left + right) / 2, (top + bottom) / 2, "")
    x0, y0 = (int(v) for v in text.split("level 0 px ")[1].split(", "))
    assert 200 <= x0 < 1000 and 200 <= y0 < 800
    assert text.splitlines()[0] == (f"{names[view.class_at(x0, y0)]}, confidence "
                                    f"{view.confidence_at(x0, y0):.2f}, on pen")
    text = _status_at(browser, canvas, *_on_screen(browser, 1900, 1500), text)
    x0, y0 = (int(v) for v in text.split("level 0 px ")[1].split(", "))
    assert view.artefact_at(x0, y0) is None and " on " not in text.splitlines()[0]
