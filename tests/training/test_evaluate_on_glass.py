"""``wsiseg evaluate --data ... --on-glass``: annotated images placed on glass and mapped through
the whole pipeline, scored over the image's region only."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import imagecodecs
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from wsiseg.cli.main import main
from wsiseg.inference.pipeline import PredictConfig
from wsiseg.testing.cli import error_line
from wsiseg.training.config import EvaluateConfig
from wsiseg.training.datasets import load_folder
from wsiseg.training.evaluation import AnnotatedModel, evaluate_folders, level0_sampling
from wsiseg.training.on_glass import (
    GLASS_RGB,
    margin_pixels,
    predict_on_glass,
    slide_on_glass,
    truth_on_map,
)

SCHEME = Path(__file__).resolve().parents[2] / "examples" / "glas_classes.json"

#: Colours of the synthetic images, and the class each is (mask value = class index).
GLASS, STROMA, GLAND = (245, 245, 245), (235, 170, 200), (90, 40, 120)


class ColourModel(torch.nn.Module):
    """Classes by colour, per pixel: background where green > 215, gland where red < 160,
    stroma otherwise (input in 0..1: mean 0, std 1). ``wrong`` swaps stroma and gland."""

    def __init__(self, wrong: bool = False) -> None:
        super().__init__()
        self.wrong = wrong

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        glass = (x[:, 1:2] - 215 / 255) * 50
        gland = (160 / 255 - x[:, 0:1]) * 50
        stroma = torch.zeros_like(glass)
        if self.wrong:
            return torch.cat([glass, gland, stroma], dim=1)
        return torch.cat([glass, stroma, gland], dim=1)


def save_model(path: Path, module: torch.nn.Module, patch_size: int = 128, stride: int = 64):
    from wsiseg.models import ClassInfo, ModelCard, save_torchscript

    card = ModelCard(
        name=path.stem, architecture="torchscript", arguments={"num_classes": 3},
        classes=(ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "stroma", (250, 210, 60)),
                 ClassInfo(2, "gland", (0, 160, 0))),
        mpp=1.0, patch_size=patch_size, stride=stride, mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0), description="classes by colour",
    )
    save_torchscript(path, torch.jit.script(module.eval()), card)
    return path


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("models") / "colour.pt", ColourModel())


@pytest.fixture(scope="module")
def wrong_model(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("models") / "wrong.pt", ColourModel(wrong=True))


def write_folder(folder: Path, sizes=((320, 384), (288, 352)), seed: int = 0) -> Path:
    """Images of stroma with glands (discs) and a strip of glass along the top, each mask
    exactly the colour regions: 0 glass, 1 stroma, 2 gland."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for n, (h, w) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w]
        mask = np.ones((h, w), dtype=np.uint8)
        for _ in range(4):
            cy, cx, r = rng.uniform(0.3 * h, 0.9 * h), rng.uniform(0.1 * w, 0.9 * w), 0.1 * h
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 2
        mask[: h // 10] = 0
        image = np.array([GLASS, STROMA, GLAND], dtype=np.float64)[mask]
        image = np.clip(np.rint(image + rng.normal(0, 4, image.shape)), 0, 255).astype(np.uint8)
        imagecodecs.imwrite(str(folder / f"img_{n}.png"), image)
        imagecodecs.imwrite(str(folder / f"img_{n}_mask.png"), mask)
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("annotated") / "data")


def test_truth_is_the_mask_at_its_offset_sampled_at_map_pixel_centres():
    rng = np.random.default_rng(3)
    target = rng.integers(0, 3, (7, 9)).astype(np.uint8)
    target[2, 3] = 255  # not scored in the image itself either
    level0 = (30, 34)  # the slide, level 0: the 9 x 7 image at (x 11, y 8) on glass
    canvas = np.full(level0, 255, dtype=np.uint8)
    canvas[8:15, 11:20] = target
    # Map pixels of 2 level-0 pixels: map pixel (x, y) has its centre on level-0 (2x+1, 2y+1).
    info = SimpleNamespace(scale_to_level0=(2.0, 2.0), offset_level0=(0, 0))
    rows, cols = level0_sampling(info, (15, 17), level0)
    assert np.array_equal(truth_on_map(target, (11, 8), rows, cols), canvas[1::2, 1::2])
    # At 1 level-0 pixel a map pixel, the truth is the canvas itself.
    info = SimpleNamespace(scale_to_level0=(1.0, 1.0), offset_level0=(0, 0))
    rows, cols = level0_sampling(info, level0, level0)
    assert np.array_equal(truth_on_map(target, (11, 8), rows, cols), canvas)


def test_the_image_lies_unchanged_in_the_middle_of_noisy_near_white_glass():
    image = np.random.default_rng(1).integers(0, 256, (20, 30, 3)).astype(np.uint8)
    slide = slide_on_glass(image, 5, np.random.default_rng(0))
    assert slide.shape == (30, 40, 3) and np.array_equal(slide[5:25, 5:35], image)
    glass = np.concatenate([slide[:5].reshape(-1, 3), slide[25:].reshape(-1, 3)]).astype(float)
    assert np.allclose(glass.mean(axis=0), GLASS_RGB, atol=0.5)
    assert 1.5 < glass.std() < 2.5
    assert not np.array_equal(slide, slide_on_glass(image, 5, np.random.default_rng(1)))
    assert np.array_equal(slide, slide_on_glass(image, 5, np.random.default_rng(0)))
    assert margin_pixels(200, 0.62) == 323 and margin_pixels(0, 0.5) == 0


