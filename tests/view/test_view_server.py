"""The viewer's server, over HTTP, without a browser."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from wsiseg.result.store import open_result
from wsiseg.view.server import OVERLAP, TILE_SIZE


def test_info_json_lists_classes_areas_and_the_slide(view_server, view_result, http_get):
    url, _ = view_server
    status, kind, body = http_get(url + "info.json")
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


def test_slide_tiles_are_deep_zoom_jpeg(view_server, http_get):
    url, viewer = view_server
    status, _, body = http_get(url + "slide.dzi")
    assert status == 200 and f'TileSize="{TILE_SIZE}"' in body.decode()
    top = viewer.single.max_level
    status, kind, body = http_get(url + f"slide_files/{top}/1_1.jpeg")
    assert (status, kind) == (200, "image/jpeg")
    assert Image.open(io.BytesIO(body)).size == (TILE_SIZE + 2 * OVERLAP,) * 2


def _map_pixel(http_get, url: str, top: int, x0: int, y0: int) -> tuple[int, ...]:
    """The map tile's RGBA at level-0 pixel (x0, y0), at full resolution."""
    col, row = x0 // TILE_SIZE, y0 // TILE_SIZE
    status, kind, body = http_get(url + f"map_files/{top}/{col}_{row}.png")
    assert (status, kind) == (200, "image/png")
    tile = np.asarray(Image.open(io.BytesIO(body)).convert("RGBA"))
    x = x0 - col * TILE_SIZE + (OVERLAP if col else 0)
    y = y0 - row * TILE_SIZE + (OVERLAP if row else 0)
    return tuple(int(v) for v in tile[y, x])


def test_map_tiles_are_class_colours_over_the_slide_and_clear_on_background(view_server,
                                                                             view_result, http_get):
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
            pixel = _map_pixel(http_get, url, top, x0, y0)
            if cls == 0:
                assert pixel[3] == 0
            else:
                assert pixel == (*colors[cls], 255)
            _, _, body = http_get(url + f"class?x={x0}&y={y0}")
            assert json.loads(body)["index"] == cls


def test_coarse_map_tiles_use_the_coarse_pyramid_levels(view_server, http_get):
    url, _ = view_server
    status, kind, body = http_get(url + "map_files/8/0_0.png")  # 2000 x 1600 / 2^3
    assert (status, kind) == (200, "image/png")
    tile = np.asarray(Image.open(io.BytesIO(body)).convert("RGBA"))
    assert tile.shape == (200, 250, 4)
    assert 0 < (tile[..., 3] > 0).mean() < 1  # tissue and glass both there


@pytest.mark.parametrize("path", [
    "../README.md", "static/../server.py", "static/%2e%2e/server.py", "etc/passwd",
    "slide_files/99/0_0.jpeg", "slide_files/0/5_5.jpeg", "map_files/8/0_0.jpeg", "slide_files/8/0/0.jpeg",
    "static/nothing.js", "r/x40/", "thumb/x40.png",
])
def test_other_paths_are_not_found(view_server, path, http_get):
    url, _ = view_server
    status, _, _ = http_get(url + path)
    assert status == 404


def test_static_assets_and_page_are_served(view_server, http_get):
    url, _ = view_server
    status, _, body = http_get(url)
    assert status == 200 and b"openseadragon.min.js" in body
    for name in ("openseadragon.min.js", "viewer.js", "view.css", "images/home_rest.png"):
        assert http_get(url + "static/" + name)[0] == 200


def test_the_server_binds_the_local_address_by_default(view_result):
    from wsiseg.view import make_server

    server, viewer = make_server(view_result, port=0)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.server_close()
        viewer.close()


@pytest.mark.slow
def test_a_folder_gets_an_index_with_thumbnails_and_areas(view_result, http_get, serving):
    from wsiseg.view import server_url

    with serving(view_result.parent) as (server, _):
        url = server_url(server)
        status, kind, body = http_get(url)
        assert status == 200 and kind.startswith("text/html")
        assert b'href="/r/x40/"' in body and b"mm&sup2;" in body
        status, kind, body = http_get(url + "thumb/x40.png")
        assert (status, kind) == (200, "image/png")
        assert max(Image.open(io.BytesIO(body)).size) <= 256
        assert json.loads(http_get(url + "r/x40/info.json")[2])["name"] == "x40"
        assert http_get(url + "r/x40/")[0] == 200
        assert http_get(url + "r/nothing/info.json")[0] == 404
        assert http_get(url + "info.json")[0] == 404


_CLOSE_WHILE_READING = """
import sys, threading, time
from wsiseg.view.server import ResultView
view = ResultView(sys.argv[1])
stop = threading.Event()
refused = []
def read(k):
    i = k
    while not stop.is_set():
        try:
            view._slide_tile(view.max_level - i % 3, 0, 0)  # not the cache: the slide itself
        except Exception as err:
            refused.append(type(err).__name__)
        i += 1
threads = [threading.Thread(target=read, args=(k,)) for k in range(4)]
for t in threads:
    t.start()
time.sleep(0.3)
view.close()
time.sleep(0.3)
stop.set()
for t in threads:
    t.join()
print(sorted(set(refused)))
"""


def test_closing_a_result_while_tiles_are_read_waits_for_the_reads(view_result):
    # OpenSlide frees a slide's decoders on close: a read still running in another thread
    # used to abort or crash the process (a server shut down while a page loads tiles).
    # In a process of its own, so that a crash fails this test only.
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _CLOSE_WHILE_READING, str(view_result)],
                         check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "['_Closing']"  # reads after the close are refused


def test_a_slide_tile_asked_for_after_the_close_gets_503(view_result, http_get, serving):
    from wsiseg.view import server_url

    with serving(view_result) as (server, viewer):
        url = server_url(server)
        assert http_get(url + "slide_files/9/0_0.jpeg")[0] == 200
        viewer.close()  # closed again as the block ends: closing twice is harmless
        status, _, body = http_get(url + "slide_files/8/0_0.jpeg")
        assert (status, body) == (503, b"the viewer is shutting down\n")
        assert http_get(url + "slide_files/9/0_0.jpeg")[0] == 200  # from the tile cache
