"""``wsiseg evaluate RESULT.zarr --mask MASK``: scores of a map against a mask, and its errors."""

from __future__ import annotations

import json

import click
import imagecodecs
import numpy as np
import pytest
import tifffile
import zarr
from click.testing import CliRunner

import wsiseg.cli.main  # noqa: F401  (it registers the commands of wsiseg.cli on import)
from wsiseg.cards import ClassInfo
from wsiseg.cli.evaluate import evaluate
from wsiseg.result.store import result_array
from wsiseg.testing import result as testing_result
from wsiseg.training.evaluation import evaluate_result
from wsiseg.training.metrics import confusion_matrix

NAMES = ("background", "stroma", "normal", "tumour")


def write_result(path, labels, scale=(1.0, 1.0), offset=(0, 0), level0=None, names=NAMES):
    """A result store with the layout and the attributes that wsiseg predict writes."""
    classes = [ClassInfo(i, n, (0, 0, 0)) for i, n in enumerate(names)]
    return testing_result.write_result(path, labels, classes, scale=scale, offset=offset,
                                       dimensions=level0, chunk=16)


def run(*args):
    cli = click.Group(commands=[evaluate])
    return CliRunner().invoke(cli, ["evaluate", *map(str, args)])


@pytest.fixture()
def small(tmp_path):
    """A 4 x 4 map and a mask of its size: one known confusion in each of three classes."""
    labels = np.array([[0, 0, 0, 0], [1, 1, 1, 2], [3, 3, 2, 2], [3, 3, 3, 1]], dtype=np.uint8)
    truth = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]], dtype=np.uint8)
    result = write_result(tmp_path / "small.wsiseg.zarr", labels)
    mask = tmp_path / "truth.png"
    imagecodecs.imwrite(str(mask), truth)
    return result, mask, labels, truth


def test_map_sized_mask_prints_the_table_and_writes_json(small, tmp_path):
    result, mask, labels, truth = small
    out = tmp_path / "scores.json"
    r = run(result, "--mask", mask, "--group", "gland=2,3", "--json", out)
    assert r.exit_code == 0, r.output
    assert "gland (group)  0.8750  0.7778" in r.stdout
    assert "pixel accuracy (AP) 0.7500" in r.stdout
    d = json.loads(out.read_text())
    assert d["confusion_matrix"] == confusion_matrix(truth, labels, 4).tolist()
    assert d["classes"]["normal"]["dice"] == pytest.approx(4 / 7)
    assert d["groups"]["gland"]["dice"] == pytest.approx(14 / 16)
    assert d["mean_over"] == ["stroma", "normal", "tumour"]
    # Averaging over chosen classes only.
    r = run(result, "--mask", mask, "--mean-over", "2,3", "--json", out)
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["mean_dice"] == pytest.approx((4 / 7 + 6 / 9) / 2)


def test_ignore_value_is_not_scored(small, tmp_path):
    result, _, labels, truth = small
    truth = truth.copy()
    truth[labels != truth] = 9  # every wrong pixel is marked "not scored"
    mask = tmp_path / "ignored.tif"
    tifffile.imwrite(mask, truth)
    scores = evaluate_result(result, mask, ignore_index=9)
    assert scores.matrix.sum() == 12 and scores.pixel_accuracy == 1.0
    r = run(result, "--mask", mask, "--ignore", "9")
    assert r.exit_code == 0 and "pixel accuracy (AP) 1.0000" in r.stdout


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_level0_mask_is_sampled_at_map_pixel_centres(tmp_path, suffix):
    # A 6 x 5 map at 4 level-0 pixels per map pixel, starting at level-0 (8, 12) of a 40 x 36
    # slide. Map pixel (x, y) covers level-0 [8 + 4x, 12 + 4x) x [12 + 4y, 16 + 4y); its
    # centre falls on level-0 pixel (10 + 4x, 14 + 4y).
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, (5, 6)).astype(np.uint8)
    result = write_result(tmp_path / "r.wsiseg.zarr", labels, scale=(4.0, 4.0), offset=(8, 12),
                          level0=(40, 36))
    level0 = rng.integers(0, 4, (36, 40)).astype(np.uint8)  # noise off the centres
    level0[14:34:4, 10:34:4] = labels
    mask = tmp_path / f"level0{suffix}"
    (tifffile.imwrite if suffix == ".tif" else imagecodecs.imwrite)(str(mask), level0)
    scores = evaluate_result(result, mask)
    assert scores.pixel_accuracy == 1.0 and scores.matrix.sum() == 30
    # One centre changed: exactly one confusion, at that pixel.
    level0[14 + 4 * 2, 10 + 4 * 3] = (labels[2, 3] + 1) % 4
    (tifffile.imwrite if suffix == ".tif" else imagecodecs.imwrite)(str(mask), level0)
    m = evaluate_result(result, mask).matrix
    expected = confusion_matrix(labels, labels, 4)
    expected[labels[2, 3], labels[2, 3]] -= 1
    expected[(labels[2, 3] + 1) % 4, labels[2, 3]] += 1
    assert np.array_equal(m, expected)


