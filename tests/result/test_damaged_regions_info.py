"""ResultInfo's damaged regions: stored, read back, absent from older results, validated."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from wsiseg.cards import ClassInfo
from wsiseg.errors import ResultError
from wsiseg.result.info import DamagedArea, ResultInfo
from wsiseg.result.store import open_result
from wsiseg.testing import write_result


@pytest.fixture(scope="module")
def info(tmp_path_factory) -> ResultInfo:
    path = write_result(tmp_path_factory.mktemp("damaged_info") / "r.wsiseg.zarr",
                        np.zeros((64, 64), dtype=np.uint8),
                        (ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "x", (9, 9, 9))))
    return open_result(path)[1]


def test_damaged_regions_round_trip_and_measure(info):
    areas = (DamagedArea(0, (1024, 768, 512, 256), "Not a JPEG file"),
             DamagedArea(2, (0, 0, 4096, 4096), "cut short"))
    damaged = dataclasses.replace(info, damaged_regions=areas)
    attrs = json.loads(json.dumps(damaged.to_attrs()))
    assert attrs["damaged_count"] == 2
    assert attrs["damaged_regions"][0] == {"level": 0, "box_level0": [1024, 768, 512, 256],
                                           "reason": "Not a JPEG file"}
    back = ResultInfo.from_attrs(attrs, info.path)
    assert back == damaged and back.damaged_count == 2
    mpp_x, mpp_y = info.slide.mpp
    assert back.damaged_area_mm2 == pytest.approx((512 * 256 + 4096 ** 2) * mpp_x * mpp_y / 1e6)


def test_results_without_damage_keys_have_none(info):
    attrs = json.loads(json.dumps(info.to_attrs()))
    assert attrs["damaged_count"] == 0 and attrs["damaged_regions"] == []
    del attrs["damaged_count"], attrs["damaged_regions"]
    assert ResultInfo.from_attrs(attrs, info.path).damaged_regions == ()


@pytest.mark.parametrize("edit,words", [
    (lambda a: a.update(damaged_count=3), "'damaged_count' is 3"),
    (lambda a: a["damaged_regions"].append({"level": 0, "box_level0": [1, 2, 3]}),
     "damaged_regions[0].box_level0"),
])
def test_inconsistent_damage_records_are_refused(info, edit, words):
    attrs = json.loads(json.dumps(info.to_attrs()))
    edit(attrs)
    with pytest.raises(ResultError) as err:
        ResultInfo.from_attrs(attrs, info.path)
    assert words in str(err.value) and "not a finished wsiseg result" in str(err.value)
