"""The viewer's page in headless Chromium: tiles render, the overlay shows and hides."""

from __future__ import annotations

import numpy as np
import pytest

WebDriverWait = pytest.importorskip(
    "selenium.webdriver.support.ui", reason="selenium is not installed").WebDriverWait

pytestmark = pytest.mark.slow
WINDOW = (1000, 800)


def _fully_loaded(driver) -> bool:
    return driver.execute_script(
        "const v = window.wsisegViewer;"
        "return !!v && v.world.getItemCount() === 2 &&"
        " v.world.getItemAt(0).getFullyLoaded() && v.world.getItemAt(1).getFullyLoaded() &&"
        " !v.world.needsDraw();")



def test_the_page_shows_the_map_over_the_slide_and_hides_it(browser, view_server, page):
    url, viewer = view_server
    browser.get(url)
    WebDriverWait(browser, 15).until(_fully_loaded)
    legend = browser.find_element("id", "legend").text
    assert "class1" in legend and "mm²" in legend
    shown = page.canvas(browser)
    browser.find_element("id", "overlay").click()
    # The picture without the overlay, once it has been drawn again.
    WebDriverWait(browser, 5).until(lambda d: d.execute_script(
        "return window.wsisegViewer.world.getItemAt(1).getOpacity() === 0") and _fully_loaded(d)
        and (np.abs(page.canvas(d) - shown).sum(axis=2) > 30).mean() > 0.05)
    hidden = page.canvas(browser)
    assert shown.shape == hidden.shape
    changed = np.abs(shown - hidden).sum(axis=2) > 30
    # Where the picture changed, it moved toward the class colours (green/red-ish, not grey).
    info = viewer.single.stats()
    colours = np.array([c["color"] for c in info["classes"] if c["index"] > 0], dtype=np.int16)

    def distance(picture):
        px = picture[changed][:, None, :]
        return np.abs(px - colours[None]).sum(axis=2).min(axis=1).mean()
    assert distance(shown) < distance(hidden)
    browser.find_element("id", "overlay").click()
    WebDriverWait(browser, 5).until(lambda d: d.execute_script(
        "return window.wsisegViewer.world.getItemAt(1).getOpacity() > 0"))


def test_the_status_line_names_the_class_and_position_under_the_cursor(browser, view_server):
    from selenium.webdriver.common.action_chains import ActionChains

    url, viewer = view_server
    browser.get(url)
    WebDriverWait(browser, 15).until(_fully_loaded)
    canvas = browser.find_element("css selector", "#viewer .openseadragon-canvas")
    ActionChains(browser).move_to_element(canvas).move_by_offset(3, 2).perform()
    WebDriverWait(browser, 5).until(
        lambda d: "level 0 px" in d.find_element("id", "status").text)
    text = browser.find_element("id", "status").text
    x0, y0 = (int(v) for v in text.split("level 0 px ")[1].split(", "))
    name = {c.index: c.name for c in viewer.single.info.classes}[viewer.single.class_at(x0, y0)]
    assert text.splitlines()[0].split(", confidence ")[0] == name
    assert f"{x0 * 0.25:.1f}, {y0 * 0.25:.1f} um" in text


def test_on_a_network_address_the_page_works_with_its_token_and_not_without(browser,
                                                                            view_result,
                                                                            serving):
    with serving(view_result, host="0.0.0.0") as (server, _):
        try:
            base = f"http://127.0.0.1:{server.port}/"
            browser.get(base)
            assert "needs its token" in browser.find_element("tag name", "body").text
            browser.get(f"{base}?token={server.token}")
            # The tiles and numbers the page asks for later carry the cookie, not the token.
            WebDriverWait(browser, 15).until(_fully_loaded)
            assert "class1" in browser.find_element("id", "legend").text
            cookie = browser.get_cookie(f"wsiseg-view-{server.port}")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        finally:
            browser.delete_all_cookies()
