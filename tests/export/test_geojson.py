"""The GeoJSON export: outlines that rasterise back to the map, valid, in the right frame."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import shapely
import zarr
from click.testing import CliRunner
from scipy import ndimage

from wsiseg.cards import ClassInfo
from wsiseg.cli.main import main
from wsiseg.errors import ConfigError
from wsiseg.export.geojson import write_geojson
from wsiseg.result.store import result_array
from wsiseg.testing import result as testing_result

CLASSES = [{"index": i, "name": name, "color": colour} for i, (name, colour) in enumerate(
    [("background", [0, 0, 0]), ("tumour", [200, 0, 0]), ("stroma", [0, 150, 0]),
     ("necrosis", [0, 0, 200])])]


def write_result(path: Path, labels: np.ndarray, scale=(2.0, 2.0), offset=(0, 0),
                 slide_mpp=(0.5, 0.5), chunk=64) -> Path:
    """A minimal result store holding ``labels`` (what open_result and the export read)."""
    classes = [ClassInfo(c["index"], c["name"], tuple(c["color"])) for c in CLASSES]
    return testing_result.write_result(path, labels, classes, scale=scale, offset=offset,
                                       slide_mpp=slide_mpp, chunk=chunk)


def read_features(path: Path) -> tuple[dict, list[dict], np.ndarray]:
    collection = json.loads(path.read_text())
    features = collection["features"]
    geometries = np.array([shapely.geometry.shape(f["geometry"]) for f in features],
                          dtype=object)
    return collection, features, geometries


def rasterise(features, geometries, shape, index_of, scale, origin) -> np.ndarray:
    """The class of each map pixel whose centre a feature contains (level-0 coordinates)."""
    out = np.zeros(shape, dtype=np.uint8)
    for feature, geometry in zip(features, geometries):
        # Only the map pixels under the feature's bounding box.
        x0, y0, x1, y1 = geometry.bounds
        c0, c1 = int((x0 - origin[0]) // scale[0]), int(np.ceil((x1 - origin[0]) / scale[0]))
        r0, r1 = int((y0 - origin[1]) // scale[1]), int(np.ceil((y1 - origin[1]) / scale[1]))
        r0, r1, c0, c1 = max(r0, 0), min(r1, shape[0]), max(c0, 0), min(c1, shape[1])
        rows, cols = np.mgrid[r0:r1, c0:c1] + 0.5
        shapely.prepare(geometry)
        inside = shapely.contains_xy(geometry, origin[0] + cols * scale[0],
                                     origin[1] + rows * scale[1])
        window = out[r0:r1, c0:c1]
        assert not (window[inside] > 0).any(), "features overlap"
        window[inside] = index_of[feature["properties"]["classification"]["name"]]
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def tricky_map() -> np.ndarray:
    """Blobs with holes, touching classes, corner-only contacts and regions across band edges."""
    rng = np.random.default_rng(3)
    noise = ndimage.zoom(rng.random((20, 24)), 10, order=1)
    labels = np.digitize(noise, [0.45, 0.6, 0.75]).astype(np.uint8)  # 200 x 240
    labels[:, 160:] = 0
    # A tumour ring across the band edge at row 64, with a stroma island in its hole that
    # touches it, and a necrosis speck in the island.
    labels[40:100, 170:230] = 1
    labels[55:85, 185:215] = 2
    labels[68:72, 198:202] = 3
    # A diagonal chain of necrosis pixels crossing the band edge at row 128.
    for i in range(12):
        labels[122 + i, 170 + i] = 3
    # A tumour square ring whose hole touches the outside at one corner only, and a hole
    # made of two pixels that touch at a corner.
    labels[140:150, 170:180] = 1
    labels[141:149, 171:179] = 0
    labels[140, 170] = 0
    labels[141, 171] = 0
    labels[160:170, 200:210] = 1
    labels[163, 203] = labels[164, 204] = 0
    # Pixels of two classes meeting at a corner (a checkerboard).
    labels[180:184, 170:174] = np.indices((4, 4)).sum(axis=0) % 2 + 2
    return labels


@pytest.fixture(scope="module")
def tricky(tmp_path_factory):
    labels = tricky_map()
    path = write_result(tmp_path_factory.mktemp("tricky") / "tricky.wsiseg.zarr", labels)
    return path, labels


@pytest.mark.parametrize("simplify_um", [None, 0.0])
def test_outlines_rasterise_back_to_the_map(tricky, tmp_path, simplify_um):
    path, labels = tricky
    written = write_geojson(path, tmp_path, "tricky", simplify_um=simplify_um)
    assert written == [tmp_path / "tricky.geojson"] and not list(tmp_path.glob("*.partial"))
    collection, features, geometries = read_features(written[0])
    assert collection["type"] == "FeatureCollection"
    assert shapely.is_valid(geometries).all()
    index_of = {c["name"]: c["index"] for c in CLASSES}
    back = rasterise(features, geometries, labels.shape, index_of, (2.0, 2.0), (0.0, 0.0))
    for c in range(1, 4):
        score = iou(back == c, labels == c)
        assert score == 1.0 if simplify_um == 0 else score >= 0.99, (c, score)
    # One feature per connected region: pixels meeting only at a corner are separate regions.
    regions = sum(ndimage.label(labels == c)[1] for c in range(1, 4))
    assert len(features) == regions
    for feature in features:
        props = feature["properties"]
        assert props["objectType"] == "annotation" and props["isLocked"] is False
        colour = CLASSES[index_of[props["classification"]["name"]]]["color"]
        assert props["classification"]["color"] == colour
        assert feature["geometry"]["type"] in ("Polygon", "MultiPolygon")
    assert collection["wsiseg"]["model"] == "test-model"
    assert collection["wsiseg"]["slide"] == "slide.svs"


def test_holes_survive(tricky, tmp_path):
    path, _ = tricky
    _, features, geometries = read_features(write_geojson(path, tmp_path, "tricky")[0])
    tumour = [g for f, g in zip(features, geometries)
              if f["properties"]["classification"]["name"] == "tumour"]
    # The big ring (level-0 x 340..460, y 80..200) has the stroma island as its hole.
    ring = [g for g in tumour if g.bounds == (340.0, 80.0, 460.0, 200.0)]
    assert len(ring) == 1 and len(ring[0].interiors) == 1
    assert shapely.Polygon(ring[0].interiors[0]).area == pytest.approx(60 * 60)
    # The ring whose hole reaches the outside at a corner, and the one with a pinched hole.
    pinched = [g for g in tumour if g.bounds == (340.0, 280.0, 360.0, 300.0)]
    assert len(pinched) == 1 and pinched[0].area == pytest.approx((100 - 64 - 1) * 4)
    twin = [g for g in tumour if g.bounds == (400.0, 320.0, 420.0, 340.0)]
    assert len(twin) == 1 and twin[0].area == pytest.approx((100 - 2) * 4)


def test_simplified_classes_keep_shared_edges(tricky, tmp_path):
    path, labels = tricky
    exact = read_features(write_geojson(path, tmp_path, "exact", simplify_um=0)[0])[2]
    features, simple = read_features(write_geojson(path, tmp_path, "simple",
                                                   simplify_um=2.0)[0])[1:]
    assert shapely.is_valid(simple).all()
    assert shapely.get_num_coordinates(simple).sum() < 0.8 * shapely.get_num_coordinates(exact).sum()
    # Simplified together, neighbouring regions neither overlap nor leave gaps between them.
    assert shapely.union_all(simple).area == pytest.approx(shapely.area(simple).sum())
    assert shapely.union_all(simple).area == pytest.approx(shapely.union_all(exact).area,
                                                           rel=0.02)
    for c in CLASSES[1:]:
        mine = [g for f, g in zip(features, simple)
                if f["properties"]["classification"]["name"] == c["name"]]
        assert shapely.union_all(mine).area == pytest.approx((labels == c["index"]).sum() * 4,
                                                             rel=0.05)


@pytest.mark.parametrize("origin, expected", [("level0", (1020, 712, 1024, 716)),
                                              ("bounds", (20, 12, 24, 16))])
def test_bounds_offset(tmp_path, origin, expected):
    labels = np.zeros((10, 12), dtype=np.uint8)
    labels[3, 5] = 2
    path = write_result(tmp_path / "offset.wsiseg.zarr", labels, scale=(4, 4),
                        offset=(1000, 700))
    collection, features, geometries = read_features(
        write_geojson(path, tmp_path, "offset", origin=origin)[0])
    assert len(features) == 1 and geometries[0].bounds == expected
    assert collection["wsiseg"]["origin"] == origin


def test_min_area_drops_specks_and_areas_count_pixels(tmp_path):
    labels = np.zeros((100, 90), dtype=np.uint8)
    labels[10:40, 10:50] = 1  # 1200 px
    labels[60:63, 60:62] = 1  # 6 px
    labels[80, 80] = 3  # 1 px
    labels[50:95, 5:30] = 2  # 1125 px
    labels[70:75, 12:20] = 0  # a hole of 40 px
    path = write_result(tmp_path / "specks.wsiseg.zarr", labels, scale=(2, 2),
                        slide_mpp=(0.25, 0.3))
    pixel_um2 = 0.5 * 0.6
    _, features, _ = read_features(write_geojson(path, tmp_path, "all", simplify_um=0)[0])
    areas = sorted(f["properties"]["measurements"]["Area um^2"] for f in features)
    assert areas == pytest.approx([1 * pixel_um2, 6 * pixel_um2, 1085 * pixel_um2,
                                   1200 * pixel_um2])
    _, features, _ = read_features(write_geojson(path, tmp_path, "large", simplify_um=0,
                                                 min_area_um2=7 * pixel_um2)[0])
    areas = sorted(f["properties"]["measurements"]["Area um^2"] for f in features)
    assert areas == pytest.approx([1085 * pixel_um2, 1200 * pixel_um2])


def test_unknown_origin_is_refused(tricky, tmp_path):
    path, _ = tricky
    with pytest.raises(ConfigError, match="origin"):
        write_geojson(path, tmp_path, "tricky", origin="qupath")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_real_slide_outlines_match_the_map(cmu_result, tmp_path):
    group = zarr.open_group(str(cmu_result), mode="r")
    attrs = group.attrs["wsiseg"]
    labels = result_array(group, "labels")[...]
    _, features, geometries = read_features(write_geojson(cmu_result, tmp_path, "cmu")[0])
    assert shapely.is_valid(geometries).all()
    index_of = {c["name"]: c["index"] for c in attrs["classes"]}
    back = rasterise(features, geometries, labels.shape, index_of, attrs["scale_to_level0"],
                     (0.0, 0.0))
    present = [c for c in range(1, len(attrs["classes"])) if (labels == c).any()]
    assert present
    for c in present:
        assert iou(back == c, labels == c) >= 0.99, c


@pytest.mark.slow
def test_export_command_writes_geojson(cmu_result, tmp_path):
    result = CliRunner().invoke(main, ["export", str(cmu_result), "--to", "geojson", "--out",
                                       str(tmp_path)])
    assert result.exit_code == 0, result.output
    collection = json.loads((tmp_path / "cmu.geojson").read_text())
    assert collection["features"] and collection["wsiseg"]["origin"] == "bounds"


def test_features_keep_their_ids_across_exports_and_carry_their_origin(tricky, tmp_path):
    path, _ = tricky
    first = json.loads(write_geojson(path, tmp_path, "a")[0].read_text())["features"]
    again = json.loads(write_geojson(path, tmp_path, "b")[0].read_text())["features"]
    ids = [f["id"] for f in first]
    # One UUID per region, the same at every export of the result, so QuPath replaces the
    # objects of an earlier import instead of adding copies.
    assert len(set(ids)) == len(ids) and ids == [f["id"] for f in again]
    assert all(uuid.UUID(i).version == 5 for i in ids)
    # Another outline tolerance makes other regions: other ids.
    coarse = json.loads(write_geojson(path, tmp_path, "c", simplify_um=8.0)[0]
                        .read_text())["features"]
    assert {f["id"] for f in coarse} != set(ids)
    # QuPath keeps only properties: what made the annotation is in each one's metadata.
    _, info = _info(path)
    for feature in first:
        metadata = feature["properties"]["metadata"]
        assert metadata["wsiseg_model"] == info.model.name
        assert metadata["wsiseg_version"] == info.version
        assert all(isinstance(v, str) for v in metadata.values())


def _info(path):
    from wsiseg.result.store import open_result

    return open_result(path)


@pytest.mark.slow
def test_class_names_rename_classes_for_qupath(cmu_result, tmp_path):
    _, info = _info(cmu_result)
    present = {f["properties"]["classification"]["name"] for f in json.loads(
        write_geojson(cmu_result, tmp_path, "plain")[0].read_text())["features"]}
    old = min(present)
    result = CliRunner().invoke(main, ["export", str(cmu_result), "--to", "geojson", "--out",
                                       str(tmp_path / "named"), "--class-names",
                                       f"{old}=Tumor"])
    assert result.exit_code == 0, result.output
    names = {f["properties"]["classification"]["name"] for f in json.loads(
        (tmp_path / "named" / "cmu.geojson").read_text())["features"]}
    assert names == (present - {old}) | {"Tumor"}
    # A class the result does not have, or a pair that is not CLASS=NAME: one line, no file.
    for value, words in (("glands=Tumor", ["'glands'", info.classes[1].name]),
                         ("Tumor", ["is not CLASS=NAME"])):
        bad = CliRunner().invoke(main, ["export", str(cmu_result), "--to", "geojson", "--out",
                                        str(tmp_path / "bad"), "--class-names", value])
        assert bad.exit_code in (1, 2) and "Traceback" not in bad.output
        assert all(w in bad.output for w in words), bad.output
        assert not (tmp_path / "bad" / "cmu.geojson").exists()
