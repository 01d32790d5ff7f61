"""The colour-sanity warnings a result records: written, read back, absent in older results."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import zarr

from wsiseg.cards import ClassInfo
from wsiseg.errors import ResultError
from wsiseg.result.info import ResultInfo
from wsiseg.testing import write_result


@pytest.fixture
def info(tmp_path):
    path = write_result(tmp_path / "r.wsiseg.zarr", np.zeros((8, 8), np.uint8),
                        [ClassInfo(0, "background", (0, 0, 0))])
    return ResultInfo.from_attrs(zarr.open_group(str(path), mode="r").attrs["wsiseg"], path)


def test_warnings_round_trip(info):
    warned = dataclasses.replace(info, warnings=("glass is not white (...)", "tissue covers"))
    attrs = warned.to_attrs()
    assert attrs["warnings"] == ["glass is not white (...)", "tissue covers"]
    assert ResultInfo.from_attrs(attrs, info.path).warnings == warned.warnings


def test_results_written_before_warnings_have_none(info):
    attrs = info.to_attrs()
    del attrs["warnings"]
    assert ResultInfo.from_attrs(attrs, info.path).warnings == ()


def test_ill_typed_warnings_are_refused_in_one_line(info):
    attrs = dict(info.to_attrs(), warnings="glass is not white")
    with pytest.raises(ResultError, match=r"\('warnings' is 'glass is not white', not a list "
                                          r"of text\); give the .zarr"):
        ResultInfo.from_attrs(attrs, info.path)
