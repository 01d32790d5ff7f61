"""Test-time augmentation: the mean over flips and quarter turns, in the predictor, the result
and on the command line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner

from wsiseg.cli.main import main
from wsiseg.errors import ConfigError, ResultError
from wsiseg.export.report import build_report
from wsiseg.inference.pipeline import PredictConfig, predict_slide
from wsiseg.inference.predictor import Normalisation, Predictor, segment_image
from wsiseg.result.info import ResultInfo
from wsiseg.result.store import open_result, result_array

NORM = Normalisation((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def lopsided_network() -> torch.nn.Module:
    """Random 3x3 kernels: no flip or turn of the input turns its output the same way."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 4, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, padding=2, dilation=2),
    ).eval()


def predictor(tta: str) -> Predictor:
    return Predictor(lopsided_network(), 4, NORM, torch.device("cpu"), tta=tta)


def patches(n: int = 3, h: int = 24, w: int = 40, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def turn(a: np.ndarray, turns: int, mirrored: bool, axes: tuple[int, int]) -> np.ndarray:
    """``a`` mirrored along ``axes[1]``, then turned ``turns`` quarter turns in ``axes``."""
    if mirrored:
        a = np.flip(a, axis=axes[1])
    return np.ascontiguousarray(np.rot90(a, turns, axes=axes))


def turn_back(a: np.ndarray, turns: int, mirrored: bool, axes: tuple[int, int]) -> np.ndarray:
    a = np.rot90(a, -turns, axes=axes)
    return np.ascontiguousarray(np.flip(a, axis=axes[1]) if mirrored else a)


D4 = [(turns, mirrored) for mirrored in (False, True) for turns in range(4)]
FLIPS = [(0, False), (0, True), (2, True), (2, False)]  # none, left-right, top-bottom, both
IMAGE_AXES, PROB_AXES = (1, 2), (2, 3)  # (n, H, W, 3) patches, (n, C, H, W) probabilities


@pytest.mark.parametrize("tta, views", [("d4", D4), ("flip", FLIPS)])
def test_tta_is_the_mean_of_the_views_mapped_back(tta, views):
    x = patches()  # not square: odd quarter turns swap H and W
    plain = predictor("none")
    reference = np.mean([turn_back(plain(turn(x, k, m, IMAGE_AXES)).numpy(), k, m, PROB_AXES)
                         for k, m in views], axis=0)
    got = predictor(tta)(x)
    assert got.shape == (3, 4, 24, 40) and got.dtype == torch.float32 and got.is_contiguous()
    assert np.allclose(got.numpy(), reference, rtol=0, atol=1e-6)
    # The views differ: the mean is not the plain prediction.
    assert not np.allclose(reference, plain(x).numpy(), atol=1e-3)


def equivariant_views(tta: str) -> set[tuple[int, bool]]:
    """The views of D4 under which ``tta``'s probabilities move exactly with the input."""
    x = patches(h=32, w=32)
    predict = predictor(tta)
    probs = predict(x).numpy()
    return {(k, m) for k, m in D4[1:]
            if np.allclose(predict(turn(x, k, m, IMAGE_AXES)).numpy(),
                           turn(probs, k, m, PROB_AXES), rtol=0, atol=1e-5)}


def test_d4_probabilities_turn_and_flip_with_the_input():
    assert equivariant_views("d4") == set(D4[1:])


def test_flip_probabilities_flip_with_the_input_but_do_not_turn():
    assert equivariant_views("flip") == set(FLIPS[1:])


def test_without_tta_the_network_is_not_equivariant():
    assert equivariant_views("none") == set()


@pytest.mark.parametrize("tta", ["none", "flip", "d4"])
def test_probabilities_still_sum_to_one(tta):
    probs = predictor(tta)(patches())
    assert torch.allclose(probs.sum(dim=1), torch.ones(3, 24, 40), atol=1e-5)
    assert (probs >= 0).all() and (probs <= 1).all()


@pytest.mark.slow
def test_segment_image_turns_a_padded_image_that_is_not_square():
    image = patches(n=1, h=40, w=70)[0]  # padded to 64 x 96; quarter turns give 96 x 64
    probs = segment_image(predictor("d4"), image)
    assert probs.shape == (4, 40, 70)
    assert np.allclose(probs.sum(axis=0), 1, atol=1e-5)


@pytest.mark.slow
def test_a_compiled_network_with_tta_pads_short_batches_and_matches_eager():
    eager = predictor("flip")
    compiled = Predictor(lopsided_network(), 4, NORM, torch.device("cpu"), compile=True,
                         tta="flip")
    for n in (2, 1):  # the short batch is padded to the compiled shape
        x = patches(n=n, h=32, w=32, seed=n)
        got, want = compiled(x), eager(x)
        assert got.shape == want.shape == (n, 4, 32, 32)
        assert torch.allclose(got, want, atol=1e-5)
    assert compiled._compiled_batch == 2


def test_an_unknown_mode_is_refused_in_one_line():
    with pytest.raises(ConfigError) as err:
        Predictor(lopsided_network(), 4, NORM, torch.device("cpu"), tta="d8")
    message = str(err.value)
    assert "\n" not in message
    assert all(word in message for word in ("'d8'", "none", "flip", "d4"))
    with pytest.raises(ConfigError, match="unknown test-time augmentation 'rot'"):
        PredictConfig(tta="rot").validate()


def predict_small(slide, model_path, out, tta):
    config = PredictConfig(model=str(model_path), out=str(out), patch_size=128, stride=64,
                           tissue_threshold=0.0, probabilities=True, progress=False, tta=tta)
    return predict_slide(slide, config)


@pytest.mark.slow
def test_the_pipeline_records_tta_and_an_older_result_reads_as_none(svs_x20, pixel_model,
                                                                    tmp_path):
    model_path, _ = pixel_model
    info = predict_small(svs_x20.path, model_path, tmp_path / "flip.wsiseg.zarr", "flip")
    assert info.tta == "flip"
    _, read = open_result(info.path)
    assert read.tta == "flip" and read.config["tta"] == "flip"
    group = zarr.open_group(str(info.path), mode="r")
    attrs = dict(group.attrs["wsiseg"])
    assert attrs["tta"] == "flip"
    assert build_report(info.path)["settings"]["tta"] == "flip"

    # A per-pixel function turns with its input: flipping changes nothing but rounding.
    plain = predict_small(svs_x20.path, model_path, tmp_path / "none.wsiseg.zarr", "none")
    assert plain.tta == "none"
    flipped = result_array(group, "probabilities")[:].astype(int)
    unflipped = result_array(zarr.open_group(str(plain.path), mode="r"), "probabilities")[:]
    assert np.abs(flipped - unflipped.astype(int)).max() <= 1

    del attrs["tta"]  # as written before tta was recorded
    assert ResultInfo.from_attrs(attrs, info.path).tta == "none"
    with pytest.raises(ResultError, match="'tta' is 4, not text"):
        ResultInfo.from_attrs({**attrs, "tta": 4}, info.path)


@pytest.mark.slow
def test_a_batch_keeps_a_result_only_when_it_was_made_with_the_same_tta(svs_x20, pixel_model,
                                                                         tmp_path):
    from wsiseg.batch.runner import BatchConfig, predict_slides

    def batch(tta: str) -> BatchConfig:
        return BatchConfig(out_dir=str(tmp_path), progress=False, predict=PredictConfig(
            model=str(pixel_model[0]), patch_size=128, stride=64, tta=tta))

    (record,) = predict_slides([svs_x20.path], batch("flip")).records
    assert record.status == "done"
    (record,) = predict_slides([svs_x20.path], batch("flip")).records
    assert record.status == "skipped"
    (record,) = predict_slides([svs_x20.path], batch("none")).records
    assert record.status == "failed" and "(tta)" in record.error


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.slow
def test_the_command_line_predicts_with_d4_and_refuses_an_unknown_mode(svs_x20, pixel_model,
                                                                       tmp_path):
    out = tmp_path / "d4.wsiseg.zarr"
    code, _, stderr = run("predict", svs_x20.path, "--model", pixel_model[0], "--out", out,
                          "--patch-size", 128, "--stride", 64, "--tta", "d4", "--quiet")
    assert code == 0, stderr
    assert zarr.open_group(str(out), mode="r").attrs["wsiseg"]["tta"] == "d4"

    bad = tmp_path / "bad.wsiseg.zarr"
    code, _, stderr = run("predict", svs_x20.path, "--model", pixel_model[0], "--out", bad,
                          "--tta", "bad")
    assert code == 2  # a usage error, before anything is read
    errors = [line for line in stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "Traceback" not in stderr
    assert all(word in errors[0] for word in ("--tta", "'bad'", "none", "flip", "d4"))
    assert not bad.exists()

    code, stdout, _ = run("predict", "--help")
    assert code == 0 and "--tta" in stdout and "8x" in stdout
