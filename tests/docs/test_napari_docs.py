"""The napari lines of docs/viewing.md, run as written on a result the pipeline made.

The Python blocks of the page's napari section are read from the page and run, the result's
path in place of ``SLIDE.wsiseg.zarr``. Then: the layers found by their name's suffix are there,
with the documented names and the class colours; the plugin has dropped the translations, as
the page says; and the page's fix puts every layer where the store's transforms (and so the
slide's frame) say.

napari is no dependency of wsiseg: without napari and napari-ome-zarr these tests skip. With a
display (``xvfb-run`` on a server) they run in a real ``napari.Viewer(show=False)``. Without
one, Qt's offscreen platform gives no OpenGL context, which napari's canvas needs to add a
layer, so they run in napari's ``ViewerModel``: the viewer's own model, with the same ``open``
and layers, and no window.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import zarr

from wsiseg import PredictConfig, predict_slide
from wsiseg.result.store import open_result
from wsiseg.testing import synthetic_tissue, write_scn

napari = pytest.importorskip(
    "napari", reason="napari is not installed (it is no dependency of wsiseg: "
    "pip install 'napari[pyqt6]' napari-ome-zarr to check the docs' napari lines)")
pytest.importorskip(
    "napari_ome_zarr", reason="napari-ome-zarr is not installed (pip install napari-ome-zarr)")

PAGE = Path(__file__).resolve().parents[2] / "docs" / "viewing.md"
PLACEHOLDER = "SLIDE.wsiseg.zarr"
OFFSET = (1200, 600)  # the slide's bounds offset, level-0 pixels
MPP = 0.5  # level 0; the map is 1.0 um/px, the picture 10 um/px


def napari_blocks() -> list[str]:
    """The Python blocks of the page's napari section, in order."""
    text = PAGE.read_text(encoding="utf-8")
    section = text.split("\n## napari\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 2, "docs/viewing.md: expected the opening block and the translate fix"
    return blocks


@pytest.fixture(scope="module")
def result(pixel_model, tmp_path_factory) -> Path:
    """A result of the per-pixel test model on a small slide with a bounds offset."""
    model_path, _ = pixel_model
    rgb, _ = synthetic_tissue(600, 800, seed=5, tissue_fraction=0.5)
    folder = tmp_path_factory.mktemp("napari")
    slide = write_scn(folder / "offset.scn", rgb, mpp=MPP, offset=OFFSET)
    out = folder / "offset.wsiseg.zarr"
    return predict_slide(slide, PredictConfig(model=str(model_path), out=str(out),
                                              progress=False)).path


@pytest.fixture
def viewer(monkeypatch):
    """A viewer that shows no window; ``napari.Viewer()`` in the page's lines returns it."""
    display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if display and os.environ.get("QT_QPA_PLATFORM") != "offscreen":
        view = napari.Viewer(show=False)
    else:
        monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
        import npe2
        from napari.components import ViewerModel

        npe2.PluginManager.instance().discover()  # what napari.Viewer() does first
        view = ViewerModel()
    monkeypatch.setattr(napari, "Viewer", lambda *args, **kwargs: view)
    yield view
    if hasattr(view, "close"):
        view.close()


def run_block(block: str, result: Path, namespace: dict) -> None:
    assert PLACEHOLDER in block
    code = compile(block.replace(PLACEHOLDER, str(result)), str(PAGE), "exec")
    exec(code, namespace)  # noqa: S102 - the page's own lines, run as a reader would


def level0_transforms(group: zarr.Group) -> tuple[list[float], list[float]]:
    """(scale, translation) of level 0, y and x only."""
    level0 = group.attrs["ome"]["multiscales"][0]["datasets"][0]
    found = {t["type"]: t[t["type"]] for t in level0["coordinateTransformations"]}
    return found["scale"][-2:], found["translation"][-2:]


def test_the_documented_lines_find_the_layers_by_their_name_suffix(viewer, result):
    namespace: dict = {}
    run_block(napari_blocks()[0], result, namespace)
    classes, tissue = namespace["classes"], namespace["tissue"]
    info = open_result(result)[1]

    names = [layer.name for layer in viewer.layers]
    assert classes.name == "labels/labels/classes" and tissue.name == "labels/labels/tissue"
    assert [n for n in names if n.startswith("labels/")] == [classes.name, tissue.name]
    slide = info.slide.path.name
    assert sorted(n for n in names if not n.startswith("labels/")) == sorted(
        f"{slide}: {c}" for c in ("red", "green", "blue"))
    with pytest.raises(KeyError):
        viewer.layers["classes"]  # as the page warns
    assert isinstance(classes, napari.layers.Labels) and isinstance(tissue, napari.layers.Labels)
    assert classes.visible and not tissue.visible  # hidden at opening; the page shows classes

    labels = open_result(result)[0][:]
    assert np.array_equal(np.asarray(classes.data[0]), labels)
    colours = classes.colormap.color_dict
    assert colours[0][3] == 0  # background: transparent
    for c in (c for c in info.classes if c.index != 0):
        assert np.allclose(colours[c.index], (*(v / 255 for v in c.color), 1), atol=1e-6), c
    by_index = dict(zip(classes.features["index"], classes.features["name"]))
    assert by_index == {c.index: c.name for c in info.classes}


def test_the_documented_translate_fix_puts_each_layer_where_the_store_says(viewer, result):
    opening, fix = napari_blocks()
    namespace: dict = {}
    run_block(opening, result, namespace)
    store = zarr.open_group(str(result), mode="r")
    groups = {layer.name: store[f"labels/{layer.name.rsplit('/', 1)[-1]}"]
              if layer.name.startswith("labels/") else store for layer in viewer.layers}

    for layer in viewer.layers:  # what the page says the plugin does: scale kept, no translation
        scale, translation = level0_transforms(groups[layer.name])
        assert np.allclose(layer.scale, scale), layer.name
        assert np.allclose(layer.translate, 0) and not np.allclose(translation, 0), (
            f"{layer.name}: napari-ome-zarr now keeps the translation; update docs/viewing.md")

    run_block(fix, result, namespace)
    for layer in viewer.layers:
        scale, translation = level0_transforms(groups[layer.name])
        assert np.allclose(layer.translate, translation), layer.name
        for pixel in [(0, 0), (7, 3), tuple(s - 1 for s in layer.level_shapes[0][-2:])]:
            world = layer.data_to_world(pixel)
            assert np.allclose(world, np.add(translation, np.multiply(scale, pixel))), (
                layer.name, pixel)

    # In the slide's frame: map pixel (x, y) covers level-0 [ox + x sx, ox + (x + 1) sx), so
    # its centre lies at (ox + (x + 1/2) sx - 1/2) mpp from the centre of level-0 pixel (0, 0).
    info = open_result(result)[1]
    classes = namespace["classes"]
    (sx, sy), (ox, oy) = info.scale_to_level0, info.offset_level0
    for y, x in [(0, 0), (120, 250), (299, 399)]:
        expected = ((oy + (y + 0.5) * sy - 0.5) * MPP, (ox + (x + 0.5) * sx - 0.5) * MPP)
        assert np.allclose(classes.data_to_world((y, x)), expected), (y, x)
