"""What the viewer's tests share: a small result on a synthetic slide, servers of results
running in threads, a plain HTTP GET, and headless Chromium."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from wsiseg.inference.pipeline import PredictConfig, predict_slide

CHROMIUM = (shutil.which("chromium") or shutil.which("chromium-browser")
            or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None))
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _get(url: str) -> tuple[int, str, bytes]:
    """(status, Content-Type, body) of GET ``url``, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


@contextlib.contextmanager
def _serving(path, host="127.0.0.1"):
    """(server, viewer) of ``path`` on a free port, serving in a thread until the block ends."""
    from wsiseg.view import make_server

    server, viewer = make_server(path, host=host, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server, viewer
    finally:
        server.shutdown()
        server.server_close()
        viewer.close()


@pytest.fixture(scope="session")
def http_get():
    """GET a URL: (status, Content-Type, body), error statuses included."""
    return _get


@pytest.fixture(scope="session")
def serving():
    """``with serving(path, host=...) as (server, viewer):`` a server of ``path`` in a thread."""
    return _serving


@pytest.fixture(scope="session")
def view_result(svs_x40, pixel_model, tmp_path_factory):
    """The per-pixel model's result on the x40 synthetic slide (read-only)."""
    out = tmp_path_factory.mktemp("view") / "x40.wsiseg.zarr"
    return predict_slide(svs_x40.path, PredictConfig(model=str(pixel_model[0]), out=str(out),
                                                     progress=False,
                                                     trust_code=True)).path


@pytest.fixture(scope="session")
def view_server(view_result):
    """(base URL, Viewer) of a server of ``view_result`` on a free port."""
    from wsiseg.view import server_url

    with _serving(view_result) as (server, viewer):
        yield server_url(server), viewer


@pytest.fixture(scope="module")
def browser(request, tmp_path_factory):
    """Headless Chromium, its window the test module's ``WINDOW`` (width, height) if it has one;
    skips where selenium, Chromium or its driver is not installed."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    if CHROMIUM is None or not os.path.exists(CHROMEDRIVER):
        pytest.skip("chromium and chromedriver are not installed "
                    "(apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    width, height = getattr(request.module, "WINDOW", (1000, 800))
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--window-size={width},{height}",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _loaded(driver, items: int) -> bool:
    """Whether the viewer's page shows ``items`` tiled images, all loaded and drawn."""
    return driver.execute_script(
        "const v = window.wsisegViewer; if (!v || v.world.getItemCount() !== arguments[0])"
        " return false;"
        "for (let i = 0; i < arguments[0]; i++) if (!v.world.getItemAt(i).getFullyLoaded())"
        " return false;"
        "return !v.world.needsDraw();", items)


def _canvas(driver) -> np.ndarray:
    """The viewer's canvas as (H, W, 3) int16 pixels."""
    from PIL import Image

    element = driver.find_element("css selector", "#viewer .openseadragon-canvas")
    return np.asarray(Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB"),
                      dtype=np.int16)


@pytest.fixture(scope="session")
def page():
    """``page.loaded(driver, items)`` and ``page.canvas(driver)`` for the viewer's page."""
    import types

    return types.SimpleNamespace(loaded=_loaded, canvas=_canvas)


class _Recording:
    """A level of a pyramid that records each window read from it into ``reads``."""

    def __init__(self, k, array, reads):
        self.k, self.array, self.shape, self.reads = k, array, array.shape, reads

    def __getitem__(self, key):
        self.reads.append((self.k, *key))
        return self.array[key]


@pytest.fixture(scope="session")
def recorded():
    """``recorded(levels)``: (levels that record each read, the list of (level, ys, xs) read)."""
    def wrap(levels):
        reads: list = []
        return [_Recording(k, a, reads) for k, a in enumerate(levels)], reads

    return wrap
