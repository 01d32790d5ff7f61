"""PredictConfig: each setting declared once, checked when a config is made, and classified by
whether it changes the map, which is what a batch compares to keep an earlier result."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any

import pytest

from wsiseg.errors import ConfigError
from wsiseg.inference.config import (
    MAP_SETTINGS,
    PredictConfig,
    changed_settings,
)
from wsiseg.settings import setting_fields

#: Every setting, by whether it changes the map. A setting added or renamed fails the test
#: below until it is put in one of these, after deciding whether a batch should keep a result
#: made with another value of it.
CHANGES_THE_MAP = ("model", "weights", "patch_size", "stride", "sigma", "target_mpp",
                   "slide_mpp", "tissue_threshold", "probabilities", "tta", "qc")
DOES_NOT = ("out", "device", "batch_size", "overwrite", "threads", "reader", "skip_damaged",
            "compile", "band_height", "stripe_width", "chunk_size", "amp", "progress", "trust_code")

#: A value of each setting that changes the map, other than its default.
OTHER_VALUES: dict[str, Any] = {
    "model": "other.pt", "weights": "other.pth", "patch_size": 256, "stride": 128, "sigma": 20.0,
    "target_mpp": 0.5, "slide_mpp": 0.25, "tissue_threshold": 0.5, "probabilities": True,
    "tta": "flip", "qc": "off",
}


def test_every_setting_is_classified_by_whether_it_changes_the_map():
    names = [f.name for f in dataclasses.fields(PredictConfig)]
    assert sorted(names) == sorted(CHANGES_THE_MAP + DOES_NOT)
    assert set(MAP_SETTINGS) == set(CHANGES_THE_MAP)
    assert set(OTHER_VALUES) == set(CHANGES_THE_MAP)
    for f in setting_fields(PredictConfig):
        assert f.spec.affects_map is (f.name in CHANGES_THE_MAP), f.name
        assert f.spec.help, f.name


def test_a_setting_that_does_not_say_whether_it_changes_the_map_is_refused():
    from wsiseg.inference import config
    from wsiseg.settings import setting

    @dataclasses.dataclass(frozen=True)
    class Undecided:
        model: str | None = setting(None, affects_map=True, help="x")
        new: int = setting(1, help="declared without affects_map")

    with pytest.raises(TypeError, match="Undecided.new must say whether it changes the map"):
        config._map_settings(Undecided)


@pytest.mark.parametrize("name", CHANGES_THE_MAP)
def test_a_result_made_with_another_value_of_a_map_setting_is_another_map(name):
    recorded = dataclasses.asdict(PredictConfig())
    config = PredictConfig(**{name: OTHER_VALUES[name]})
    assert changed_settings(recorded, config) == [name]
    assert changed_settings(dataclasses.asdict(config), config) == []


@pytest.mark.parametrize("name, value", [("device", "cpu"), ("batch_size", 2), ("threads", 1),
                                         ("reader", "tifffile"), ("compile", True),
                                         ("band_height", 10), ("overwrite", True),
                                         ("out", "x.zarr"), ("amp", "fp32")])
def test_settings_that_do_not_change_the_map_are_not_compared(name, value):
    recorded = dataclasses.asdict(PredictConfig())
    assert changed_settings(recorded, PredictConfig(**{name: value})) == []


def test_a_setting_that_a_result_does_not_record_reads_as_its_default():
    recorded = dataclasses.asdict(PredictConfig())
    del recorded["tta"]  # written before tta was recorded: predicted without
    assert changed_settings(recorded, PredictConfig()) == []
    assert changed_settings(recorded, PredictConfig(tta="d4")) == ["tta"]


def test_a_map_with_damage_skipped_is_only_that_of_a_config_that_skips_damage():
    recorded = dataclasses.asdict(PredictConfig(skip_damaged=True))
    assert changed_settings(recorded, PredictConfig(), damaged=False) == []
    assert changed_settings(recorded, PredictConfig(), damaged=True) == ["skip_damaged"]
    assert changed_settings(recorded, PredictConfig(skip_damaged=True), damaged=True) == []
    assert changed_settings(recorded, PredictConfig(stride=8), damaged=True) == [
        "stride", "skip_damaged"]


@pytest.mark.parametrize("changes, message", [
    ({"reader": "pil"}, "unknown reader 'pil'; use openslide, tifffile, auto"),
    ({"tta": "rot"}, "unknown test-time augmentation 'rot'; use none, flip, d4"),
    ({"amp": "fp8"}, "unknown precision 'fp8'; use auto, bf16, fp16 or fp32"),
    ({"batch_size": 0}, "batch size must be between 1 and 4096, got 0"),
    ({"threads": 0}, "threads must be at least 1, got 0"),
    ({"patch_size": 0}, "patch size must be between 16 and 4096 px, got 0"),
    ({"sigma": 0.0}, "sigma must be positive, got 0.0"),
    ({"sigma": float("nan")}, "sigma must be positive, got nan"),
    ({"target_mpp": -1.0}, "target mpp must be positive, got -1.0"),
    ({"tissue_threshold": 1.5}, "tissue threshold is a fraction between 0 and 1, got 1.5"),
    ({"patch_size": 100, "stride": 200}, "stride 200 is larger than the patch size 100"),
    ({"chunk_size": 8},
     "chunk size 8 must be at least 16 and the stripe width 8192 at least one chunk"),
])
def test_a_config_cannot_be_made_invalid(changes, message):
    with pytest.raises(ConfigError) as err:
        PredictConfig(**changes)
    assert str(err.value) == message
    with pytest.raises(ConfigError):  # nor made from a valid one
        dataclasses.replace(PredictConfig(), **changes)


def test_none_means_from_the_model_card_and_is_not_checked():
    config = PredictConfig(batch_size=None, patch_size=None, sigma=None, target_mpp=None)
    config.validate()
    assert config.map_settings()["patch_size"] is None


def test_every_test_time_augmentation_offered_has_its_views():
    from wsiseg.inference.tta import TTA_MODES, TTA_VIEWS

    assert TTA_MODES == tuple(TTA_VIEWS)


def test_the_config_and_the_command_line_load_without_torch():
    code = ("import sys, wsiseg.inference.config, wsiseg.cli.main; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
