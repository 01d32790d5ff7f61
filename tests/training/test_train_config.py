"""The settings of training and scoring: declared once, checked when made, offered as options."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from wsiseg.cli.evaluate import evaluate
from wsiseg.cli.train import train
from wsiseg.errors import ConfigError
from wsiseg.settings import setting_fields
from wsiseg.training.config import DEFAULT_MARGIN_UM, EvaluateConfig, TrainConfig


@pytest.mark.parametrize("command, config, arguments", [
    (train, TrainConfig, {"model", "data"}),
    (evaluate, EvaluateConfig, set()),
])
def test_each_setting_is_an_option_with_its_declared_default_and_help(command, config,
                                                                      arguments):
    options = {p.name: p for p in command.params if isinstance(p, click.Option)}
    for f in setting_fields(config):
        if not f.spec.cli or f.name in arguments:
            assert f.name not in options
            continue
        option = options[f.name]
        assert option.help == f.spec.help
        if f.has_default and f.default is not None and not option.multiple:
            assert option.default == f.default, f.name


def test_a_train_config_keeps_its_settings_as_json():
    config = TrainConfig(model="hspnet_r18", data=Path("d"), out=Path("o"), image_mpp=0.5)
    saved = config.to_json_dict()
    assert saved["data"] == "d" and saved["arguments"] == {} and saved["image_mpp"] == 0.5
    defaults = TrainConfig.json_defaults()
    assert set(defaults) == set(saved) - {"model", "data", "out"}
    assert all(saved[k] == v for k, v in defaults.items() if k != "image_mpp")


def evaluate_config(**kw) -> EvaluateConfig:
    return EvaluateConfig(**{"model": "m", "folders": [Path("f")], "image_mpp": 0.5, **kw})


def test_an_evaluate_config_puts_images_on_glass_200_um_wide_unless_told():
    assert evaluate_config(on_glass=True).glass_margin_um == DEFAULT_MARGIN_UM == 200.0
    assert evaluate_config(on_glass=True, margin_um=50).glass_margin_um == 50.0
    assert evaluate_config(on_glass=True, margin_um=0).glass_margin_um == 0.0


@pytest.mark.parametrize("settings, named", [
    ({"margin_um": 100}, r"^--margin 100 goes with --on-glass"),
    ({"on_glass": True, "margin_um": -5}, r"^the glass margin must be 0 um or more, got -5 um"),
    ({"image_mpp": 0.0}, r"^image resolution 0.0 um/px is not positive; pass --image-mpp"),
    ({"tta": "d8"}, r"^unknown test-time augmentation 'd8'; use none, flip, d4$"),
])
def test_an_evaluate_config_refuses_each_bad_value_in_one_line(settings, named):
    with pytest.raises(ConfigError, match=named) as err:
        evaluate_config(**settings)
    assert "\n" not in str(err.value)
