"""Values a result records are refused on opening, in one line, when wsiseg predict cannot have
written them: not finite, not positive, classes out of 0..255, a map, slide and arrays that do
not fit each other; before any chunk is counted or read."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner
from hostile_results import edit_json, one_line

from wsiseg.cli.main import main
from wsiseg.errors import ResultError
from wsiseg.export.report import write_report
from wsiseg.result.store import open_result

NAN, INF = math.nan, math.inf


def _set(key_path: str, value):
    """An edit of the ``wsiseg`` attribute: ``value`` at the dotted ``key_path``."""
    def edit(document):
        node = document["attributes"]["wsiseg"]
        *parents, last = key_path.split(".")
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value
    return edit


def _classes(n: int):
    return [{"index": i, "name": f"c{i}", "color": [0, 0, 0]} for i in range(n)]


# (what is edited, the edit, words of the message)
RECORDED = [
    ("scale 0", _set("scale_to_level0", [0, 0]), ["'scale_to_level0' = [0, 0]", "above 0"]),
    ("scale NaN", _set("scale_to_level0", [NAN, 2.0]), ["'scale_to_level0[0]' = nan"]),
    ("scale negative", _set("scale_to_level0", [-2, -2]), ["[-2, -2]"]),
    ("mpp NaN", _set("slide.mpp", [NAN, NAN]), ["'slide.mpp[0]' = nan", "finite"]),
    ("mpp infinite", _set("analysis_mpp", [INF, 1.0]), ["'analysis_mpp[0]' = inf"]),
    ("a NaN in the config", _set("config.sigma", NAN), ["'config.sigma' = nan"]),
    ("a huge whole number", _set("patches_total", 10**30), ["'patches_total'"]),
    ("300 classes", _set("classes", _classes(300)), ["300 classes", "1 to 256"]),
    ("a colour out of range", _set("classes.1.color", [999, -5, 3]), ["[999, -5, 3]"]),
    ("a class index twice", _set("classes.2.index", 1), ["'classes[2].index' = 1"]),
    ("no class", _set("classes", []), ["0 classes"]),
    ("mpp not the slide's", _set("analysis_mpp", [2.0, 2.0]), ["'analysis_mpp' x = 2.0"]),
    ("a slide of 200000^2", _set("slide.dimensions", [200000, 200000]),
     ["'slide.dimensions' x = 200000"]),
    ("a map of 10^6^2", _set("shape", [10**6, 10**6]), ["a map of 1000000 pixels"]),
    ("bounds not the map's", _set("slide.bounds", [0, 0, 100, 200]), ["bounds are 100 wide"]),
    ("an offset not the bounds'", _set("offset_level0", [4, 0]), ["'offset_level0' x = 4"]),
    ("stride 0", _set("stride", 0), ["'stride' = 0"]),
    ("tissue threshold 7", _set("tissue_threshold", 7), ["'tissue_threshold' = 7"]),
]


@pytest.mark.parametrize("name, edit, words", RECORDED, ids=[r[0] for r in RECORDED])
def test_a_recorded_value_predict_cannot_write_is_one_line(result_copy, name, edit, words):
    edit_json(result_copy / "zarr.json", edit)
    with pytest.raises(ResultError) as caught:
        open_result(result_copy)
    one_line(str(caught.value), str(result_copy), *words, "edited or damaged",
             "run wsiseg predict again")


def _array_meta(name: str, key: str, value):
    def edit(result):
        edit_json(result / name / "zarr.json", lambda meta: meta.__setitem__(key, value))
    return edit


def _chunk_shape(name: str, shape):
    def edit(result):
        edit_json(result / name / "zarr.json", lambda meta: meta["chunk_grid"]["configuration"]
                  .__setitem__("chunk_shape", shape))
    return edit


def _datasets(paths):
    def edit(result):
        def change(meta):
            datasets = meta["attributes"]["ome"]["multiscales"][0]["datasets"]
            meta["attributes"]["ome"]["multiscales"][0]["datasets"] = [
                dict(datasets[0], path=p) for p in paths]
        edit_json(result / "labels" / "classes" / "zarr.json", change)
    return edit


def _record(name: str, count: int):
    def edit(result):
        edit_json(result / "zarr.json",
                  lambda meta: meta["attributes"]["wsiseg_chunks"].__setitem__(name, count))
    return edit


# (what is edited, the edit of the result's folder, words of the message)
ARRAYS = [
    ("labels of another shape than recorded", _array_meta("labels/classes/0", "shape",
                                                          [10**6, 10**6]),
     ["labels/classes/0 is uint8 of shape (1000000, 1000000)", "(200, 300)"]),
    ("labels of another data type", _array_meta("labels/classes/0", "data_type", "float64"),
     ["labels/classes/0 is float64"]),
    ("a pyramid level not halving", _array_meta("labels/classes/1", "shape", [100, 149]),
     ["labels/classes/1 is uint8 of shape (100, 149), not uint8 of shape (100, 150)"]),
    ("probabilities of another number of classes",
     _array_meta("wsiseg/probabilities", "shape", [7, 200, 300]), ["(7, 200, 300)", "(3, 200, 300)"]),
    ("a tissue mask of another size", _array_meta("labels/tissue/0", "shape", [99, 99]),
     ["labels/tissue/0", "(50, 75)"]),
    ("the picture of another size", _array_meta("0", "shape", [3, 5, 5]), ["(3, 50, 75)"]),
    ("chunks of 2 GiB", _chunk_shape("labels/classes/0", [65536, 32768]),
     ["labels/classes/0/zarr.json declares chunks of 2147483648 bytes"]),
    ("chunks of 0 pixels", _chunk_shape("labels/classes/0", [0, 64]), ["chunk grid"]),
    ("a codec wsiseg never writes", _array_meta("labels/classes/0", "codecs",
                                                [{"name": "bytes"}, {"name": "gzip"}]),
     ["['bytes', 'gzip']", "bytes and zstd only"]),
    ("levels listed elsewhere", _datasets(["0", "../../../etc"]),
     ["lists the levels ['labels/classes/0', 'labels/classes/../../../etc']"]),
    ("no levels listed", _datasets([]), ["lists the levels []"]),
    ("a record of more chunks than the grid", _record("labels/classes/0", 10**9),
     ["labels/classes/0: its record of 1000000000 chunk files does not fit its grid of 20"]),
]


@pytest.mark.parametrize("name, edit, words", ARRAYS, ids=[r[0] for r in ARRAYS])
def test_arrays_that_do_not_fit_the_attributes_are_one_line(result_copy, name, edit, words):
    edit(result_copy)
    with pytest.raises(ResultError) as caught:
        open_result(result_copy)
    one_line(str(caught.value), str(result_copy), *words, "run wsiseg predict again")


def test_the_results_predict_writes_open(small_published):
    labels, info = open_result(small_published)
    assert labels.shape == info.shape == (200, 300)


@pytest.mark.parametrize("fmt", ["geojson", "tiff", "png", "report"])
def test_an_export_of_an_edited_result_is_one_line(result_copy, tmp_path, fmt):
    edit_json(result_copy / "zarr.json", _set("scale_to_level0", [0, 0]))
    run = CliRunner().invoke(main, ["export", str(result_copy), "--to", fmt,
                                    "--out", str(tmp_path / "out")])
    assert run.exit_code == 1, run.output
    assert run.stderr.startswith("wsiseg: error: ") and run.stderr.count("\n") == 1
    one_line(run.stderr.strip(), "'scale_to_level0' = [0, 0]")
    assert "unexpected" not in run.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_report_json_never_holds_a_number_that_is_not_finite(small_published, tmp_path):
    json_path, _ = write_report(small_published, tmp_path, "r")
    json.loads(json_path.read_text(), parse_constant=lambda name: pytest.fail(name))
