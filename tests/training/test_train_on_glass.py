"""Training on glass: crops over the image's edges, held-out images scored laid on glass,
starting from another model's weights, and runs that resume across added settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from wsiseg.cli.main import main
from wsiseg.errors import ConfigError
from wsiseg.inference.predictor import Normalisation, Predictor
from wsiseg.testing import write_annotated_folder
from wsiseg.testing.cli import error_line
from wsiseg.training.config import TrainConfig
from wsiseg.training.datasets import Sample
from wsiseg.training.loop import train
from wsiseg.training.on_glass import GLASS_NOISE, GLASS_RGB
from wsiseg.training.validation import evaluate_samples

SCHEME = Path(__file__).resolve().parents[2] / "examples" / "glas_classes.json"
TINY = {"ds_widths": [4, 4, 4, 4], "hhsp_width": 8, "head_width": 8}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("glands_on_glass")
    write_annotated_folder(path, count=6, size=(160, 192))
    return path


def config(data: Path, out: Path, **kw) -> TrainConfig:
    base = {"model": "hspnet_r18", "data": data, "out": out, "name": "tiny", "arguments": TINY,
            "classes": SCHEME, "attributes": data / "grades.csv", "image_mpp": 0.5,
            "split_by": "patient_id", "val_fraction": 0.34, "epochs": 1, "batch_size": 2,
            "crop_size": 96, "optimizer": "adamw", "lr": 1e-3, "encoder_lr_scale": 1.0,
            "amp": "fp32", "seed": 3, "on_glass": 0.5, "stain_jitter": 0.05}
    base.update(kw)
    return TrainConfig(**base)


class BrightIsBackground(torch.nn.Module):
    """Class 0 where the pixel is bright (glass), else class 1: a per-pixel model."""

    def forward(self, x):
        bright = (x.mean(dim=1, keepdim=True) > 0.5).float() * 20 - 10
        return torch.cat([bright, -bright], dim=1)


def test_held_out_images_laid_on_glass_are_scored_over_the_image_only():
    h, w = 40, 56
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[:, : w // 2] = 250  # the image's own bright half: truly background
    target = np.ones((h, w), dtype=np.uint8)
    target[:, : w // 2] = 0
    sample = Sample("s", image, target, 0)
    predictor = Predictor(BrightIsBackground(), 2, Normalisation((0, 0, 0), (1, 1, 1)), torch.device("cpu"), amp=None)
    whole = evaluate_samples(predictor, [sample], ["background", "tissue"])
    on_glass = evaluate_samples(predictor, [sample], ["background", "tissue"], glass_margin=30)
    # The glass around the image (bright, predicted background) is not counted: both score
    # exactly the image's pixels, the same confusion.
    assert np.array_equal(whole.matrix, on_glass.matrix)
    assert whole.matrix.sum() == h * w
    assert (GLASS_RGB[0] - 6 * GLASS_NOISE) / 255 > 0.5  # glass is bright by the model's rule


@pytest.mark.slow
def test_a_run_on_glass_trains_on_window_sized_crops_past_small_images(data, tmp_path):
    result = train(config(data, tmp_path / "run", crop_size=None))
    assert result.epochs_run == 1
    state = torch.load(result.last, weights_only=True)
    assert state["config"]["on_glass"] == 0.5 and state["config"]["stain_jitter"] == 0.05
    # Without glass, crops could be no larger than the smallest image (160 px); on glass they
    # are the card's window, 400 px.
    with pytest.raises(ConfigError, match="larger than the smallest training image"):
        train(config(data, tmp_path / "plain", on_glass=0.0, crop_size=400))


@pytest.mark.slow
def test_init_starts_from_a_models_weights_and_refuses_another_network(data, tmp_path):
    first = train(config(data, tmp_path / "first"))
    captured = {}
    from wsiseg.training import loop

    original = loop._start_or_resume

    def capture(cfg, run):
        captured["state"] = {k: v.clone() for k, v in run.module.state_dict().items()}
        return original(cfg, run)

    loop._start_or_resume = capture
    try:
        train(config(data, tmp_path / "second", init=str(first.best), seed=7))
    finally:
        loop._start_or_resume = original
    start = captured["state"]
    best = torch.load(first.best, weights_only=True)["state_dict"]
    assert all(torch.equal(start[k], best[k]) for k in best)
    wider = {**TINY, "head_width": 16}
    with pytest.raises(ConfigError, match=r"--init .* is not the network hspnet_r18"):
        train(config(data, tmp_path / "third", init=str(first.best), arguments=wider))


@pytest.mark.slow
def test_a_run_from_before_the_glass_settings_resumes(data, tmp_path):
    from wsiseg.training import loop

    plain = config(data, tmp_path / "old", on_glass=0.0, stain_jitter=0.0, epochs=2,
                   crop_size=64)
    original = loop.TrainConfig.to_json_dict

    def without_new_keys(self):
        d = original(self)
        for key in ("on_glass", "stain_jitter", "init"):
            d.pop(key)
        return d

    loop.TrainConfig.to_json_dict = without_new_keys
    try:
        train(plain.__class__(**{**plain.__dict__, "epochs": 1}))
    finally:
        loop.TrainConfig.to_json_dict = original
    resumed = train(plain.__class__(**{**plain.__dict__, "resume": True}))
    assert resumed.epochs_run == 2
    with pytest.raises(ConfigError, match=r"other settings \(on_glass\)"):
        train(plain.__class__(**{**plain.__dict__, "resume": True, "epochs": 3,
                                 "on_glass": 0.5}))


@pytest.mark.slow
def test_cli_takes_the_glass_options_and_refuses_bad_ones_in_one_line(data, tmp_path):
    args = ["train", "hspnet_r18", str(data), "--out", str(tmp_path / "cli"), "--classes",
            str(SCHEME), "--attributes", str(data / "grades.csv"), "--epochs", "1",
            "--batch-size", "2", "--crop-size", "96", "--amp", "fp32", "--quiet",
            "--arg", "ds_widths=[4,4,4,4]", "--arg", "hhsp_width=8", "--arg", "head_width=8",
            "--val-fraction", "0.34", "--image-mpp", "0.5"]
    runner = CliRunner()
    result = runner.invoke(main, args + ["--on-glass", "0.5", "--stain-jitter", "0.05"])
    assert result.exit_code == 0, result.output
    state = torch.load(tmp_path / "cli" / "last.pt", weights_only=True)
    assert state["config"]["on_glass"] == 0.5
    result = runner.invoke(main, args + ["--on-glass", "2"])
    assert result.exit_code == 2 and "--on-glass" in result.output
    result = runner.invoke(main, args[:4] + [str(tmp_path / "other")] + args[5:]
                           + ["--init", str(tmp_path / "missing.pt")])
    error_line(result, "missing.pt")
