"""Annotated folders: pairing, label schemes with attributes and tissue, resampling to a model."""

from __future__ import annotations

import json

import imagecodecs
import numpy as np
import pytest

from wsiseg.testing import write_annotated_folder
from wsiseg.training.datasets import (
    IGNORE_INDEX,
    DatasetError,
    LabelScheme,
    find_pairs,
    load_folder,
    read_attributes,
    resample_image,
    resample_labels,
)


@pytest.fixture(scope="module")
def scheme():
    from pathlib import Path

    return LabelScheme.from_file(Path(__file__).resolve().parents[2] / "examples" / "glas_classes.json")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("annotated")
    grades = write_annotated_folder(path, count=4, size=(320, 384))
    return path, grades


def test_rules_use_mask_attributes_and_tissue_in_order(scheme):
    mask = np.array([[0, 0, 1, 1, 7]], dtype=np.uint8)
    tissue = np.array([[False, True, False, True, True]])
    benign = scheme.apply(mask, {"grade": "benign"}, tissue)
    malignant = scheme.apply(mask, {"grade": "malignant"}, tissue)
    # A gland is a gland even where the tissue mask says glass (lumen); 7 matches no rule.
    assert benign.tolist() == [[0, 1, 2, 2, IGNORE_INDEX]]
    assert malignant.tolist() == [[0, 1, 3, 3, IGNORE_INDEX]]
    assert scheme.grade_of({"grade": "malignant"}) == 1 and scheme.grade_of({}) == -1
    assert [c[1] for c in scheme.classes()] == ["background", "other tissue", "normal", "tumour"]


def test_scheme_errors_name_the_problem(tmp_path):
    bad = tmp_path / "s.json"
    bad.write_text(json.dumps({"classes": [{"index": 0, "name": "a"}, {"index": 2, "name": "b"}]}))
    with pytest.raises(DatasetError, match=r"indices \[0, 2\].*0..K-1"):
        LabelScheme.from_file(bad)
    bad.write_text("{")
    with pytest.raises(DatasetError, match="not valid JSON"):
        LabelScheme.from_file(bad)


def test_resampling_averages_images_and_takes_the_majority_label():
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    image[:, :2] = 200
    assert resample_image(image, 2.0)[..., 0].tolist() == [[200, 0], [200, 0]]
    labels = np.array([[1, 1, 0, 0], [1, 2, 0, 255], [3, 3, 255, 255], [3, 0, 255, 255]],
                      dtype=np.uint8)
    assert resample_labels(labels, 2.0, 4).tolist() == [[1, 0], [3, 255]]
    # 1.5x: output pixel 0 covers input [0, 1.5): the whole of pixel 0 and half of pixel 1.
    row = np.array([[10, 40, 40, 40]], dtype=np.uint8).repeat(3, 0)[..., None].repeat(3, 2)
    assert resample_image(row, 1.5)[0, :, 0].tolist() == [20, 40]


def test_folder_loads_at_the_model_resolution_with_classes_and_grades(folder, scheme):
    path, grades = folder
    attributes = read_attributes(path / "grades.csv")
    samples = load_folder(path, scheme, image_mpp=0.5, target_mpp=1.0, attributes=attributes)
    assert [s.name for s in samples] == list(grades)
    for s in samples:
        assert s.image.shape == (160, 192, 3) and s.target.shape == (160, 192)
        mask = imagecodecs.imread(str(path / f"{s.name}_mask.png"))
        gland = 2 if grades[s.name] == "benign" else 3
        # Every output pixel whose 2x2 input block is all gland is that gland class.
        full = mask.reshape(160, 2, 192, 2).min(axis=(1, 3)) == 1
        assert np.all(s.target[full] == gland)
        assert s.grade == ["benign", "malignant"].index(grades[s.name])
        # The glass strip along the top is background, the pink stroma other tissue.
        assert np.all(s.target[:20] == 0)
        assert np.mean(s.target[40:] == 1) > 0.5


def test_folder_problems_are_one_line_errors(tmp_path, folder, scheme):
    path, _ = folder
    with pytest.raises(DatasetError, match="no row in the attributes table"):
        load_folder(path, scheme, 1.0, 1.0, attributes={})
    with pytest.raises(DatasetError, match="coarser than the model"):
        load_folder(path, scheme, 2.0, 1.0, attributes=read_attributes(path / "grades.csv"))
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "a.png").write_bytes((path / "img_0.png").read_bytes())
    with pytest.raises(DatasetError, match="a.png has no mask"):
        find_pairs(lone)
    with pytest.raises(DatasetError, match="is not a folder"):
        find_pairs(tmp_path / "missing")


@pytest.mark.slow
def test_glas_images_become_four_classes(shared_data, scheme):
    glas = shared_data / "glas"
    attributes = read_attributes(glas / "grades.csv")
    samples = load_folder(glas / "testB", scheme, 0.62, 1.0, attributes)
    assert len(samples) == 20
    for s in samples:
        # 775 x 522 px at 0.62 um/px cover 480.5 x 323.6 um: 480 x 323 whole pixels at 1 um/px.
        h, w = imagecodecs.imread(str(glas / "testB" / f"{s.name}.jpg")).shape[:2]
        assert s.image.shape[:2] == s.target.shape == (int(h * 0.62), int(w * 0.62))
        gland = 2 if attributes[s.name]["grade"] == "benign" else 3
        other = 5 - gland
        counts = np.bincount(s.target.ravel(), minlength=256)
        assert counts[gland] > 0 and counts[other] == 0 and counts[IGNORE_INDEX] == 0
