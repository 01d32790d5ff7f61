"""The png export's artefacts: each artefact region of ``labels/qc`` outlined in its colour
where it lies on the slide, the classes still showing inside, each artefact drawn in the legend;
a result without artefact labels, or with none found, gives the same png as before."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from PIL import Image

from wsiseg.cards import ClassInfo
from wsiseg.export import ExportOptions, export_result
from wsiseg.export.thumbnail import thumbnail_shape
from wsiseg.models.loading import CARDS_DIR, DEFAULT_MODEL
from wsiseg.slide.artefacts import QC_COLOURS, QC_FOLD, QC_PEN
from wsiseg.testing.result import relabel, write_result

SLIDE = (1008, 800)  # svs_x20's level 0
FACTOR = 4  # map pixels per qc pixel; a map pixel is 2 x 2 slide pixels
QC_PX = 2 * FACTOR  # level-0 pixels per qc pixel
PEN_BOX = (40, 30, 70, 50)  # qc columns and rows (x0, y0, x1, y1), ends exclusive
FOLD_BOX = (10, 70, 20, 80)


def _result(svs_x20, path, qc, offset=(0, 0), size=None):
    """A result of svs_x20 by the shipped model's classes (map pixels 2 x 2 slide pixels), from
    level-0 ``offset`` on, ``size`` (width, height) map pixels (None: to the slide's end), with
    artefact labels ``qc`` (None: none) on a grid of FACTOR map pixels."""
    card = json.loads((CARDS_DIR / f"{DEFAULT_MODEL}.json").read_text())
    x0, y0 = offset
    labels = svs_x20.tissue[y0::2, x0::2].astype(np.uint8)
    if size is not None:
        labels = np.ascontiguousarray(labels[: size[1], : size[0]])
    labels[20:60, 20:80] = 2
    labels[100:140, 20:80] = 3
    classes = [ClassInfo(c["index"], c["name"], tuple(c["color"])) for c in card["classes"]]
    write_result(path, labels, classes, scale=(2, 2), offset=offset, slide_mpp=(0.5, 0.5),
                 dimensions=SLIDE, qc=qc, tissue_factor=FACTOR)
    group = zarr.open_group(str(path), mode="r+")
    attrs = group.attrs["wsiseg"]
    attrs["slide"]["path"] = str(svs_x20.path)
    attrs["model"].update(name=card["name"], card=card)
    group.attrs["wsiseg"] = attrs
    return path


def _qc(boxes, shape=(100, 126)):  # ceil((400, 504) / FACTOR)
    qc = np.zeros(shape, dtype=np.uint8)
    for value, (x0, y0, x1, y1) in boxes:
        qc[y0:y1, x0:x1] = value
    return qc


@pytest.fixture(scope="module")
def results(svs_x20, tmp_path_factory):
    folder = tmp_path_factory.mktemp("qcpng")
    return {
        "none": _result(svs_x20, folder / "none.wsiseg.zarr", None),
        "clean": _result(svs_x20, folder / "clean.wsiseg.zarr", _qc([])),
        "painted": _result(svs_x20, folder / "painted.wsiseg.zarr",
                           _qc([(QC_PEN, PEN_BOX), (QC_FOLD, FOLD_BOX)])),
    }


def _png(result, size, out):
    (path,) = export_result(result, ["png"], out, ExportOptions(png_size=size))
    image = Image.open(path)
    return path, np.asarray(image.convert("RGB")).astype(int), image.info


def test_without_artefacts_the_png_is_as_before(results, tmp_path):
    none_path, none, none_info = _png(results["none"], 300, tmp_path / "none")
    clean_path, clean, clean_info = _png(results["clean"], 300, tmp_path / "clean")
    # Labels with no artefact found draw nothing and add nothing to the legend or the text.
    assert np.array_equal(none, clean)
    assert none_info == clean_info and "wsiseg artefacts" not in none_info
    assert none_path.read_bytes() == clean_path.read_bytes()


def _check_outlines(plain, painted, size, boxes, offset=(0, 0)):
    """The pngs without and with the artefact squares ``boxes`` ((value, qc box) pairs) of a
    map starting at level-0 ``offset`` differ only on each square's outline, drawn all round
    in its colour within 1 px of the square's level-0 box."""
    ox, oy = offset
    tw, th = thumbnail_shape(SLIDE, size)
    step_x, step_y = SLIDE[0] / tw, SLIDE[1] / th
    changed = (painted[:th] != plain[:th]).any(axis=-1)
    ys, xs = np.nonzero(changed)
    cy, cx = ys + 0.5, xs + 0.5  # pixel centres
    on_a_border = np.zeros(len(ys), dtype=bool)
    for value, (x0, y0, x1, y1) in boxes:
        # The square's level-0 box in thumbnail pixels (continuous: pixel i spans [i, i + 1)).
        left, right = (ox + x0 * QC_PX) / step_x, (ox + x1 * QC_PX) / step_x
        top, bottom = (oy + y0 * QC_PX) / step_y, (oy + y1 * QC_PX) / step_y
        within = (cx >= left - 1) & (cx <= right + 1) & (cy >= top - 1) & (cy <= bottom + 1)
        inside = (cx > left + 1) & (cx < right - 1) & (cy > top + 1) & (cy < bottom - 1)
        border = within & ~inside
        assert not (changed[ys[inside], xs[inside]]).any()  # the classes show inside
        # The border's pixels are drawn opaque in the artefact's colour ...
        assert border.any(), "no outline drawn"
        assert (painted[ys[border], xs[border]] == QC_COLOURS[value]).all()
        on_a_border |= border
        # ... all the way round: each side has a pixel in every row or column along it.
        for coord, other, ends, span in ((cx, cy, (left, right), (top, bottom)),
                                         (cy, cx, (top, bottom), (left, right))):
            wanted = np.arange(int(np.floor(span[0] + 1)), int(np.ceil(span[1] - 1)))
            for edge in ends:
                covered = np.floor(other[border & (np.abs(coord - edge) <= 1)]).astype(int)
                assert np.isin(wanted, covered).all(), (value, edge)
    # Nothing else changed: the rest of the thumbnail is the png without artefacts.
    assert on_a_border.all()


# 300: a thumbnail pixel is 3.36 slide pixels, so the qc grid (8) does not divide it.
@pytest.mark.parametrize("size", [300, 504])
def test_outlines_lie_on_the_painted_square_and_keep_the_classes_visible(results, tmp_path,
                                                                         size):
    _, plain, _ = _png(results["none"], size, tmp_path / "none")
    _, painted, info = _png(results["painted"], size, tmp_path / "painted")
    _check_outlines(plain, painted, size, ((QC_PEN, PEN_BOX), (QC_FOLD, FOLD_BOX)))
    assert info["wsiseg artefacts"] == "pen, fold or dark"


def test_outlines_of_a_map_on_part_of_the_slide(svs_x20, tmp_path):
    # The map (and qc grid) starts at level-0 (96, 64) and covers 400 x 300 of 1008 x 800.
    offset, size = (96, 64), (200, 150)
    boxes = ((QC_FOLD, (10, 5, 20, 15)),)
    plain = _result(svs_x20, tmp_path / "plain.wsiseg.zarr", None, offset, size)
    painted = _result(svs_x20, tmp_path / "painted.wsiseg.zarr",
                      _qc(boxes, (38, 50)), offset, size)
    _check_outlines(_png(plain, 300, tmp_path / "a")[1], _png(painted, 300, tmp_path / "b")[1],
                    300, boxes, offset)


def test_the_legend_lists_each_artefact_drawn(results, tmp_path):
    _, plain, _ = _png(results["none"], 504, tmp_path / "none")
    _, painted, _ = _png(results["painted"], 504, tmp_path / "painted")
    th = thumbnail_shape(SLIDE, 504)[1]
    for value in (QC_PEN, QC_FOLD):
        colour = np.array(QC_COLOURS[value])
        # A swatch outlined in the artefact's colour below the thumbnail, none without.
        assert (painted[th:] == colour).all(axis=-1).sum() > 20
        assert not (plain[th:] == colour).all(axis=-1).any()


def test_a_tiny_artefact_still_shows_and_names_come_from_the_label_image(svs_x20, tmp_path):
    qc = _qc([(QC_PEN, (60, 40, 61, 41))])  # one qc pixel: 8 slide px, a sixth of a png pixel
    path = _result(svs_x20, tmp_path / "tiny.wsiseg.zarr", qc)
    relabel(path, "qc", QC_PEN, "marker", (1, 254, 3, 255))
    _, png, info = _png(path, 21, tmp_path / "out")  # 21 x 17 thumbnail: 48 slide px a pixel
    tw, th = thumbnail_shape(SLIDE, 21)
    ys, xs = np.nonzero((png[:th] == (1, 254, 3)).all(axis=-1))
    # The qc pixel spans slide x 480-488, y 320-328: png pixel (x 10, y 6) holds it.
    assert (tw, th) == (21, 17)
    assert [(int(y), int(x)) for y, x in zip(ys, xs)] == [(6, 10)]
    assert info["wsiseg artefacts"] == "marker"
