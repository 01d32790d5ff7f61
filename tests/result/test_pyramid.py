"""The label pyramid and its OME-Zarr metadata: majority downsampling, shapes, consistency."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from wsiseg.inference.pipeline import PredictConfig, predict_slide
from wsiseg.result.pyramid import (
    level_shapes,
    max_downsample,
    mean_downsample,
    mode_downsample,
    pyramid_paths,
    write_pyramid,
)


def _reference_mode(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixel by pixel: most frequent class of each 2 x 2 block, ties to the higher class."""
    h, w = labels.shape
    padded = np.pad(labels, ((0, h % 2), (0, w % 2)), mode="edge")
    out = np.zeros(((h + 1) // 2, (w + 1) // 2), dtype=np.uint8)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            counts = np.bincount(padded[2 * i:2 * i + 2, 2 * j:2 * j + 2].ravel(),
                                 minlength=num_classes)
            out[i, j] = num_classes - 1 - np.argmax(counts[::-1])
    return out


def test_mode_downsample_matches_block_by_block_majority():
    rng = np.random.default_rng(3)
    for shape in [(8, 8), (7, 9), (1, 5), (5, 1)]:
        labels = rng.integers(0, 5, size=shape).astype(np.uint8)
        assert np.array_equal(mode_downsample(labels, 5), _reference_mode(labels, 5))


def test_ties_go_to_the_higher_class_and_majority_wins():
    block = np.array([[1, 3], [3, 1]], dtype=np.uint8)
    assert mode_downsample(block, 4)[0, 0] == 3
    block = np.array([[2, 2], [2, 5]], dtype=np.uint8)
    assert mode_downsample(block, 6)[0, 0] == 2


def test_level_shapes_halve_down_to_the_minimum():
    assert level_shapes(1000, 300, min_size=256) == [(1000, 300), (500, 150), (250, 75)]
    assert level_shapes(100, 100, min_size=256) == [(100, 100)]


def test_streamed_pyramid_equals_downsampling_the_whole_map():
    rng = np.random.default_rng(4)
    labels = np.kron(rng.integers(0, 4, size=(40, 53)), np.ones((7, 7), dtype=np.int64))
    labels = labels.astype(np.uint8)[:275, :370]
    group = zarr.open_group(store=zarr.storage.MemoryStore(), mode="w", zarr_format=3)
    base = group.create_array("labels/classes/0", shape=labels.shape, chunks=(32, 64),
                              dtype="uint8")
    base[:] = labels
    paths = write_pyramid(base, group, 4, min_size=40)
    assert paths[:2] == ["labels/classes/0", "labels/classes/1"]
    expected = labels
    for path in paths[1:]:
        expected = mode_downsample(expected, 4)
        assert np.array_equal(group[path][:], expected), path
    assert max(group[paths[-1]].shape) <= 40 < max(group[paths[-2]].shape)


def test_a_pyramid_of_a_given_number_of_levels_and_reduction():
    mask = np.zeros((9, 7), dtype=np.uint8)
    mask[4, 5] = 1
    group = zarr.open_group(store=zarr.storage.MemoryStore(), mode="w", zarr_format=3)
    base = group.create_array("m/0", shape=mask.shape, chunks=(4, 4), dtype="uint8")
    base[:] = mask
    paths = write_pyramid(base, group, 2, path=lambda k: f"m/{k}", levels=5,
                          reduce=max_downsample)
    assert [group[p].shape for p in paths] == [(9, 7), (5, 4), (3, 2), (2, 1), (1, 1)]
    assert [int(group[p][:].sum()) for p in paths] == [1] * 5  # one damaged pixel stays
    assert group["m/1"][2, 2] == 1 and mode_downsample(mask, 2).sum() == 0


def test_level_shapes_of_a_given_number_of_levels_never_go_below_a_pixel():
    assert level_shapes(5, 3, levels=4) == [(5, 3), (3, 2), (2, 1), (1, 1)]
    assert level_shapes(1000, 300, levels=1) == [(1000, 300)]


def test_mean_downsample_rounds_the_mean_of_each_block():
    image = np.array([[[0, 1, 255], [2, 2, 255], [9, 9, 9]]], dtype=np.uint8)  # (1, 3, 3)
    out = mean_downsample(image)
    assert out.shape == (1, 2, 2)
    assert out[0, 0, 0] == 1 and out[0, 0, 1] == 255  # (0 + 1 + 2 + 2) / 4 = 1.25
    assert out[0, 1, 0] == 9  # the odd last row repeats itself


@pytest.fixture(scope="module")
def result(svs_x40, pixel_model, tmp_path_factory):
    path, _ = pixel_model
    out = tmp_path_factory.mktemp("pyr") / "x40.wsiseg.zarr"
    return predict_slide(svs_x40.path, PredictConfig(model=str(path), out=str(out))).path


def test_result_carries_ngff_metadata_consistent_with_its_arrays(result):
    group = zarr.open_group(str(result), mode="r")
    attrs = group.attrs["wsiseg"]
    assert "multiscales" in group.attrs["ome"]  # the root: the picture of the slide
    assert group["labels"].attrs["ome"] == {"version": "0.5",
                                            "labels": ["classes", "tissue", "qc"]}
    ome = group["labels/classes"].attrs["ome"]
    assert ome["version"] == "0.5"
    (multiscale,) = ome["multiscales"]
    axes = [a["name"] for a in multiscale["axes"]]
    assert axes == ["y", "x"] and all(a["unit"] == "micrometer" for a in multiscale["axes"])
    assert multiscale["type"] == "mode" and "higher" in multiscale["metadata"]["method"]
    paths = pyramid_paths(group)
    assert paths[0] == "labels/classes/0"
    assert len(paths) == len(level_shapes(*group[paths[0]].shape))
    mpp0 = attrs["slide"]["mpp"]
    sx, sy = attrs["scale_to_level0"]
    ox, oy = attrs["offset_level0"]
    labels = group[paths[0]][:]
    num_classes = len(attrs["classes"])
    expected = labels
    extent = None
    for level, dataset in enumerate(multiscale["datasets"]):
        assert dataset["path"] == str(level)
        array = group[f"labels/classes/{dataset['path']}"]
        assert list(array.metadata.dimension_names) == axes
        if level:
            expected = mode_downsample(expected, num_classes)
        assert np.array_equal(array[:], expected)
        scale, translation = dataset["coordinateTransformations"]
        assert scale["type"] == "scale" and translation["type"] == "translation"
        f = 2 ** level
        assert scale["scale"] == pytest.approx([f * sy * mpp0[1], f * sx * mpp0[0]])
        assert scale["scale"] == pytest.approx([f * m for m in attrs["analysis_mpp"][::-1]])
        # Pixel centres, with the centre of the slide's level-0 pixel (0, 0) at the origin:
        # the first pixel's top-left corner is the map's origin at every level.
        corner = [t - s / 2 for t, s in zip(translation["translation"], scale["scale"])]
        assert corner == pytest.approx([(oy - 0.5) * mpp0[1], (ox - 0.5) * mpp0[0]])
        # Each level spans the map's extent, give or take the last (padded) pixel.
        span = [n * s for n, s in zip(array.shape, scale["scale"])]
        if extent is None:
            extent = span
        assert all(e <= s < e + ss for e, s, ss in zip(extent, span, scale["scale"]))
    label_meta = ome["image-label"]
    assert [c["label-value"] for c in label_meta["colors"]] == list(range(num_classes))
    assert [p["name"] for p in label_meta["properties"]] == [c["name"] for c in attrs["classes"]]
    assert label_meta["colors"][0]["rgba"][3] == 0  # background transparent
    assert label_meta["source"] == {"image": "../../"}
