"""The viewer's server, over HTTP, without a browser."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from wsiseg.result.store import open_result
from wsiseg.view.server import OVERLAP, TILE_SIZE


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def test_info_json_lists_classes_areas_and_the_slide(view_server, view_result):
    url, _ = view_server
    status, kind, body = get(url + "info.json")
    assert (status, kind) == (200, "application/json")
    info = json.loads(body)
    labels, result = open_result(view_result)
    counts = np.bincount(np.asarray(labels[:]).ravel(), minlength=len(result.classes))
    pixel_mm2 = result.analysis_mpp[0] * result.analysis_mpp[1] / 1e6
    assert [c["name"] for c in info["classes"]] == list(result.class_names)
    assert [c["color"] for c in info["classes"]] == [list(c.color) for c in result.classes]
    assert [c["area_mm2"] for c in info["classes"]] == pytest.approx(counts * pixel_mm2)
    assert (info["width"], info["height"]) == (2000, 1600)
    assert info["mpp"] == [0.25, 0.25]


def test_slide_tiles_are_deep_zoom_jpeg(view_server):
    url, viewer = view_server
    status, _, body = get(url + "slide.dzi")
    assert status == 200 and f'TileSize="{TILE_SIZE}"' in body.decode()
    top = viewer.single.max_level
    status, kind, body = get(url + f"slide_files/{top}/1_1.jpeg")
    assert (status, kind) == (200, "image/jpeg")
    assert Image.open(io.BytesIO(body)).size == (TILE_SIZE + 2 * OVERLAP,) * 2


def _map_pixel(url: str, top: int, x0: int, y0: int) -> tuple[int, ...]:
    """The map tile's RGBA at level-0 pixel (x0, y0), at full resolution."""
    col, row = x0 // TILE_SIZE, y0 // TILE_SIZE
    status, kind, body = get(url + f"map_files/{top}/{col}_{row}.png")
    assert (status, kind) == (200, "image/png")
    tile = np.asarray(Image.open(io.BytesIO(body)).convert("RGBA"))
    x = x0 - col * TILE_SIZE + (OVERLAP if col else 0)
    y = y0 - row * TILE_SIZE + (OVERLAP if row else 0)
    return tuple(int(v) for v in tile[y, x])


def test_map_tiles_are_class_colours_over_the_slide_and_clear_on_background(view_server,
                                                                             view_result):
    url, viewer = view_server
    labels, result = open_result(view_result)
    labels = np.asarray(labels[:])
    (sx, sy), (ox, oy) = result.scale_to_level0, result.offset_level0
    colors = {c.index: c.color for c in result.classes}
    top = viewer.single.max_level
    for cls in (0, 1, 2):
        ys, xs = np.nonzero(labels == cls)
        assert len(xs), f"class {cls} is missing from the test map"
        for i in (0, len(xs) // 2, len(xs) - 1):  # map pixel centres in level 0
            x0, y0 = int(ox + (xs[i] + 0.5) * sx), int(oy + (ys[i] + 0.5) * sy)
            pixel = _map_pixel(url, top, x0, y0)
            if cls == 0:
                assert pixel[3] == 0
            else:
                assert pixel == (*colors[cls], 255)
            _, _, body = get(url + f"class?x={x0}&y={y0}")
            assert json.loads(body)["index"] == cls


def test_coarse_map_tiles_use_the_coarse_pyramid_levels(view_server):
    url, _ = view_server
    status, kind, body = get(url + "map_files/8/0_0.png")  # 2000 x 1600 / 2^3
    assert (status, kind) == (200, "image/png")
    tile = np.asarray(Image.open(io.BytesIO(body)).convert("RGBA"))
    assert tile.shape == (200, 250, 4)
    assert 0 < (tile[..., 3] > 0).mean() < 1  # tissue and glass both there


@pytest.mark.parametrize("path", [
    "../README.md", "static/../server.py", "static/%2e%2e/server.py", "etc/passwd",
    "slide_files/99/0_0.jpeg", "slide_files/0/5_5.jpeg", "map_files/8/0_0.jpeg", "slide_files/8/0/0.jpeg",
    "static/nothing.js", "r/x40/", "thumb/x40.png",
])
def test_other_paths_are_not_found(view_server, path):
    url, _ = view_server
    status, _, _ = get(url + path)
    assert status == 404


def test_static_assets_and_page_are_served(view_server):
    url, _ = view_server
    status, _, body = get(url)
    assert status == 200 and b"openseadragon.min.js" in body
    for name in ("openseadragon.min.js", "viewer.js", "view.css", "images/home_rest.png"):
        assert get(url + "static/" + name)[0] == 200


def test_the_server_binds_the_local_address_by_default(view_result):
    from wsiseg.view import make_server

    server, viewer = make_server(view_result, port=0)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.server_close()
        viewer.close()


@pytest.mark.slow
def test_a_folder_gets_an_index_with_thumbnails_and_areas(view_result):
    import threading

    from wsiseg.view import make_server, server_url

    server, viewer = make_server(view_result.parent, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = server_url(server)
        status, kind, body = get(url)
        assert status == 200 and kind.startswith("text/html")
        assert b'href="/r/x40/"' in body and b"mm&sup2;" in body
        status, kind, body = get(url + "thumb/x40.png")
        assert (status, kind) == (200, "image/png")
        assert max(Image.open(io.BytesIO(body)).size) <= 256
        assert json.loads(get(url + "r/x40/info.json")[2])["name"] == "x40"
        assert get(url + "r/x40/")[0] == 200
        assert get(url + "r/nothing/info.json")[0] == 404
        assert get(url + "info.json")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
        viewer.close()
