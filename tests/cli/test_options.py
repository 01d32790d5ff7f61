"""Command-line options built from a config's fields, and the config built from their values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import click
import pytest
from click.testing import CliRunner

from wsiseg.cli.main import main
from wsiseg.cli.options import config_from, options_from
from wsiseg.errors import ConfigError
from wsiseg.export import ExportOptions
from wsiseg.inference.config import PredictConfig
from wsiseg.settings import setting, setting_fields, validate_fields
from wsiseg.slide.reader import READERS

Mode = Literal["fast", "exact"]


@dataclass(frozen=True)
class Toy:
    name: str = setting(help="Required: no default.")
    mode: Mode = setting("fast", help="How.")
    size: int = setting(8, min=2, max=64, unit="px", help="Edge.")
    scale: float | None = setting(None, positive=True, help="Scale.")
    out_dir: str = setting("runs", flag="--out", help="Where.")
    verbose: bool = setting(False, help="Say more.")
    colour: bool = setting(True, help="In colour.")
    internal: int = setting(3, cli=False, help="Not an option.")

    def __post_init__(self) -> None:
        validate_fields(self)
        if self.mode == "exact" and self.size > 32:
            raise ConfigError(f"exact mode takes a size up to 32, got {self.size}")


@click.command()
@options_from(Toy, overrides={"scale": {"metavar": "X"}})
def toy(**params: Any) -> None:
    click.echo(repr(config_from(Toy, params)))


def invoke(*args: str) -> Any:
    return CliRunner().invoke(toy, list(args))


def test_one_option_per_field_in_field_order_named_and_typed_by_it():
    names = [p.name for p in toy.params]
    assert names == ["name", "mode", "size", "scale", "out_dir", "verbose", "colour"]
    result = invoke("--help")
    assert result.exit_code == 0
    for text in ("--name TEXT", "--mode [fast|exact]", "[default: fast]", "--size INTEGER RANGE",
                 "[default: 8; 2<=x<=64]", "--scale X", "--out TEXT", "--verbose",
                 "--colour / --no-colour", "Say more."):
        assert text in result.output, text
    assert "--internal" not in result.output


def test_the_config_is_made_from_the_values():
    result = invoke("--name", "a", "--mode", "exact", "--size", "16", "--scale", "1.5", "--out",
                    "x", "--verbose", "--no-colour")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == ("Toy(name='a', mode='exact', size=16, scale=1.5, "
                                     "out_dir='x', verbose=True, colour=False, internal=3)")


@pytest.mark.parametrize("args, text", [
    ((), "Missing option '--name'"),
    (("--name", "a", "--mode", "slow"), "'slow' is not one of 'fast', 'exact'"),
    (("--name", "a", "--size", "1"), "1 is not in the range 2<=x<=64"),
    (("--name", "a", "--scale", "0"), "must be positive, got 0.0"),
    (("--name", "a", "--mode", "exact", "--size", "40"), "exact mode takes a size up to 32"),
])
def test_bad_values_and_settings_that_contradict_each_other_are_usage_errors(args, text):
    result = invoke(*args)
    assert result.exit_code == 2
    assert text in result.output
    assert "Traceback" not in result.output


def test_the_library_refuses_what_the_command_line_refuses():
    for changes, message in [({"mode": "slow"}, "unknown mode 'slow'; use fast, exact"),
                             ({"size": 1}, "size must be between 2 and 64 px, got 1"),
                             ({"scale": -1.0}, "scale must be positive, got -1.0")]:
        with pytest.raises(ConfigError) as err:
            Toy(name="a", **changes)
        assert str(err.value) == message


def test_a_field_not_declared_as_a_setting_or_options_given_twice_are_refused():
    @dataclass(frozen=True)
    class Plain:
        x: int = 1

    with pytest.raises(TypeError, match="Plain.x is not declared"):
        options_from(Plain)
    with pytest.raises(TypeError, match="no fields"):
        options_from(Toy, exclude=("nope",))
    with pytest.raises(TypeError, match="already has options"):
        options_from(Toy)(click.option("--size")(lambda **kw: None))


def test_predict_offers_every_setting_of_predict_config_that_is_an_option():
    predict = main.commands["predict"]
    options = {p.name: p for p in predict.params}
    wanted = {f.name for f in setting_fields(PredictConfig) if f.spec.cli} - {"out"}
    assert wanted <= set(options)
    assert list(options["reader"].type.choices) == list(READERS)
    assert {f.name for f in setting_fields(ExportOptions)} <= set(options)
    for f in setting_fields(PredictConfig):
        if f.name in options and f.name != "out":
            assert options[f.name].help == f.spec.help