def test_on_the_map_grid_only_the_image_is_scored(folder, colour_model, tmp_path):
    """Image at the model's resolution: the map's grid is level 0, the truth is the class map
    in the image's rectangle and not scored (255) on all the glass around it."""
    annotated = AnnotatedModel.load(str(colour_model))
    sample = load_folder(folder, annotated.scheme, 1.0, 1.0)[0]
    config = PredictConfig(device="cpu", progress=False)
    truth, predicted = predict_on_glass(sample, 1.0, 40, config, annotated.loaded, tmp_path,
                                        np.random.default_rng(0))
    h, w = sample.target.shape
    canvas = np.full((h + 80, w + 80), 255, dtype=np.uint8)
    canvas[40:40 + h, 40:40 + w] = sample.target
    assert np.array_equal(truth, canvas)
    assert predicted.shape == truth.shape
    # The per-pixel model is right on every pixel of the image, wherever it was predicted.
    assert np.array_equal(predicted[40:40 + h, 40:40 + w], sample.target)
    assert not list(tmp_path.iterdir())  # the slide and its map are removed


@pytest.mark.slow
def test_a_perfect_model_scores_one_and_a_wrong_one_low(folder, colour_model, wrong_model):
    # At 0.5 um/px the pipeline averages 2 x 2 pixels into each map pixel: edges blur a little.
    good = evaluate_folders(EvaluateConfig(str(colour_model), [folder], 0.5, device="cpu",
                                           on_glass=True, margin_um=60))
    assert good.images == 2 and good.mode == "on glass, margin 60 um, through the pipeline"
    assert good.scores.dice.min() > 0.97 and good.scores.pixel_accuracy > 0.98
    # Every pixel of the images scored, once, at the map's resolution (half of theirs).
    assert good.scores.matrix.sum() == pytest.approx((320 * 384 + 288 * 352) / 4, rel=0.01)
    bad = evaluate_folders(EvaluateConfig(str(wrong_model), [folder], 0.5, device="cpu",
                                          on_glass=True, margin_um=60))
    assert bad.scores.dice[1] < 0.2 and bad.scores.dice[2] < 0.2
    assert np.array_equal(bad.scores.matrix.sum(axis=1), good.scores.matrix.sum(axis=1))


@pytest.mark.slow
def test_a_per_pixel_model_scores_the_same_on_glass_as_on_whole_images(folder, pixel_model):
    """A position-independent per-pixel model at the images' own resolution: the window at the
    image's corner holds all of it (images smaller than a window), so every image pixel is
    predicted and the map's grid is the images' own; the two modes must agree exactly. (At
    another resolution they need not: each mode resamples from its own origin, and whole images
    take each map pixel's class by majority, the map by its centre.)"""
    path = str(pixel_model[0])
    whole = evaluate_folders(EvaluateConfig(path, [folder], 1.0, device="cpu"))
    glass = evaluate_folders(EvaluateConfig(path, [folder], 1.0, device="cpu", on_glass=True,
                                            margin_um=200))
    assert whole.mode == "whole image" and whole.images == glass.images == 2
    assert whole.scores.matrix.sum() == 320 * 384 + 288 * 352
    assert np.array_equal(whole.scores.matrix, glass.scores.matrix)
    assert len(np.flatnonzero(whole.scores.matrix.sum(axis=1))) >= 3


@pytest.mark.slow
def test_tta_reaches_the_predictor_in_both_modes(folder, pixel_model, monkeypatch):
    from wsiseg.inference.predictor import Predictor

    seen = []
    init = Predictor.__init__

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("tta"))
        init(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "__init__", spy)
    path = str(pixel_model[0])
    on_glass = {"device": "cpu", "on_glass": True, "margin_um": 100}
    plain = evaluate_folders(EvaluateConfig(path, [folder], 1.0, **on_glass))
    flipped = evaluate_folders(EvaluateConfig(path, [folder], 1.0, tta="flip", **on_glass))
    whole = evaluate_folders(EvaluateConfig(path, [folder], 1.0, device="cpu", tta="d4"))
    assert seen == ["none"] * 2 + ["flip"] * 2 + ["d4"]
    assert flipped.tta == "flip" and whole.tta == "d4"
    # A per-pixel model is the same in every view.
    assert np.array_equal(plain.scores.matrix, flipped.scores.matrix)


