"""``wsiseg evaluate``: a predicted map against its mask, and a model over image folders."""

from __future__ import annotations

import json

import imagecodecs
import numpy as np
import zarr
from click.testing import CliRunner

from wsiseg.cli.main import main
from wsiseg.pipeline import PredictConfig, predict_slide
from wsiseg.testing import write_annotated_folder


def test_result_against_masks_at_map_and_level0_size(svs_x40, pixel_model, tmp_path):
    path, _ = pixel_model
    result = predict_slide(svs_x40.path, PredictConfig(model=str(path), out=str(tmp_path / "r.zarr")))
    group = zarr.open_group(str(result), mode="r")
    labels = group["labels"][...]
    attrs = group.attrs["wsiseg"]
    runner = CliRunner()
    same = tmp_path / "same.png"
    same.write_bytes(imagecodecs.png_encode(labels))
    out = runner.invoke(main, ["evaluate", str(result), "--mask", str(same), "--json",
                               str(tmp_path / "s.json")])
    assert out.exit_code == 0, out.output
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["pixel_accuracy"] == 1.0 and scores["mean_dice"] == 1.0

    # The same truth drawn at level 0: every level-0 pixel takes the map pixel it falls in.
    w0, h0 = attrs["slide"]["dimensions"]
    (sx, sy), (ox, oy) = attrs["scale_to_level0"], attrs["offset_level0"]
    rows = np.clip(((np.arange(h0) + 0.5 - oy) // sy).astype(int), 0, labels.shape[0] - 1)
    cols = np.clip(((np.arange(w0) + 0.5 - ox) // sx).astype(int), 0, labels.shape[1] - 1)
    level0 = labels[rows[:, None], cols[None, :]]
    level0[: h0 // 2] = 255  # only the lower half is annotated
    big = tmp_path / "level0.png"
    big.write_bytes(imagecodecs.png_encode(level0))
    out = runner.invoke(main, ["evaluate", str(result), "--mask", str(big)])
    assert out.exit_code == 0, out.output
    assert "pixel accuracy (AP) 1.0000" in out.output

    small = tmp_path / "small.png"
    small.write_bytes(imagecodecs.png_encode(labels[:10, :10]))
    out = runner.invoke(main, ["evaluate", str(result), "--mask", str(small)])
    assert out.exit_code == 1 and out.output.count("\n") == 1
    assert "small.png is 10 x 10 px" in out.output and "level-0 size" in out.output


def test_model_over_folders_and_usage_errors(tmp_path):
    write_annotated_folder(tmp_path / "data", count=2, size=(320, 384))
    runner = CliRunner()
    from pathlib import Path

    scheme = Path(__file__).resolve().parents[1] / "examples" / "glas_classes.json"
    out = runner.invoke(main, ["evaluate", "--model", "hspnet-lite-glas", "--data",
                               str(tmp_path / "data"), "--image-mpp", "0.5", "--classes",
                               str(scheme), "--attributes", str(tmp_path / "data" / "grades.csv"),
                               "--group", "gland=2,3", "--json", str(tmp_path / "f.json")])
    assert out.exit_code == 0, out.output
    scores = json.loads((tmp_path / "f.json").read_text())
    assert set(scores["classes"]) == {"background", "other tissue", "normal", "tumour"}
    assert scores["groups"]["gland"]["classes"] == [2, 3]
    assert scores["classes"]["background"]["pixels"] > 0
    out = runner.invoke(main, ["evaluate", "--data", str(tmp_path / "data")])
    assert out.exit_code == 2 and "--model and --image-mpp" in out.output
    out = runner.invoke(main, ["evaluate", "x.zarr", "--mask", "m.png", "--group", "gland"])
    assert out.exit_code == 2 and "NAME=I,J" in out.output
