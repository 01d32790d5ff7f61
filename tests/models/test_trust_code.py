"""A TorchScript model is code: it is loaded only when its user says they trust it."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from wsiseg.cli.main import main
from wsiseg.errors import ModelError
from wsiseg.models import load_model
from wsiseg.testing.cli import error_line

ENV = "WSISEG_TRUST_CODE"


@pytest.fixture
def untrusted(monkeypatch):
    """No trust from the environment (the suite's own conftest gives it), and torch.jit.load
    failing the test if it is reached: the refusal comes before the file's code is loaded."""
    monkeypatch.delenv(ENV, raising=False)

    def never(*args, **kwargs):
        raise AssertionError("torch.jit.load was called")

    monkeypatch.setattr(torch.jit, "load", never)


def test_torchscript_is_refused_without_trust_naming_the_file_and_the_way(pixel_model,
                                                                          untrusted):
    path = pixel_model[0]
    with pytest.raises(ModelError) as err:
        load_model(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path} is a TorchScript model")
    for words in ("code that runs with your rights", "--trust-code", f"{ENV}=1"):
        assert words in message


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_torchscript_loads_when_trusted(pixel_model, monkeypatch, how):
    monkeypatch.delenv(ENV, raising=False)
    if how == "environment":
        monkeypatch.setenv(ENV, "1")
    loaded = load_model(pixel_model[0], trust_code=how == "argument")
    assert loaded.card.name == "pixel-test" and isinstance(loaded.module, torch.jit.ScriptModule)


def test_plain_weights_need_no_trust(tmp_path, untrusted):
    from wsiseg.models import create_model, default_card, save_checkpoint

    path = save_checkpoint(tmp_path / "w.pt", create_model("fullnet"), default_card("fullnet"))
    assert load_model(path).trained


def test_every_command_that_loads_a_model_refuses_torchscript_without_trust_code(
        pixel_model, svs_x20, tmp_path, untrusted):
    from wsiseg.testing.annotated import write_annotated_folder

    model = str(pixel_model[0])
    data = write_annotated_folder(tmp_path / "data", count=1)
    runner = CliRunner()
    for args in (["predict", str(svs_x20.path), "--model", model, "--out",
                  str(tmp_path / "m.wsiseg.zarr")],
                 ["predict", str(svs_x20.path), str(svs_x20.path), "--model", model, "--out",
                  str(tmp_path / "batch")],
                 ["evaluate", "--model", model, "--data", str(data), "--image-mpp", "1"],
                 ["train", "fullnet", str(data), "--out", str(tmp_path / "run"), "--image-mpp",
                  "1", "--init", model]):
        result = runner.invoke(main, args)
        if args[1:3] == [str(svs_x20.path), str(svs_x20.path)]:  # a batch records it per slide
            assert result.exit_code == 1 and "--trust-code" in (tmp_path / "batch" /
                                                                  "manifest.csv").read_text()
            continue
        error_line(result, model, "TorchScript", "--trust-code", f"{ENV}=1")
    assert not (tmp_path / "m.wsiseg.zarr").exists()


def test_trust_code_travels_in_the_config_and_does_not_change_the_map():
    from wsiseg.inference.config import MAP_SETTINGS, PredictConfig

    assert PredictConfig(trust_code=True).trust_code and "trust_code" not in MAP_SETTINGS


def test_a_model_kept_for_a_trusting_batch_is_not_handed_to_one_that_does_not(
        pixel_model, monkeypatch):
    from wsiseg.batch.worker import cached_model
    from wsiseg.inference.config import PredictConfig

    monkeypatch.setattr("wsiseg.batch.worker._MODELS", {})
    monkeypatch.delenv(ENV, raising=False)
    model = str(pixel_model[0])
    assert cached_model(PredictConfig(model=model, trust_code=True)).trained
    with pytest.raises(ModelError, match="--trust-code"):
        cached_model(PredictConfig(model=model))