def test_rows_are_scored_in_bands_like_all_at_once(tmp_path, monkeypatch):
    import wsiseg.training.evaluation

    rng = np.random.default_rng(8)
    labels = rng.integers(0, 4, (70, 50)).astype(np.uint8)
    truth = np.where(rng.random((70, 50)) < 0.7, labels, rng.integers(0, 4, (70, 50)))
    truth[rng.random((70, 50)) < 0.1] = 255
    result = write_result(tmp_path / "r.wsiseg.zarr", labels)
    mask = tmp_path / "t.tif"
    tifffile.imwrite(mask, truth.astype(np.uint8), tile=(16, 16), compression="zlib")
    monkeypatch.setattr(wsiseg.training.evaluation, "BAND_PIXELS", 16 * 50)  # one chunk row a band
    assert np.array_equal(evaluate_result(result, mask).matrix,
                          confusion_matrix(truth, labels, 4))


def test_real_prediction_against_its_level0_mask(svs_x20, pixel_model, tmp_path):
    """A map from predict_slide (level 0 at 0.5 um/px, map at 1 um/px) against masks."""
    from wsiseg.inference.pipeline import PredictConfig, predict_slide

    cfg = PredictConfig(model=str(pixel_model[0]), out=str(tmp_path / "x20.wsiseg.zarr"),
                        patch_size=128, stride=64, tissue_threshold=0.0, progress=False)
    result = predict_slide(svs_x20.path, cfg).path
    labels = result_array(zarr.open_group(str(result), mode="r"), "labels")[:]
    assert labels.shape == (400, 504) and len(np.unique(labels)) >= 3
    # The map drawn at level 0, every 2 x 2 block one map pixel; the pixels of each block
    # off its centre (the top-left one) hold another class, and must not be sampled.
    h0, w0 = svs_x20.rgb_level0.shape[:2]
    level0 = np.repeat(np.repeat(labels, 2, axis=0), 2, axis=1)[:h0, :w0]
    level0[::2, ::2] = (level0[::2, ::2] + 1) % 4
    mask = tmp_path / "level0.png"
    imagecodecs.imwrite(str(mask), level0)
    out = tmp_path / "s.json"
    r = run(result, "--mask", mask, "--json", out)
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    assert d["pixel_accuracy"] == 1.0 and np.array(d["confusion_matrix"]).sum() == labels.size
    present = {n for n, c in d["classes"].items() if c["pixels"]}
    assert len(present) >= 3 and all(d["classes"][n]["dice"] == 1.0 for n in present)
    # A map-sized mask in which a 10 x 10 block holds the next class.
    truth = labels.copy()
    truth[100:110, 200:210] = (truth[100:110, 200:210] + 1) % 4
    mask = tmp_path / "map.tif"
    tifffile.imwrite(mask, truth)
    scores = evaluate_result(result, mask, groups={"lesion": [1, 2, 3]})
    assert np.array_equal(scores.matrix, confusion_matrix(truth, labels, 4))
    assert scores.pixel_accuracy == pytest.approx(1 - 100 / labels.size)
    binary = confusion_matrix(truth > 0, labels > 0, 2)  # lesion (1, 2 or 3) against class 0
    tp, fp, fn = binary[1, 1], binary[0, 1], binary[1, 0]
    assert scores.groups["lesion"]["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))


def one_error_line(r, *parts):
    assert r.exit_code == 1, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wsiseg: error: "), r.stderr
    for part in parts:
        assert part in lines[0], lines[0]


def test_user_mistakes_give_one_clear_line(small, tmp_path):
    result, mask, _, truth = small
    one_error_line(run(result, "--mask", tmp_path / "none.png"), "none.png does not exist")
    one_error_line(run(tmp_path / "none.zarr", "--mask", mask), "none.zarr does not exist")
    (tmp_path / "empty").mkdir()
    one_error_line(run(tmp_path / "empty", "--mask", mask), "is not a finished wsiseg result")
    plain = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    plain.create_array("labels", shape=(4, 4), dtype="uint8")
    one_error_line(run(tmp_path / "plain.zarr", "--mask", mask), "plain.zarr is not a finished "
                   "wsiseg result (no 'wsiseg')")
    one_error_line(run(result, "--mask", result / "zarr.json"), "cannot read mask")

    big = tmp_path / "big.png"
    imagecodecs.imwrite(str(big), np.zeros((5, 7), dtype=np.uint8))
    one_error_line(run(result, "--mask", big), "big.png is 7 x 5 px", "map's size (4 x 4)",
                   "level-0 size (4 x 4)", "resample the mask")

    values = truth.copy()
    values[2, 1] = 4
    bad = tmp_path / "values.png"
    imagecodecs.imwrite(str(bad), values)
    one_error_line(run(result, "--mask", bad), "values.png holds value 4 (at map pixel x 1, "
                   "y 2)", "4 classes (0 background, 1 stroma, 2 normal, 3 tumour)",
                   "0..3", "255 (--ignore)")

    colour = tmp_path / "colour.png"
    imagecodecs.imwrite(str(colour), np.stack([truth, truth, truth * 0], axis=-1))
    one_error_line(run(result, "--mask", colour), "colour image whose channels differ")

    floats = tmp_path / "float.tif"
    tifffile.imwrite(floats, truth.astype(np.float32))
    one_error_line(run(result, "--mask", floats), "float32 values")

    ignored = tmp_path / "ignored.png"
    imagecodecs.imwrite(str(ignored), np.full((4, 4), 255, dtype=np.uint8))
    one_error_line(run(result, "--mask", ignored), "scores no pixel")

    one_error_line(run(result, "--mask", mask, "--group", "gland=2,4"),
                   "group 'gland' names classes [4], outside 0..3")


def test_grey_mask_stored_as_rgb_is_accepted(small, tmp_path):
    result, _, labels, truth = small
    rgb = tmp_path / "rgb.png"
    imagecodecs.imwrite(str(rgb), np.stack([truth] * 3, axis=-1))
    assert np.array_equal(evaluate_result(result, rgb).matrix, confusion_matrix(truth, labels, 4))


@pytest.mark.parametrize("args,message", [
    (["--group", "gland"], "is not NAME=I,J"),
    (["--group", "gland=a,b"], "is not NAME=I,J"),
    (["--group", "=2,3"], "is not NAME=I,J"),
    (["--group", "g=1", "--group", "g=2"], "given twice"),
    (["--mean-over", "1,x"], "comma-separated list of class indices"),
    (["--ignore", "300"], "300"),
])
def test_bad_options_are_usage_errors(small, args, message):
    result, mask, _, _ = small
    r = run(result, "--mask", mask, *args)
    assert r.exit_code == 2 and message in r.stderr, r.output


def test_inputs_of_the_two_modes_are_not_mixed(small):
    result, mask, _, _ = small
    assert "needs --mask" in run(result).stderr
    assert "go with --data" in run(result, "--mask", mask, "--model", "m").stderr
    assert "either RESULT" in run(result, "--data", ".").stderr
    assert run().exit_code == 2


@pytest.mark.slow
def test_model_over_folders_through_the_wsiseg_command(tmp_path):
    """The other input of the same command, through ``wsiseg`` itself: a model over folders."""
    from pathlib import Path

    from wsiseg.cli.main import main
    from wsiseg.testing import write_annotated_folder

    write_annotated_folder(tmp_path / "data", count=2, size=(320, 384))
    scheme = Path(__file__).resolve().parents[2] / "examples" / "glas_classes.json"
    out = CliRunner().invoke(main, [
        "evaluate", "--model", "hspnet-lite-glas", "--data", str(tmp_path / "data"),
        "--image-mpp", "0.5", "--classes", str(scheme), "--attributes",
        str(tmp_path / "data" / "grades.csv"), "--group", "gland=2,3",
        "--json", str(tmp_path / "f.json")])
    assert out.exit_code == 0, out.output
    scores = json.loads((tmp_path / "f.json").read_text())
    assert set(scores["classes"]) == {"background", "other tissue", "normal", "tumour"}
    assert scores["groups"]["gland"]["classes"] == [2, 3]
    assert scores["classes"]["background"]["pixels"] > 0
    out = CliRunner().invoke(main, ["evaluate", "--data", str(tmp_path / "data")])
    assert out.exit_code == 2 and "--model and --image-mpp" in out.stderr
