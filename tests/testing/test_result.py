"""wsiseg.testing.write_result: a result store that wsiseg's own reader takes as finished."""

from __future__ import annotations

import numpy as np

from wsiseg.cards import ClassInfo
from wsiseg.result.store import open_result
from wsiseg.testing import write_result


def test_the_written_result_opens_with_its_map_and_frame(tmp_path):
    labels = np.arange(7 * 9, dtype=np.uint8).reshape(7, 9) % 3
    classes = [ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "a", (1, 2, 3)),
               ClassInfo(2, "b", (4, 5, 6))]
    path = write_result(tmp_path / "r.wsiseg.zarr", labels, classes, scale=(4.0, 2.0),
                        offset=(10, 20), slide_mpp=(0.5, 0.25), chunk=4)
    array, info = open_result(path)
    assert np.array_equal(array[...], labels) and array.chunks == (4, 4)
    assert info.classes == tuple(classes) and info.shape == (7, 9)
    assert info.scale_to_level0 == (4.0, 2.0) and info.offset_level0 == (10, 20)
    assert info.analysis_mpp == (2.0, 0.5)
    assert info.slide.dimensions == (10 + 36, 20 + 14)
