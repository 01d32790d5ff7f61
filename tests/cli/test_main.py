"""The command line on real slides: results, clear one-line errors, nothing left behind."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from wsiseg.cli.main import main
from wsiseg.result.store import result_array


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="session")
def slides(shared_data):
    return shared_data / "slides"


def assert_one_line_error(stderr, *words):
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("wsiseg: error: ")
    assert "Traceback" not in stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.slow
def test_predict_real_svs_end_to_end(slides, pixel_model, tmp_path):
    out = tmp_path / "cmu.wsiseg.zarr"
    code, stdout, stderr = run("predict", slides / "CMU-1-Small-Region.svs", "--model",
                               pixel_model[0], "--out", out, "--probabilities")
    assert code == 0, stderr
    assert str(out) in stdout and "patches/s" in stdout
    # Where the time went, and what ran the network.
    (timing,) = [line for line in stdout.splitlines() if line.startswith("time: ")]
    assert "network" in timing and "waiting for reads" in timing
    assert timing.endswith("; ran on cpu, fp32, batch 1")  # this CPU has no native bf16
    g = zarr.open_group(str(out), mode="r")
    attrs = g.attrs["wsiseg"]
    # 2220 x 2967 at 0.499 um/px -> ceil(2220 * 0.499) x ceil(2967 * 0.499) at 1.0 um/px
    assert result_array(g, "labels").shape == (1481, 1108)
    assert result_array(g, "probabilities").shape == (4, 1481, 1108)
    assert attrs["slide"]["vendor"] == "aperio" and attrs["slide"]["mpp"] == [0.499, 0.499]
    assert attrs["scale_to_level0"][0] == pytest.approx(1 / 0.499)
    assert attrs["offset_level0"] == [0, 0]
    assert 0 < attrs["patches_kept"] < attrs["patches_total"]
    labels = result_array(g, "labels")[:]
    tissue_share = (labels > 0).mean()
    assert 0.05 < tissue_share < 0.6  # the region is partly glass
    for key in ("version", "level", "level_downsample", "analysis_mpp", "classes", "model",
                "patch_size", "stride", "sigma", "tissue_threshold", "seconds"):
        assert key in attrs
    assert len(attrs["model"]["weights_sha256"]) == 64
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


@pytest.mark.slow
def test_slide_without_mpp_fails_then_works_with_slide_mpp(slides, pixel_model, tmp_path):
    tcga = slides / "TCGA-CR-7395-01A-01-TS1.svs"
    out = tmp_path / "tcga.wsiseg.zarr"
    code, _, stderr = run("predict", tcga, "--model", pixel_model[0], "--out", out)
    assert code == 1
    assert_one_line_error(stderr, tcga.name, "no resolution metadata", "--slide-mpp")
    assert list(tmp_path.iterdir()) == []
    code, _, stderr = run("predict", tcga, "--model", pixel_model[0], "--out", out,
                          "--slide-mpp", "0.25", "--quiet")
    assert code == 0, stderr
    attrs = zarr.open_group(str(out), mode="r").attrs["wsiseg"]
    assert attrs["slide"]["mpp_source"] == "user"
    assert attrs["level"] == 1  # 0.25 um/px x 2.0005 is the finest level at most 1.0 um/px
    assert attrs["shape"] == [892, 1111]


@pytest.mark.parametrize("name,words", [
    ("bad/unreadable.svs", ["unreadable.svs", "cannot read pixels at level-0 x 0, y 0",
                            "Bogus marker length", "--skip-damaged"]),
    ("bad/unopenable.tiff", ["unopenable.tiff", "OpenSlide cannot open it"]),
    ("bad/not-a-wsi-strip.tif", ["not-a-wsi-strip.tif", "not a whole-slide image"]),
    ("tiny/boxes.tiff", ["boxes.tiff", "which no scanner gives", "--slide-mpp"]),
    ("does-not-exist.svs", ["does-not-exist.svs", "no such file"]),
])
def test_bad_slides_give_one_clear_line_and_leave_nothing(slides, pixel_model, tmp_path, name, words):
    # Work on a copy so that even the default output place (beside the slide) is checked.
    src = slides / name
    slide = tmp_path / src.name
    if src.exists():
        shutil.copy(src, slide)
    code, _, stderr = run("predict", slide, "--model", pixel_model[0])
    assert code == 1
    assert_one_line_error(stderr, *words)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ([src.name] if src.exists() else [])


def test_slide_smaller_than_one_patch_works(slides, pixel_model, tmp_path):
    out = tmp_path / "small.wsiseg.zarr"
    code, _, stderr = run("predict", slides / "tiny" / "small.svs", "--model", pixel_model[0],
                          "--out", out, "--tissue-threshold", "0", "--quiet")
    assert code == 0, stderr
    labels = result_array(zarr.open_group(str(out), mode="r"), "labels")[:]
    assert labels.shape == (8, 8)  # 16 px at 0.499 um/px -> 8 px at 1.0 um/px


def test_no_tissue_gives_all_background_map_and_a_warning(tmp_path, pixel_model):
    from wsiseg.testing import write_svs

    glass = np.full((800, 800, 3), 242, dtype=np.uint8)
    slide = tmp_path / "glass.svs"
    write_svs(slide, glass, mpp=0.5)
    out = tmp_path / "glass.wsiseg.zarr"
    code, _, stderr = run("predict", slide, "--model", pixel_model[0], "--out", out, "--quiet")
    assert code == 0
    assert "no tissue found" in stderr
    g = zarr.open_group(str(out), mode="r")
    assert g.attrs["wsiseg"]["patches_kept"] == 0
    assert not result_array(g, "labels")[:].any()


def test_existing_output_is_refused(slides, pixel_model, tmp_path):
    out = tmp_path / "exists.wsiseg.zarr"
    out.mkdir()
    code, _, stderr = run("predict", slides / "CMU-1-Small-Region.svs", "--model",
                          pixel_model[0], "--out", out)
    assert code == 1
    assert_one_line_error(stderr, "exists already", "--overwrite")


def test_usage_errors_exit_2(pixel_model, slides):
    code, _, _ = run("predict", slides / "CMU-1-Small-Region.svs", "--batch-size", "0")
    assert code == 2
    code, _, _ = run("predict", slides / "CMU-1-Small-Region.svs", "--patch-size", "100",
                     "--stride", "200")
    assert code == 2
    code, _, _ = run("predict")
    assert code == 2


def test_untrained_architecture_is_refused(slides, tmp_path):
    code, _, stderr = run("predict", slides / "CMU-1-Small-Region.svs", "--model", "hspnet_r34",
                          "--out", tmp_path / "x.zarr")
    assert code == 1
    assert_one_line_error(stderr, "hspnet_r34", "without trained weights", "--weights")


def test_info_shows_levels_mpp_and_associated_images(slides):
    code, stdout, _ = run("info", slides / "CMU-1-Small-Region.svs")
    assert code == 0
    for text in ("aperio", "0.499", "objective power: 20", "level 0: 2220 x 2967",
                 "label", "macro", "thumbnail"):
        assert text in stdout
    code, stdout, _ = run("info", slides / "TCGA-CR-7395-01A-01-TS1.svs")
    assert code == 0 and "unknown (pass --slide-mpp" in stdout and "level 1: 2221 x 1783" in stdout


@pytest.mark.slow
def test_models_lists_networks(pixel_model):
    code, stdout, _ = run("models")
    assert code == 0
    assert "hspnet_r34" in stdout and "hspnet_r101" in stdout and "M params" in stdout


@pytest.mark.slow
def test_console_script_version_and_error_exit_code(tmp_path):
    exe = shutil.which("wsiseg")
    cmd = [exe] if exe else [sys.executable, "-m", "wsiseg.cli.main"]
    done = subprocess.run(cmd + ["--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "wsiseg" in done.stdout
    done = subprocess.run(cmd + ["info", str(tmp_path / "nope.svs")], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr and "nope.svs" in done.stderr


def test_options_that_contradict_each_other_are_usage_errors(tmp_path):
    slide = tmp_path / "a.svs"
    slide.write_bytes(b"")
    code, _, stderr = run("predict", slide, "--patch-size", "100", "--stride", "200")
    assert code == 2 and "stride 200 is larger than the patch size 100" in stderr
    code, _, stderr = run("predict", slide, "--export", "geojson,nope")
    assert code == 2 and "--export" in stderr and "['nope']" in stderr
    code, _, stderr = run("predict", tmp_path, "--workers", "2", "--scheduler", "tcp://h:8786")
    assert code == 2 and "not both" in stderr
    for more in (["--qc", "off", "--export", "geojson"], ["--export", "report"]):
        code, _, stderr = run("predict", slide, "--qc-annotations", *more)
        assert code == 2 and "--qc-annotations" in stderr and "--export geojson" in stderr
    assert [p.name for p in tmp_path.iterdir()] == ["a.svs"]


def test_a_batch_stopped_with_ctrl_c_says_once_where_its_slides_are(tmp_path, monkeypatch):
    import wsiseg.batch

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(wsiseg.batch, "predict_slides", stopped)
    for name in ("a.svs", "b.svs"):
        (tmp_path / name).write_bytes(b"")
    out = tmp_path / "out"
    code, _, stderr = run("predict", tmp_path, "--out", out, "--quiet")
    assert code == 130
    assert stderr.splitlines() == [
        (f"wsiseg: interrupted; finished slides are kept in {out} (see manifest.csv); run the "
         "same command again to do the rest")]
