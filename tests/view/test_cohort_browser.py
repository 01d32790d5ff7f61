"""``cohort.html`` from file:// in headless Chromium: a click on a header sorts the rows
(numbers as numbers, empty cells last both ways), the name box and the review box filter."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from wsiseg.cards import ClassInfo
from wsiseg.export import cohort
from wsiseg.testing.result import write_result

pytestmark = pytest.mark.slow
WINDOW = (1200, 800)

CLASSES = (ClassInfo(0, "background", (255, 255, 255)), ClassInfo(1, "tumour", (200, 0, 0)),
           ClassInfo(2, "stroma", (0, 160, 0)))
# Name -> tumour pixels of 400 tissue pixels: 5%, 12.5%, 50%, 100%; as text "100.00" would
# sort first and "5.00" after "12.50".
TUMOUR = {"b <i>": 20, "a b": 50, "ü": 200, "c#": 400}
# Reasons to review, where a report has them (the others were made before the field).
REVIEW = {"a b": ["fold over tumour"], "ü": []}


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    maps = tmp_path_factory.mktemp("cohort browser") / "maps"
    for name, tumour in TUMOUR.items():
        labels = np.zeros((20, 20), dtype=np.uint8)
        labels.ravel()[:] = 2
        labels.ravel()[:tumour] = 1
        write_result(maps / f"{name}.wsiseg.zarr", labels, CLASSES)
    (maps / "manifest.csv").write_text(
        "slide,status,error,output,patches,seconds,worker\n"
        "/scans/bad.svs,failed,cannot be read,,,,\n", encoding="utf-8")
    real = cohort.build_report

    def with_review(result, *args, **kwargs):
        report = real(result, *args, **kwargs)
        name = Path(result).name.removesuffix(".wsiseg.zarr")
        if name in REVIEW:
            report["review"] = REVIEW[name]
        return report

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cohort, "build_report", with_review)
        html_path, _ = cohort.write_cohort(maps)
    return html_path


def _shown(driver) -> list[str]:
    """The names of the rows shown, top to bottom."""
    return driver.execute_script(
        "return Array.prototype.slice.call(document.querySelectorAll('#cohort tbody tr'))"
        ".filter(function (r) { return !r.hidden && r.offsetParent !== null; })"
        ".map(function (r) { return r.getAttribute('data-name'); });")


def _header(driver, key):
    return driver.find_element("css selector", f'#cohort th[data-key="{key}"]')


def test_a_click_on_a_header_sorts_numbers_as_numbers_with_empty_cells_last(browser, page):
    browser.get(page.as_uri())
    assert _shown(browser) == ["a b", "b <i>", "bad", "c#", "ü"]  # by name, as written
    tumour = _header(browser, "share_of_tissue_percent:tumour")
    tumour.click()
    assert _shown(browser) == ["b <i>", "a b", "ü", "c#", "bad"]
    assert tumour.get_attribute("aria-sort") == "ascending"
    tumour.click()
    assert _shown(browser) == ["c#", "ü", "a b", "b <i>", "bad"]  # the failed slide still last
    assert tumour.get_attribute("aria-sort") == "descending"
    _header(browser, "slide").click()
    assert _shown(browser) == ["a b", "b <i>", "bad", "c#", "ü"]
    assert tumour.get_attribute("aria-sort") == "none"


def test_the_name_box_and_the_review_box_filter_the_rows(browser, page):
    browser.get(page.as_uri())
    box = browser.find_element("id", "filter")
    box.send_keys("B")
    assert _shown(browser) == ["a b", "b <i>", "bad"]
    assert browser.find_element("id", "shown").text == "3 of 5 slides"
    box.send_keys(" <")
    assert _shown(browser) == ["b <i>"]
    box.clear()
    box.send_keys("\u00fc")
    assert _shown(browser) == ["ü"]
    box.send_keys("\b")  # emptied: every row again
    assert len(_shown(browser)) == 5
    browser.find_element("id", "review-only").click()
    assert _shown(browser) == ["a b"]  # "ü" has an empty list, the others no field
    browser.find_element("id", "review-only").click()
    assert len(_shown(browser)) == 5


def test_the_class_filter_keeps_rows_above_a_share(browser, page):
    from selenium.webdriver.support.ui import Select

    browser.get(page.as_uri())
    Select(browser.find_element("id", "class-filter")).select_by_visible_text("tumour")
    above = browser.find_element("id", "share-above")
    above.clear()
    above.send_keys("12.5")
    assert _shown(browser) == ["c#", "ü"]


def test_the_viewers_folder_index_is_the_same_table_with_links(browser, view_result, tmp_path,
                                                                serving):
    from wsiseg.view import server_url

    for name in ("a b", "ü#"):
        shutil.copytree(view_result, tmp_path / f"{name}.wsiseg.zarr")
    with serving(tmp_path) as (server, _):
        url = server_url(server)
        browser.get(url)
        keys = [th.get_attribute("data-key")
                for th in browser.find_elements("css selector", "#cohort th[data-key]")]
        assert keys[:3] == ["slide", "status", "tissue_area_mm2"]
        assert "damaged_regions" in keys and any(k.startswith("share_of_tissue_percent:")
                                                 for k in keys)
        _header(browser, "slide").click()
        _header(browser, "slide").click()
        assert _shown(browser) == ["ü#", "a b"]
        link = browser.find_element("link text", "ü#")
        assert link.get_attribute("href") == url + "r/%C3%BC%23/"
        link.click()
        assert browser.current_url == url + "r/%C3%BC%23/"
