"""``wsiseg view``: its refusals, in one line."""

from __future__ import annotations

import shutil

from click.testing import CliRunner

from cli.main import main
from wsiseg.inference.pipeline import PredictConfig, predict_slide


def test_view_refuses_what_is_not_a_result(tmp_path):
    (tmp_path / "x.wsiseg.zarr").mkdir()
    result = CliRunner().invoke(main, ["view", str(tmp_path / "x.wsiseg.zarr"), "--no-browser"])
    assert result.exit_code == 1
    assert "is not a finished wsiseg result" in result.output
    result = CliRunner().invoke(main, ["view", str(tmp_path / "empty"), "--no-browser"])
    assert result.exit_code == 1 and "does not exist" in result.output
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["view", str(tmp_path / "empty"), "--no-browser"])
    assert result.exit_code == 1 and "holds no *.wsiseg.zarr" in result.output


def test_view_names_a_missing_slide_and_the_way_out(svs_x40, pixel_model, tmp_path):
    slide = shutil.copy(svs_x40.path, tmp_path / "moved.svs")
    out = predict_slide(slide, PredictConfig(model=str(pixel_model[0]), progress=False,
                                             trust_code=True)).path
    (tmp_path / "moved.svs").unlink()
    result = CliRunner().invoke(main, ["view", str(out), "--no-browser"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert str(tmp_path / "moved.svs") in lines[0] and "put the slide back" in lines[0]
