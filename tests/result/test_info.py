"""ResultInfo: what a result records, typed; stored as JSON and read back validated."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import zarr

from wsiseg.cards import ClassInfo
from wsiseg.errors import ResultError
from wsiseg.inference.pipeline import PredictConfig, predict_slide
from wsiseg.models import load_model
from wsiseg.result.info import LAYOUT, ResultInfo
from wsiseg.result.store import open_result
from wsiseg.testing import write_result

CLASSES = (ClassInfo(0, "background", (255, 255, 255)), ClassInfo(1, "tissue", (0, 128, 0)))


@pytest.fixture(scope="module")
def predicted(svs_x40, pixel_model, tmp_path_factory) -> ResultInfo:
    path, _ = pixel_model
    out = tmp_path_factory.mktemp("info") / "x40.wsiseg.zarr"
    return predict_slide(svs_x40.path, PredictConfig(model=str(path), out=str(out),
                                                     progress=False))


def edited_copy(info: ResultInfo, folder, edit) -> ResultInfo:
    """A copy of the result in ``folder`` whose stored attributes ``edit`` changed in place."""
    copy = folder / info.path.name
    shutil.copytree(info.path, copy)
    group = zarr.open_group(str(copy), mode="a")
    attrs = json.loads(json.dumps(group.attrs["wsiseg"]))
    edit(attrs)
    group.attrs["wsiseg"] = attrs
    return copy


def test_round_trip_through_json_is_equal(predicted):
    attrs = json.loads(json.dumps(predicted.to_attrs()))
    assert ResultInfo.from_attrs(attrs, predicted.path) == predicted


def test_prediction_returns_what_the_result_stores(predicted, svs_x40, pixel_model):
    labels, info = open_result(predicted.path)
    # Publishing adds the review reasons, found from the arrays written.
    assert info.review is not None
    assert info == predicted
    assert zarr.open_group(str(predicted.path), mode="r").attrs["wsiseg"]["layout"] == LAYOUT == 2
    card = load_model(str(pixel_model[0])).card
    assert info.slide.path == svs_x40.path.resolve()
    assert info.slide.dimensions == (2000, 1600) and info.slide.mpp == (0.25, 0.25)
    assert info.slide.vendor == "aperio" and info.slide.mpp_source == "metadata"
    assert info.slide.size_bytes == svs_x40.path.stat().st_size
    assert info.model.name == card.name and info.model.card == card.to_dict()
    assert info.classes == card.classes
    assert info.class_names == ("class0", "class1", "class2", "class3")
    assert (info.patch_size, info.stride) == (card.patch_size, card.stride)
    assert info.analysis_mpp == (card.mpp, card.mpp) and info.scale_to_level0 == (4.0, 4.0)
    assert info.offset_level0 == (0, 0) and info.shape == labels.shape == (400, 500)
    assert 0 < info.patches_kept <= info.patches_predicted and info.patches_kept <= info.patches_total
    assert info.config["model"] == str(pixel_model[0]) and "progress" not in info.config


def test_a_newer_layout_is_refused_naming_it(predicted, tmp_path):
    copy = edited_copy(predicted, tmp_path, lambda a: a.update(layout=99))
    with pytest.raises(ResultError) as err:
        open_result(copy)
    message = str(err.value)
    assert str(copy) in message and "layout 99" in message and f"reads layout {LAYOUT}" in message
    assert "upgrade wsiseg" in message and "\n" not in message
    # The layout is read first: a newer one may have renamed everything else.
    with pytest.raises(ResultError, match="layout 3, .* upgrade wsiseg"):
        ResultInfo.from_attrs({"layout": 3}, tmp_path / "new.wsiseg.zarr")


def test_a_result_written_before_layouts_were_recorded_opens_as_layout_1(tmp_path):
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4) % 2
    old = write_result(tmp_path / "old.wsiseg.zarr", labels, CLASSES, layout=1)
    group = zarr.open_group(str(old), mode="r+")
    attrs = group.attrs["wsiseg"]
    attrs.pop("layout")
    group.attrs["wsiseg"] = attrs
    array, info = open_result(old)
    assert info.layout == 1 and info.path == old and np.array_equal(array[:], labels)
    assert info.to_attrs() == {**attrs, "layout": 1}


def test_a_layout_2_store_that_claims_layout_1_is_refused_in_one_line(predicted, tmp_path):
    copy = edited_copy(predicted, tmp_path, lambda a: a.pop("layout"))
    with pytest.raises(ResultError, match=r"not a finished wsiseg result of layout 1 \(labels "
                                          r"is no array\)"):
        open_result(copy)


def _remove(path):
    def edit(attrs):
        *parents, key = path
        for name in parents:
            attrs = attrs[name]
        del attrs[key]
    return edit


@pytest.mark.parametrize("path, named", [
    (("scale_to_level0",), "'scale_to_level0'"),
    (("patches_predicted",), "'patches_predicted'"),
    (("slide", "mpp"), "'slide.mpp'"),
    (("tissue", "factor"), "'tissue.factor'"),
    (("classes", 1, "color"), "'classes[1].color'"),
])
def test_a_missing_key_is_one_line_naming_it(predicted, path, named, tmp_path):
    attrs = predicted.to_attrs()
    _remove(path)(attrs)
    with pytest.raises(ResultError) as err:
        ResultInfo.from_attrs(attrs, predicted.path)
    message = str(err.value)
    assert f"(no {named})" in message and str(predicted.path) in message
    assert "wsiseg predict" in message and "\n" not in message


def test_a_key_missing_on_disk_fails_in_open_result(predicted, tmp_path):
    copy = edited_copy(predicted, tmp_path, _remove(("offset_level0",)))
    with pytest.raises(ResultError, match=r"is not a finished wsiseg result \(no 'offset_level0'\)"):
        open_result(copy)


@pytest.mark.parametrize("key, value, says", [
    ("shape", "big", "'shape' is 'big', not 2 whole numbers"),
    ("sigma", True, "'sigma' is True, not a number"),
    ("slide", [1, 2], "'slide' is [1, 2], not an object"),
    ("layout", "1", "'layout' is '1', not a whole number"),
    ("layout", 0, "'layout' is 0, not 1 or more"),
])
def test_an_ill_typed_value_is_one_line_naming_it(predicted, key, value, says):
    attrs = predicted.to_attrs()
    attrs[key] = value
    with pytest.raises(ResultError) as err:
        ResultInfo.from_attrs(attrs, predicted.path)
    assert says in str(err.value) and "\n" not in str(err.value)