def test_slides_and_maps_are_removed_after_a_ctrl_c(folder, colour_model, tmp_path,
                                                    monkeypatch):
    import tempfile

    import wsiseg.training.on_glass

    written = []

    def interrupted(path, config, model=None):
        assert Path(path).is_file()
        Path(config.out).mkdir()  # a map half written
        written.extend([Path(path), Path(config.out)])
        raise KeyboardInterrupt

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(wsiseg.training.on_glass, "predict_slide", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate_folders(EvaluateConfig(str(colour_model), [folder], 1.0, device="cpu",
                                        on_glass=True))
    assert written[0].suffix == ".svs" and written[0].parent.parent == tmp_path
    assert not list(tmp_path.iterdir())


def test_the_command_says_which_mode_ran(tmp_path, colour_model):
    data = write_folder(tmp_path / "data", sizes=((256, 288),))
    out = tmp_path / "scores.json"
    r = CliRunner().invoke(main, [
        "-v", "evaluate", "--model", str(colour_model), "--data", str(data),
        "--image-mpp", "0.5", "--on-glass", "--margin", "50", "--tta", "flip",
        "--group", "tissue=1,2", "--device", "cpu", "--json", str(out)])
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    assert d["mode"] == "on glass, margin 50 um, through the pipeline"
    assert (d["tta"], d["images"], d["model"], d["margin_um"]) == ("flip", 1, "colour", 50.0)
    assert d["groups"]["tissue"]["dice"] > 0.97 and math.isclose(d["image_mpp"], 0.5)
    assert d["pixel_accuracy"] > 0.97
    assert r.stdout.startswith("colour on 1 image at 0.5 um/px: on glass, margin 50 um, "
                               "through the pipeline; tta flip\n")
    # Progress goes to the log, one line an image, not to the report.
    progress = [line for line in r.stderr.splitlines() if "img_0 (1 of 1 in" in line]
    assert len(progress) == 1 and "pixels scored" in progress[0]
    assert "img_0" not in r.stdout
    # The same images whole: the JSON says so.
    r = CliRunner().invoke(main, [
        "evaluate", "--model", str(colour_model), "--data", str(data), "--image-mpp", "0.5",
        "--device", "cpu", "--json", str(out)])
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    assert (d["mode"], d["tta"], d["margin_um"]) == ("whole image", "none", None)


def test_mistakes_are_one_line(tmp_path, folder, colour_model):
    from wsiseg.cards import ClassInfo
    from wsiseg.testing import write_result

    def run(*args):
        return CliRunner().invoke(main, ["evaluate", *map(str, args)])

    data = ["--model", colour_model, "--data", folder, "--device", "cpu"]
    error_line(run(*data, "--image-mpp", "0.5", "--on-glass", "--margin", "-5"),
               "margin must be 0 um or more, got -5 um")
    error_line(run(*data, "--image-mpp", "0.5", "--margin", "100"),
               "--margin 100 goes with --on-glass")
    error_line(run(*data, "--image-mpp", "2", "--on-glass"),
               "at 2 um/px, coarser than the model's 1 um/px")
    result = write_result(tmp_path / "r.wsiseg.zarr", np.zeros((4, 4), dtype=np.uint8),
                          [ClassInfo(0, "background", (0, 0, 0))])
    mask = tmp_path / "m.png"
    imagecodecs.imwrite(str(mask), np.zeros((4, 4), dtype=np.uint8))
    error_line(run(result, "--mask", mask, "--on-glass"),
               "--on-glass goes with --model and --data", "not with RESULT")
    error_line(run(result, "--mask", mask, "--tta", "flip"), "--tta flip goes with --model")
    r = run(*data, "--image-mpp", "0.5", "--on-glass", "--tta", "d8")
    assert r.exit_code == 2 and "'d8'" in r.stderr and "--tta" in r.stderr


@pytest.mark.slow
def test_real_glas_image_on_glass(shared_data, tmp_path):
    """One GlaS image through the pipeline with the installed model: finite scores, and every
    map pixel whose centre lies on the image scored, none of the glass."""
    glas = shared_data / "glas"
    folder = tmp_path / "testB"
    folder.mkdir()
    for name in ("testB_1.jpg", "testB_1_mask.png"):
        (folder / name).symlink_to(glas / "testB" / name)
    e = evaluate_folders(EvaluateConfig("hspnet-lite-glas", [folder], 0.62, SCHEME,
                                        glas / "grades.csv", groups={"gland": [2, 3]},
                                        device="cpu", on_glass=True))
    d = e.to_dict()
    assert d["images"] == 1 and all(math.isfinite(d[k]) for k in ("mean_dice", "pixel_accuracy"))
    assert math.isfinite(d["groups"]["gland"]["dice"])
    # Map pixel x (1 um) has its centre on level-0 floor((x + 0.5) / 0.62 * 1.0) of the
    # 0.62 um/px slide; the image spans level-0 [m, m + size) with m = 200 / 0.62 = 323.
    s, m = 1.0 / 0.62, 323

    def on_image(size: int) -> int:
        return math.ceil((m + size) / s - 0.5) - math.ceil(m / s - 0.5)

    h, w = imagecodecs.imread(str(glas / "testB" / "testB_1.jpg")).shape[:2]
    # The GlaS scheme gives every image pixel a class: none of them is ignored.
    assert e.scores.matrix.sum() == on_image(h) * on_image(w)
