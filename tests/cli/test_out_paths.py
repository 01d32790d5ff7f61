"""``--out`` for one slide: a result's own path, or a folder to hold it; nothing but a result
is ever replaced."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from wsiseg.cli.main import main
from wsiseg.result.store import open_result
from wsiseg.testing import synthetic_tissue, write_svs
from wsiseg.testing.cli import error_line


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    rgb, _ = synthetic_tissue(500, 600, seed=5)
    return write_svs(tmp_path_factory.mktemp("slide") / "case 3.svs", rgb, 0.5, tile=128)


def _predict(slide, model, out, *extra):
    return CliRunner().invoke(main, ["predict", str(slide), "--model", str(model), "--out",
                                     str(out), "--quiet", *extra])


def test_a_folder_given_as_out_takes_the_result_named_after_the_slide(slide, pixel_model,
                                                                       tmp_path):
    made = _predict(slide, pixel_model[0], f"{tmp_path / 'new' / 'maps'}/")
    assert made.exit_code == 0, made.output
    open_result(tmp_path / "new" / "maps" / "case 3.wsiseg.zarr")

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    for extra in ((), ("--overwrite",)):  # an existing folder, with or without a slash
        done = _predict(slide, pixel_model[0], mine, *extra)
        assert done.exit_code == 0, done.output
    assert sorted(p.name for p in mine.iterdir()) == ["case 3.wsiseg.zarr", "notes.txt"]
    assert (mine / "notes.txt").read_text() == "precious"
    open_result(mine / "case 3.wsiseg.zarr")


def test_only_a_result_is_ever_replaced(slide, pixel_model, tmp_path):
    text = tmp_path / "notes.wsiseg.zarr"
    text.write_text("precious")
    other = tmp_path / "slide.ome.zarr"  # another zarr: never filled with a result either
    other.mkdir()
    (other / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                 "attributes": {"ome": {}}}))
    for out, what in ((text, "a file"), (other, "a folder")):
        refused = _predict(slide, pixel_model[0], out, "--overwrite")
        assert f"{out} exists and is {what}, not a wsiseg result" in error_line(refused)
    assert text.read_text() == "precious"
    assert [p.name for p in other.iterdir()] == ["zarr.json"]

    result = tmp_path / "a.wsiseg.zarr"
    assert _predict(slide, pixel_model[0], result).exit_code == 0
    assert "exists already; pass --overwrite" in error_line(_predict(slide, pixel_model[0],
                                                                     result))
    assert _predict(slide, pixel_model[0], result, "--overwrite").exit_code == 0
    open_result(result)
