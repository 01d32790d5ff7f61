"""A result is a valid OME-Zarr (NGFF 0.5) image: the slide's picture, with the class map, the
tissue mask and the damaged mask as label images, all in one micrometre frame.

Validated with ome-zarr-models (the spec's pydantic models) and read back with ome-zarr-py's
Reader (what napari-ome-zarr uses), on a slide whose scanned region starts at a bounds offset.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import zarr

from wsiseg.inference.pipeline import PredictConfig, predict_slide
from wsiseg.result.info import DamagedArea
from wsiseg.result.pyramid import level_shapes, mean_downsample, mode_downsample
from wsiseg.result.rows import FinishedRows
from wsiseg.result.store import label_pyramid, open_result, result_array
from wsiseg.result.writer import OutputWriter
from wsiseg.testing import area_downsample, synthetic_tissue, write_scn

ome_zarr_models = pytest.importorskip("ome_zarr_models")
pytest.importorskip("ome_zarr")

OFFSET = (1200, 600)  # level-0 pixels
MPP = 0.5  # level 0; the map is 1.0 um/px (2 x 2 slide pixels), the picture 10 um/px


@pytest.fixture(scope="module")
def result(pixel_model, tmp_path_factory):
    """(result path, the slide's level-0 RGB)."""
    model_path, _ = pixel_model
    rgb, _ = synthetic_tissue(600, 800, seed=11, tissue_fraction=0.5)
    folder = tmp_path_factory.mktemp("ngff")
    slide = write_scn(folder / "offset.scn", rgb, mpp=MPP, offset=OFFSET)
    out = folder / "offset.wsiseg.zarr"
    predict_slide(slide, PredictConfig(model=str(model_path), out=str(out), probabilities=True,
                                       progress=False))
    return out, rgb


def _transforms(dataset) -> tuple[list[float], list[float]]:
    scale, translation = dataset["coordinateTransformations"]
    assert scale["type"] == "scale" and translation["type"] == "translation"
    return scale["scale"], translation["translation"]


def test_the_root_validates_as_an_ngff_image_with_its_label_images(result):
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel
    from ome_zarr_models.v05.labels import Labels

    path, _ = result
    group = zarr.open_group(str(path), mode="r")
    image = Image.from_zarr(group)  # also checks every label image has the image's levels
    (multiscale,) = image.ome_attributes.multiscales
    assert [a.name for a in multiscale.axes] == ["c", "y", "x"]
    assert [a.type for a in multiscale.axes] == ["channel", "space", "space"]
    assert [d.path for d in multiscale.datasets] == ["0", "1"]
    assert image.labels is not None
    assert image.labels.label_paths == ["classes", "tissue", "qc"]
    assert Labels.from_zarr(group["labels"]).label_paths == ["classes", "tissue", "qc"]
    classes = ImageLabel.from_zarr(group["labels/classes"]).ome_attributes
    info = open_result(path)[1]
    assert [c.label_value for c in classes.image_label.colors] == [c.index for c in info.classes]
    assert classes.image_label.source.image == "../../"
    assert classes.multiscales[0].type == "mode"
    assert "ties" in classes.multiscales[0].metadata["method"]
    ImageLabel.from_zarr(group["labels/tissue"])
    # The probabilities are no NGFF image: outside the image's arrays and the labels group.
    assert result_array(group, "probabilities").shape == (4, *info.shape)
    assert "probabilities" not in group and "probabilities" not in group["labels"]


def test_the_image_is_the_slide_and_the_label_images_are_the_map_and_mask(result):
    path, rgb = result
    group = zarr.open_group(str(path), mode="r")
    labels, info = open_result(path)
    assert labels.shape == info.shape == (300, 400)
    assert [a.path for a in label_pyramid(group)] == ["labels/classes/0", "labels/classes/1"]
    assert np.array_equal(group["labels/classes/1"][:], mode_downsample(labels[:], 4))
    factor = round(info.tissue.scale_to_level0[0])
    picture = group["0"][:]
    assert picture.dtype == np.uint8 and picture.shape == (3, 30, 40)
    expected = area_downsample(rgb, factor).transpose(2, 0, 1)
    assert np.abs(picture.astype(int) - expected).max() <= 2  # readers round by a grey level
    assert np.array_equal(group["1"][:], mean_downsample(picture))
    tissue = result_array(group, "tissue")
    assert tissue.shape == picture.shape[1:] and tissue[:].any()
    assert np.array_equal(group["labels/tissue/1"][:], mode_downsample(tissue[:], 2))
    assert group["labels/tissue/1"].shape == group["1"].shape[1:]


def test_every_multiscales_lies_in_the_slide_frame_in_micrometres(result):
    """The centre of the slide's level-0 pixel (0, 0) is the origin (as in an NGFF image of
    the slide itself); a pixel's translation is its centre; the bounds offset is included."""
    path, _ = result
    group = zarr.open_group(str(path), mode="r")
    info = open_result(path)[1]
    ox, oy = OFFSET
    # The scanned region's top-left corner: half a level-0 pixel before pixel (0, 0)'s centre.
    corner = [(oy - 0.5) * MPP, (ox - 0.5) * MPP]
    grids = {"": (1, [info.tissue.scale_to_level0[1] * MPP, info.tissue.scale_to_level0[0] * MPP]),
             "labels/classes": (0, [2 * MPP, 2 * MPP]),
             "labels/tissue": (0, [info.tissue.scale_to_level0[1] * MPP,
                                   info.tissue.scale_to_level0[0] * MPP])}
    levels = len(level_shapes(*info.shape))
    for name, (channel, pixel_um) in grids.items():
        (multiscale,) = (group[name] if name else group).attrs["ome"]["multiscales"]
        assert [a.get("unit") for a in multiscale["axes"][channel:]] == ["micrometer"] * 2
        assert len(multiscale["datasets"]) == levels
        for level, dataset in enumerate(multiscale["datasets"]):
            scale, translation = _transforms(dataset)
            if channel:
                assert scale[0] == 1 and translation[0] == 0
                scale, translation = scale[1:], translation[1:]
            assert scale == pytest.approx([2 ** level * p for p in pixel_um]), name
            first = [t - s / 2 for t, s in zip(translation, scale)]
            assert first == pytest.approx(corner), (name, level)


def test_ome_zarr_py_reads_the_image_and_its_label_images(result):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    path, _ = result
    group = zarr.open_group(str(path), mode="r")
    nodes = list(Reader(parse_url(str(path)))())
    image = nodes[0]
    assert image.load(Multiscales) is not None and image.load(Label) is None
    assert [tuple(d.shape) for d in image.data] == [group["0"].shape, group["1"].shape]
    assert [a["name"] for a in image.metadata["axes"]] == ["c", "y", "x"]
    assert image.metadata["channel_names"] == ["red", "green", "blue"]
    labels = {node.metadata["name"]: node for node in nodes if node.load(Label) is not None}
    assert sorted(labels) == ["classes", "qc", "tissue"]
    classes = labels["classes"]
    assert not classes.visible  # label layers open hidden in napari
    assert [tuple(d.shape) for d in classes.data] == [a.shape for a in label_pyramid(group)]
    assert np.array_equal(np.asarray(classes.data[0]), open_result(path)[0][:])
    info = open_result(path)[1]
    assert sorted(classes.metadata["color"]) == [c.index for c in info.classes]
    assert classes.metadata["properties"][1]["name"] == info.classes[1].name
    image_scale = image.metadata["coordinateTransformations"][0][0]["scale"]
    class_scale = classes.metadata["coordinateTransformations"][0][0]["scale"]
    assert image_scale[1:] == pytest.approx([10 * s for s in class_scale])
    assert tuple(labels["tissue"].data[0].shape) == group["0"].shape[1:]


def test_damage_is_a_third_label_image_whose_levels_keep_any_damaged_pixel(result, tmp_path):
    from ome_zarr_models.v05.image import Image

    info = dataclasses.replace(open_result(result[0])[1], damaged_regions=(
        DamagedArea(0, (1402, 666, 2, 2), "test"),))
    out = tmp_path / "damaged.wsiseg.zarr"
    writer = OutputWriter(out, 300, 400, 4, probabilities=False, chunk=64)
    writer.write_tissue(np.ones((30, 40), np.uint8))
    writer.write_image(np.full((30, 40, 3), 200, np.uint8))
    writer.write_rows(FinishedRows(y=0, labels=np.zeros((300, 400), np.uint8), probabilities=None))
    writer.write_damaged([(101, 33, 1, 1)])  # one map pixel
    writer.publish(info, overwrite=False)
    group = zarr.open_group(str(out), mode="r")
    image = Image.from_zarr(group)
    assert image.labels.label_paths == ["classes", "tissue", "damaged"]
    assert group["labels/damaged"].attrs["ome"]["multiscales"][0]["type"] == "max"
    assert group["labels/damaged/1"][16, 50] == 1 and group["labels/damaged/1"][:].sum() == 1
    assert result_array(group, "damaged")[33, 101] == 1
    # Only the chunks holding damage are stored, and the record counts them.
    assert group.attrs["wsiseg_chunks"]["labels/damaged/0"] == 1
    assert group.attrs["wsiseg_chunks"]["labels/damaged/1"] == 1
    assert open_result(out)[1].damaged_count == 1


def test_a_result_without_the_slide_picture_is_not_published(result, tmp_path):
    writer = OutputWriter(tmp_path / "r.wsiseg.zarr", 300, 400, 4, probabilities=False, chunk=64)
    writer.write_tissue(np.ones((30, 40), np.uint8))
    writer.write_rows(FinishedRows(y=0, labels=np.zeros((300, 400), np.uint8), probabilities=None))
    with pytest.raises(RuntimeError, match="no image of the slide"):
        writer.publish(open_result(result[0])[1], overwrite=False)
    writer.abort()
    assert not (tmp_path / "r.wsiseg.zarr").exists()
