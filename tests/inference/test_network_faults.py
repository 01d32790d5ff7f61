"""A network that returns NaN, or never returns: one line, and nothing left behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch

from wsiseg.errors import ModelError
from wsiseg.inference.pipeline import PredictConfig, predict_slide
from wsiseg.models import ClassInfo, LoadedModel, ModelCard


def card() -> ModelCard:
    return ModelCard(name="faulty", architecture="torchscript", arguments={"num_classes": 2},
                     classes=(ClassInfo(0, "a", (0, 0, 0)), ClassInfo(1, "b", (255, 0, 0))),
                     mpp=1.0, patch_size=128, stride=128)


class Broken(torch.nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 2, x.shape[2], x.shape[3])
        out[:, 1, 5, 7] = self.value
        return out


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_network_returning_nan_or_inf_is_one_line_and_leaves_nothing(svs_x20, tmp_path,
                                                                        value):
    model = LoadedModel(Broken(value), card(), None, "broken.pt", True)
    config = PredictConfig(out=str(tmp_path / "m.wsiseg.zarr"), progress=False,
                           tissue_threshold=0.0, device="cpu")
    with pytest.raises(ModelError, match=r"^broken\.pt returned NaN or infinite logits for "
                                         r"\d+ of \d+ windows") as err:
        predict_slide(svs_x20.path, config, model=model)
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no .partial


# A forward that never returns to Python: a TorchScript loop, as in a hostile or broken
# model, which no Ctrl-C reaches while the main thread is inside it.
_SCRIPT = """
import sys, torch
from wsiseg.cli.main import main
from wsiseg.inference import pipeline
from wsiseg.models import ClassInfo, LoadedModel, ModelCard

@torch.jit.script
def spin(x: torch.Tensor, n: int) -> torch.Tensor:
    for _ in range(n):
        x = x * 1.0
    return x

class Stuck(torch.nn.Module):
    def forward(self, x):
        print("forward", flush=True)
        spin(x[:1, :1, :1, :1], 10 ** 12)
        return torch.zeros(x.shape[0], 2, x.shape[2], x.shape[3])

card = ModelCard(name="stuck", architecture="torchscript", arguments={"num_classes": 2},
                 classes=(ClassInfo(0, "a", (0, 0, 0)), ClassInfo(1, "b", (255, 0, 0))),
                 mpp=1.0, patch_size=128, stride=128)
pipeline.load_configured_model = lambda config: LoadedModel(Stuck(), card, None, "stuck", True)
main(["predict", sys.argv[1], "--out", sys.argv[2], "--tissue-threshold", "0", "--device",
      "cpu"])
"""


@pytest.mark.parametrize(("sig", "status", "said"), [
    (signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_a_network_that_never_returns_is_stopped_by_ctrl_c_or_sigterm(svs_x20, tmp_path, sig,
                                                                      status, said):
    out = tmp_path / "m.wsiseg.zarr"
    script = tmp_path / "stuck.py"  # TorchScript compiles from source files only
    script.write_text(_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(svs_x20.path), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "forward\n"
        assert proc.poll() is None
        sent = time.monotonic()
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=20)
        waited = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == status, stderr
    assert stderr.strip().splitlines() == [f"wsiseg: {said}; no output was left behind"]
    assert waited < 5
    assert [p.name for p in tmp_path.iterdir()] == ["stuck.py"]


class _Copy:
    """A device-to-host copy that is done once the test says so, as a CUDA event tells."""

    def __init__(self) -> None:
        self.done = False
        self.waited = False

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        self.waited = self.done = True


def test_a_nan_batch_checked_behind_the_device_is_still_refused_before_the_map_is_used():
    from wsiseg.inference.predictor import CHECKS_IN_FLIGHT, _OutputChecks

    checks = _OutputChecks(torch.device("cpu"), "late.pt")
    copies = [_Copy() for _ in range(CHECKS_IN_FLIGHT + 1)]
    # The first batch is bad, its count still on its way: the host goes on, unblocked.
    checks.pending.append((torch.tensor(3), copies[0], 8))
    for copy in copies[1:CHECKS_IN_FLIGHT]:
        checks.pending.append((torch.tensor(0), copy, 8))
        checks.drain(wait=False)
    assert not copies[0].waited
    # One batch more than may be in flight: the oldest is waited for, and refused.
    checks.pending.append((torch.tensor(0), copies[-1], 8))
    with pytest.raises(ModelError, match=r"^late\.pt returned NaN or infinite logits for 3 of 8"):
        checks.drain(wait=False)
    assert copies[0].waited and not checks.pending
    # And at the end of a stripe, check_outputs waits for whatever is still out.
    checks.pending.append((torch.tensor(1), _Copy(), 4))
    checks.drain(wait=False)  # not done yet: nothing said
    with pytest.raises(ModelError, match="for 1 of 4 windows"):
        checks.drain(wait=True)
