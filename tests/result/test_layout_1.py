"""Results of layout 1 (written by earlier versions: the map in the root array ``labels``, its
levels in ``labels_1``, ..., ``tissue`` beside them) still open, are checked for lost chunks
and export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from wsiseg.cards import ClassInfo
from wsiseg.errors import ResultError
from wsiseg.export import ExportOptions, export_result
from wsiseg.result.info import LAYOUT
from wsiseg.result.integrity import is_complete
from wsiseg.result.pyramid import level_path, mode_downsample, pyramid_paths, write_pyramid
from wsiseg.result.reading import result_reads
from wsiseg.result.store import label_pyramid, open_result, result_array
from wsiseg.testing import write_result

CLASSES = (ClassInfo(0, "background", (255, 255, 255)), ClassInfo(1, "tissue", (0, 128, 0)),
           ClassInfo(2, "tumour", (200, 0, 0)))


def _map() -> np.ndarray:
    labels = np.zeros((300, 280), dtype=np.uint8)
    labels[40:260, 20:275] = 1  # something in every chunk: all are stored
    labels[100:140, 60:120] = 2
    return labels


def write_layout_1(path: Path, labels: np.ndarray) -> Path:
    """A result as wsiseg wrote it in layout 1: arrays at the root, the label pyramid's NGFF
    metadata on the root, and the record of chunk files by array name."""
    write_result(path, labels, CLASSES, scale=(4.0, 4.0), offset=(8, 12), layout=1)
    group = zarr.open_group(str(path), mode="r+")
    paths = write_pyramid(group["labels"], group, len(CLASSES), path=level_path)
    tissue = group.create_array("tissue", shape=(30, 28), chunks=(30, 28), dtype="uint8",
                                fill_value=0, dimension_names=("y", "x"))
    tissue[...] = labels[::10, ::10] > 0
    attrs = group.attrs["wsiseg"]
    attrs["tissue"]["factor"] = 10  # the mask is 10 times coarser than the map
    group.attrs["wsiseg"] = attrs
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "name": "labels", "axes": [{"name": "y", "type": "space", "unit": "micrometer"},
                                   {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": [{"path": p, "coordinateTransformations": [
            {"type": "scale", "scale": [2.0 ** k, 2.0 ** k]},
            {"type": "translation", "translation": [0.0, 0.0]}]} for k, p in enumerate(paths)],
    }]}
    counts = {"labels": 25, "labels_1": 9, "tissue": 1}  # chunks of 64, then 150 x 140
    group.attrs["wsiseg_chunks"] = counts
    return path


@pytest.fixture
def old_result(tmp_path) -> Path:
    return write_layout_1(tmp_path / "old.wsiseg.zarr", _map())


def test_a_layout_1_result_opens_from_its_old_paths(old_result):
    assert LAYOUT == 2
    labels, info = open_result(old_result)
    assert info.layout == 1 and labels.path == "labels"
    assert np.array_equal(labels[:], _map())
    assert is_complete(old_result)
    group = zarr.open_group(str(old_result), mode="r")
    assert pyramid_paths(group) == ["labels", "labels_1"]
    levels = label_pyramid(group)
    assert np.array_equal(levels[1][:], mode_downsample(_map(), 3))
    assert result_array(group, "tissue").path == "tissue"
    with pytest.raises(KeyError):
        result_array(group, "probabilities")


def test_a_layout_1_result_that_lost_a_chunk_is_refused(old_result):
    (old_result / "labels_1" / "c" / "1" / "0").unlink()
    assert not is_complete(old_result)
    with pytest.raises(ResultError, match=r"labels_1: 1 of 9 chunks missing \(labels_1/c/1/0\)"):
        open_result(old_result)


def test_a_layout_1_result_exports(old_result, tmp_path):
    written = export_result(old_result, ["tiff", "geojson", "report"], tmp_path,
                            ExportOptions(origin="bounds"))
    assert {p.suffix for p in written} >= {".tif", ".geojson"}
    tif = next(p for p in written if p.name.endswith(".labels.tif"))
    with tifffile.TiffFile(tif) as f:
        assert np.array_equal(f.pages[0].asarray(), _map())
        assert np.array_equal(f.pages[1].asarray(), mode_downsample(_map(), 3))
    geojson = json.loads(next(p for p in written if p.suffix == ".geojson").read_text())
    names = {f["properties"].get("classification", {}).get("name")
             for f in geojson["features"]}
    assert {"tissue", "tumour"} <= names
    with result_reads(old_result):
        assert open_result(old_result)[0][120, 90] == 2
