"""wsiseg.testing.write_result: a result store that wsiseg's own reader takes as finished."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_artefact_labels_on_a_coarser_grid_read_back_with_their_areas(tmp_path):
    from wsiseg.export.report import build_report
    from wsiseg.result.store import open_result_group, qc_array
    from wsiseg.slide.artefacts import QC_FOLD, QC_PEN

    labels = np.zeros((40, 60), dtype=np.uint8)
    labels[5:35, 5:55] = 1
    qc = np.zeros((10, 15), dtype=np.uint8)
    qc[2:5, 3:8] = QC_PEN
    qc[6:8, 9:12] = QC_FOLD
    path = write_result(tmp_path / "qc.wsiseg.zarr", labels,
                        [ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "t", (200, 0, 0))],
                        scale=(4.0, 4.0), qc=qc, tissue_factor=4)
    _, info = open_result(path)
    assert info.qc == "record" and info.tissue.factor == 4
    np.testing.assert_array_equal(qc_array(open_result_group(path), info)[:], qc)
    report = build_report(path)
    # A qc pixel is 4 x 4 map pixels of 1 um: 16 um^2.
    assert report["qc"]["pen"] == pytest.approx(15 * 16e-6)
    assert report["qc"]["fold or dark"] == pytest.approx(6 * 16e-6)
    with pytest.raises(ValueError, match="qc labels must be"):
        write_result(tmp_path / "bad.wsiseg.zarr", labels, [ClassInfo(0, "b", (0, 0, 0))],
                     qc=qc)
