"""A batch keeps a result it finds only when it was made with the same settings that change the
map, whichever they are: the comparison follows PredictConfig's own classification."""

from __future__ import annotations

from typing import Any

import pytest

from wsiseg.batch.config import BatchConfig
from wsiseg.batch.discovery import FoundSlides
from wsiseg.batch.runner import predict_slides
from wsiseg.inference.config import MAP_SETTINGS, PredictConfig
from wsiseg.settings import setting_fields

#: For each setting, a value other than the first batch's (which leaves the rest as defaults).
OTHER: dict[str, Any] = {
    "model": "other.pt", "weights": "other.pth", "out": "elsewhere.zarr", "device": "cpu",
    "batch_size": 2, "patch_size": 200, "stride": 50, "sigma": 20.0, "target_mpp": 0.5,
    "slide_mpp": 0.25, "tissue_threshold": 0.5, "probabilities": True, "overwrite": True,
    "threads": 1, "reader": "tifffile", "skip_damaged": True, "tta": "flip", "compile": True,
    "band_height": 500, "stripe_width": 4096, "chunk_size": 256, "amp": "fp32",
    "progress": True, "trust_code": True, "qc": "off",
}


@pytest.fixture(scope="module")
def made(slides, pixel_model, tmp_path_factory):
    """A batch's folder holding the result of s0.svs, made with the pixel model."""
    out = tmp_path_factory.mktemp("kept")
    first = PredictConfig(model=str(pixel_model[0]), progress=False)
    (record,) = predict_slides([slides / "s0.svs"], _batch(out, first)).records
    assert record.status == "done"
    return out, first


def _batch(out, predict: PredictConfig) -> BatchConfig:
    return BatchConfig(out_dir=str(out), progress=False, predict=predict)


def test_every_setting_has_another_value_here():
    assert set(OTHER) == {f.name for f in setting_fields(PredictConfig)}


@pytest.mark.parametrize("name", sorted(OTHER))
def test_a_result_is_kept_unless_a_setting_that_changes_the_map_differs(made, slides, name):
    out, first = made
    if name == "model":  # the first batch's model is a file; another is another model
        changed = PredictConfig(model=str(first.model) + ".other", progress=False)
    else:
        changed = PredictConfig(**{**vars(first), name: OTHER[name]})
    (record,) = predict_slides([slides / "s0.svs"], _batch(out, changed)).records
    if name == "slide_mpp":  # in a batch, only for slides without one: s0.svs has one
        assert (record.status, record.error) == ("skipped", "")
    elif name in MAP_SETTINGS:
        assert record.status == "failed"
        assert f"was made from other settings ({name}); pass --overwrite" in record.error
    else:
        assert (record.status, record.error) == ("skipped", "")


def test_a_result_made_from_metadata_is_redone_for_a_listed_resolution(made, slides):
    out, first = made
    found = FoundSlides((slides / "s0.svs",), (OTHER["slide_mpp"],))
    (record,) = predict_slides(found, _batch(out, first)).records
    assert record.status == "failed"
    assert "was made from other settings (slide_mpp); pass --overwrite" in record.error
