"""The network's arithmetic: bf16 where the hardware has it (auto), float32 elsewhere, and the
precision and device that ran it recorded in the result."""

from __future__ import annotations

import logging

import pytest
import torch
import zarr
from click.testing import CliRunner

from wsiseg.cli.main import main as cli
from wsiseg.errors import ConfigError
from wsiseg.export.report import build_report
from wsiseg.inference import predictor
from wsiseg.inference.pipeline import PredictConfig, predict_slide
from wsiseg.result.info import ResultInfo
from wsiseg.result.store import open_result, result_array
from wsiseg.testing.cli import error_line

CPU = torch.device("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_auto_takes_bf16_only_on_a_cpu_that_multiplies_it_natively(monkeypatch, native):
    monkeypatch.setattr(predictor, "native_cpu_bf16", lambda: native)
    assert predictor.autocast_dtype(CPU, "auto") == (torch.bfloat16 if native else None)
    assert predictor.autocast_dtype(CPU, "fp32") is None
    assert predictor.autocast_dtype(CPU, "bf16") == torch.bfloat16  # asked for by name
    with pytest.raises(ConfigError, match="^precision fp16 runs on CUDA only"):
        predictor.autocast_dtype(CPU, "fp16")


def test_this_machines_answer_is_what_torch_says_of_its_cpu():
    said = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert predictor.native_cpu_bf16() == said


def _predict(slide, model, out, precision):
    config = PredictConfig(model=str(model), out=str(out), patch_size=128, stride=64,
                           tissue_threshold=0.0, probabilities=True, progress=False,
                           device="cpu", amp=precision)
    return predict_slide(slide, config)


def test_a_result_records_the_device_and_precision_and_bf16_maps_as_fp32(
        svs_x20, pixel_model, tmp_path, caplog):
    model_path, _ = pixel_model
    fp32 = _predict(svs_x20.path, model_path, tmp_path / "fp32.wsiseg.zarr", "fp32")
    with caplog.at_level(logging.WARNING):
        bf16 = _predict(svs_x20.path, model_path, tmp_path / "bf16.wsiseg.zarr", "bf16")
    assert (fp32.device, fp32.precision) == ("cpu", "fp32")
    assert (bf16.device, bf16.precision) == ("cpu", "bf16")
    _, read = open_result(bf16.path)
    assert (read.device, read.precision) == ("cpu", "bf16")
    settings = build_report(bf16.path)["settings"]
    assert (settings["device"], settings["precision"], settings["batch_size"]) == ("cpu", "bf16", 1)
    emulated = not predictor.native_cpu_bf16()
    assert ("bf16 is emulated" in caplog.text) == emulated
    labels = [result_array(zarr.open_group(str(i.path), mode="r"), "labels")[:]
              for i in (fp32, bf16)]
    assert (labels[0] == labels[1]).mean() >= 0.995
    assert (labels[0] > 0).any()  # a map with classes in it, not an empty one compared

    attrs = dict(zarr.open_group(str(bf16.path), mode="r").attrs["wsiseg"])
    del attrs["device"], attrs["precision"]  # as written before they were recorded
    older = ResultInfo.from_attrs(attrs, bf16.path)
    assert (older.device, older.precision) == (None, None)
    with pytest.raises(Exception, match="precision"):
        ResultInfo.from_attrs({**attrs, "precision": "int3"}, bf16.path)


def test_fp16_on_the_cpu_is_one_line_before_any_work(svs_x20, pixel_model, tmp_path):
    out = tmp_path / "x.wsiseg.zarr"
    result = CliRunner().invoke(cli, ["predict", str(svs_x20.path), "--model",
                                      str(pixel_model[0]), "--trust-code", "--device", "cpu",
                                      "--precision", "fp16", "--out", str(out)])
    error_line(result, "fp16 runs on CUDA only", "--precision")
    assert not out.exists() and not list(tmp_path.iterdir())
