"""The GeoJSON export's artefact annotations (``--qc-annotations``): each artefact region of
``labels/qc`` a QuPath annotation ``artefact: NAME`` in its colour, placed in level-0 pixels of
the frame as the class regions are, after them; refused in one line for a result without."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from click.testing import CliRunner

from wsiseg.cards import ClassInfo
from wsiseg.cli.main import main
from wsiseg.errors import ResultError
from wsiseg.export import ExportOptions, export_result
from wsiseg.export.geojson import write_geojson
from wsiseg.slide.artefacts import QC_BLUR, QC_COLOURS, QC_FOLD, QC_PEN
from wsiseg.testing.result import relabel, write_result

CLASSES = [ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "tumour", (200, 0, 0)),
           ClassInfo(2, "stroma", (0, 150, 0))]
SCALE = (2.0, 2.0)  # level-0 pixels per map pixel
OFFSET = (6, 10)  # the map's (and the qc grid's) origin at level 0: a bounds offset
FACTOR = 4  # map pixels per qc pixel: a qc pixel is 8 level-0 pixels a side
QC_PX = SCALE[0] * FACTOR


def _labels() -> np.ndarray:
    labels = np.zeros((50, 62), dtype=np.uint8)  # qc: 13 x 16, the last row and column partial
    labels[5:45, 4:40] = 1
    labels[20:30, 30:58] = 2
    return labels


def _qc() -> np.ndarray:
    qc = np.zeros((13, 16), dtype=np.uint8)
    qc[2:6, 3:8] = QC_FOLD  # level-0 box: x 6 + [24, 64), y 10 + [16, 48)
    qc[8:10, 9:11] = QC_PEN
    qc[8:10, 12:14] = QC_PEN  # a second pen region
    qc[12, 14:16] = QC_BLUR  # the partial last row: reaches 2 map rows past the map
    return qc


@pytest.fixture(scope="module")
def qc_result(tmp_path_factory) -> Path:
    return write_result(tmp_path_factory.mktemp("qcgeo") / "s.wsiseg.zarr", _labels(), CLASSES,
                        scale=SCALE, offset=OFFSET, qc=_qc(), tissue_factor=FACTOR)


def _features(path: Path) -> tuple[dict, list[dict]]:
    collection = json.loads(path.read_text())
    return collection, collection["features"]


def _artefacts(features: list[dict]) -> list[dict]:
    return [f for f in features
            if f["properties"]["classification"]["name"].startswith("artefact: ")]


@pytest.mark.parametrize("origin", ["bounds", "level0"])
def test_artefact_regions_are_annotations_on_their_level0_boxes(qc_result, tmp_path, origin):
    (path,) = write_geojson(qc_result, tmp_path, "s", origin=origin, qc_annotations=True)
    collection, features = _features(path)
    assert collection["wsiseg"]["qc_annotations"] is True
    artefacts = _artefacts(features)
    # The class regions first, then the artefacts.
    names = [f["properties"]["classification"]["name"] for f in features]
    assert names[len(features) - len(artefacts):] == [
        f["properties"]["classification"]["name"] for f in artefacts]
    assert sorted(f["properties"]["classification"]["name"] for f in artefacts) == [
        "artefact: fold or dark", "artefact: out of focus", "artefact: pen", "artefact: pen"]
    shift = np.array(OFFSET if origin == "level0" else (0, 0), dtype=float)
    by_name: dict[str, list[tuple[float, ...]]] = {}
    for feature in artefacts:
        properties = feature["properties"]
        assert properties["objectType"] == "annotation"
        name = properties["classification"]["name"]
        value = {"artefact: pen": QC_PEN, "artefact: fold or dark": QC_FOLD,
                 "artefact: out of focus": QC_BLUR}[name]
        assert properties["classification"]["color"] == list(QC_COLOURS[value])
        geometry = shapely.geometry.shape(feature["geometry"])
        assert geometry.is_valid
        bounds = np.array(geometry.bounds) - np.r_[shift, shift]
        by_name.setdefault(name, []).append(tuple(bounds))
        assert properties["measurements"]["Area um^2"] == pytest.approx(
            geometry.area * 0.25 * 0.25)
    # The painted squares' level-0 boxes (x0, y0, x1, y1) in the bounds frame: qc pixel edges.
    assert by_name["artefact: fold or dark"] == [(3 * QC_PX, 2 * QC_PX, 8 * QC_PX, 6 * QC_PX)]
    assert sorted(by_name["artefact: pen"]) == [(9 * QC_PX, 8 * QC_PX, 11 * QC_PX, 10 * QC_PX),
                                                (12 * QC_PX, 8 * QC_PX, 14 * QC_PX, 10 * QC_PX)]
    # The last qc row and column reach past the map's 50 rows and 62 columns (100 and 124
    # level-0 px): cut at the map's edge.
    assert by_name["artefact: out of focus"] == [(14 * QC_PX, 12 * QC_PX, 124.0, 100.0)]


def test_class_features_are_unchanged_and_off_by_default(qc_result, tmp_path):
    (plain,) = export_result(qc_result, ["geojson"], tmp_path / "plain", ExportOptions())
    (both,) = export_result(qc_result, ["geojson"], tmp_path / "qc",
                            ExportOptions(qc_annotations=True))
    plain_collection, plain_features = _features(plain)
    both_features = _features(both)[1]
    assert not _artefacts(plain_features)
    assert "qc_annotations" not in plain_collection["wsiseg"]
    assert len(_artefacts(both_features)) == 4
    # The class annotations, ids included, are those of the export without artefacts.
    assert both_features[: len(plain_features)] == plain_features
    ids = [f["id"] for f in both_features]
    assert len(set(ids)) == len(ids)
    # Exported again, the artefacts keep their ids (QuPath replaces rather than duplicates).
    (again,) = export_result(qc_result, ["geojson"], tmp_path / "again",
                             ExportOptions(qc_annotations=True))
    assert [f["id"] for f in _features(again)[1]] == ids


def test_min_area_drops_small_artefacts_too(qc_result, tmp_path):
    # The pen squares are 16 x 16 level-0 px (16 um^2 at 0.25 um/px), the fold 40 x 32 (80).
    (path,) = write_geojson(qc_result, tmp_path, "s", min_area_um2=30, qc_annotations=True)
    assert [f["properties"]["classification"]["name"]
            for f in _artefacts(_features(path)[1])] == ["artefact: fold or dark"]


def test_names_and_colours_come_from_the_label_image(tmp_path):
    path = write_result(tmp_path / "r.wsiseg.zarr", _labels(), CLASSES, scale=SCALE,
                        offset=OFFSET, qc=_qc(), tissue_factor=FACTOR)
    relabel(path, "qc", QC_PEN, "ink", (10, 20, 30, 255))
    (out,) = write_geojson(path, tmp_path, "r", qc_annotations=True)
    inks = [f for f in _artefacts(_features(out)[1])
            if f["properties"]["classification"]["name"] == "artefact: ink"]
    assert len(inks) == 2
    assert all(f["properties"]["classification"]["color"] == [10, 20, 30] for f in inks)


def test_a_result_without_artefact_labels_is_refused_in_one_line(tmp_path):
    path = write_result(tmp_path / "old.wsiseg.zarr", _labels(), CLASSES, scale=SCALE)
    with pytest.raises(ResultError, match="has no artefact labels"):
        write_geojson(path, tmp_path, "old", qc_annotations=True)
    assert not (tmp_path / "old.geojson").exists()
    run = CliRunner().invoke(main, ["export", str(path), "--to", "geojson", "--qc-annotations",
                                    "--out", str(tmp_path / "out")])
    assert run.exit_code == 1, run.output
    lines = run.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wsiseg: error: ")
    assert str(path) in lines[0] and "--qc off" in lines[0]
    assert "Traceback" not in run.output
    assert not list((tmp_path / "out").glob("*.geojson"))
