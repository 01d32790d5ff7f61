"""Sizes no slide or model has are refused in one line, under a memory limit so that a
regression fails at once instead of eating the machine."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from wsiseg.inference.config import PredictConfig
from wsiseg.testing import synthetic_tissue, write_svs

LIMIT = 3 << 30  # bytes of address space: torch and a small prediction fit in it

_SCRIPT = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
from click.testing import CliRunner
from wsiseg.cli.main import main
out = {{}}
for name, args in json.loads(sys.argv[1]).items():
    r = CliRunner().invoke(main, ["predict", *args])
    out[name] = [r.exit_code, r.stderr, repr(r.exception)]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def refusals(tmp_path_factory, pixel_model) -> dict[str, tuple[int, str, str]]:
    from wsiseg.models import create_model, default_card, save_checkpoint

    folder = tmp_path_factory.mktemp("absurd")
    rgb, _ = synthetic_tissue(256, 256, seed=3)
    good = write_svs(folder / "good.svs", rgb, mpp=0.5)
    tiny = write_svs(folder / "tiny.svs", rgb, mpp=1e-9)
    card = default_card("fullnet")
    net = create_model("fullnet")
    far = save_checkpoint(folder / "far.pt", net, replace(card, mpp=1e9))
    wide = save_checkpoint(folder / "wide.pt", net, replace(card, patch_size=100_000,
                                                              stride=100))
    grown = folder / "grown.pt"
    torch.save({"format": "wsiseg-checkpoint", "version": 1, "state_dict": {},
                "card": {**card.to_dict(), "arguments": {"num_classes": 3, "growth": 300000}}},
               grown)
    model = str(pixel_model[0])
    out = str(folder / "out.wsiseg.zarr")
    cases = {
        "patch": [str(good), "--model", model, "--out", out, "--patch-size", "20000"],
        "memory": [str(good), "--model", model, "--out", out, "--patch-size", "4096",
                   "--stride", "4096", "--batch-size", "256"],
        "card_mpp": [str(good), "--model", str(far), "--out", out],
        "card_patch": [str(good), "--model", str(wide), "--out", out],
        "growth": [str(good), "--model", str(grown), "--out", out],
        "slide_mpp": [str(tiny), "--model", model, "--out", out],
        "given_mpp": [str(good), "--model", model, "--out", out, "--slide-mpp", "1e-9"],
    }
    done = subprocess.run([sys.executable, "-c", _SCRIPT.format(limit=LIMIT), json.dumps(cases)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert not (folder / "out.wsiseg.zarr").exists()
    return {k: tuple(v) for k, v in json.loads(done.stdout.splitlines()[-1]).items()}


def one_line(refusals, case, code, *words):
    exit_code, stderr, exception = refusals[case]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert exit_code == code, (exit_code, stderr, exception)
    assert "Traceback" not in stderr and "unexpected" not in stderr
    line = lines[-1] if code == 2 else lines[0]
    assert code == 2 or len(lines) == 1, stderr
    for word in words:
        assert word in line, (word, line)


@pytest.mark.parametrize("case, code, words", [
    ("patch", 2, ("--patch-size", "20000", "16<=x<=4096")),
    ("memory", 1, ("good.svs", "GiB", "4096 px in batches of 256", "--batch-size")),
    ("card_mpp", 1, ("far.pt", "mpp 1e+09", "0.05-100 um/px")),
    ("card_patch", 1, ("wide.pt", "patch_size 100000", "16-4096")),
    ("growth", 1, ("grown.pt", "'growth': 300000", "parameters", "'arguments'")),
    ("slide_mpp", 1, ("tiny.svs", "1e-09 um/px", "0.01-100", "--slide-mpp")),
    ("given_mpp", 2, ("slide mpp", "between 0.01 and 100 um/px", "1e-09")),
])
def test_an_absurd_size_is_one_line(refusals, case, code, words):
    one_line(refusals, case, code, *words)


def test_sizes_have_sensible_bounds_in_the_settings():
    from wsiseg.errors import ConfigError

    for kw in ({"patch_size": 8}, {"stride": 5000}, {"target_mpp": 1e9}, {"batch_size": 10**6}):
        with pytest.raises(ConfigError):
            PredictConfig(**kw)
    PredictConfig(patch_size=16, stride=16, target_mpp=0.05, slide_mpp=0.01)
