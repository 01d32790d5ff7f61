"""ERNet and its PIDNet-M trunk: parameter counts, outputs, checkpoints."""

from __future__ import annotations

import pytest
import torch

from wsiseg.errors import ModelError
from wsiseg.models import create_model, default_card, load_model, save_checkpoint
from wsiseg.models.pidnet import PIDNetTrunk

MEASURED_ERNET = 30_274_855  # 3 classes, 3 grades
SPEC_ERNET = 30.35e6  # MODELS.md
MEASURED_TRUNK = 28_318_080  # PIDNet-M trunk without its boundary head
SPEC_TRUNK = 28.24e6


def test_parameter_counts_against_the_spec():
    trunk = PIDNetTrunk()
    n_trunk = sum(p.numel() for p in trunk.parameters()) - sum(
        p.numel() for p in trunk.boundary_head.parameters())
    assert n_trunk == MEASURED_TRUNK and abs(n_trunk - SPEC_TRUNK) / SPEC_TRUNK < 0.03
    n = sum(p.numel() for p in create_model("ernet").parameters())
    assert n == MEASURED_ERNET and abs(n - SPEC_ERNET) / SPEC_ERNET < 0.03


@pytest.mark.slow
def test_trunk_gives_256_channels_at_stride_8():
    with torch.no_grad():
        out = PIDNetTrunk().eval()(torch.rand(1, 3, 96, 128))
    assert out.shape == (1, 256, 12, 16)


@pytest.mark.slow
def test_forward_400_and_train_outputs():
    model = create_model("ernet").eval()
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 400, 400))
        assert logits.shape == (1, 3, 400, 400) and torch.isfinite(logits).all()
        x = torch.rand(1, 3, 72, 72)
        out = model.forward_train(x)
        assert torch.equal(out["logits"], model(x))
    assert out["grade"].shape == (1, 3) and out["edge"].shape == (1, 1, 72, 72)


@pytest.mark.slow
def test_checkpoint_round_trip_and_training_step(tmp_path):
    model = create_model("ernet")
    out = model.forward_train(torch.rand(2, 3, 64, 64))
    (out["logits"].mean() + out["grade"].mean() + out["edge"].mean()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    path = save_checkpoint(tmp_path / "e.pt", model, default_card("ernet"))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(load_model(path).module(x), model(x))


@pytest.mark.parametrize("kwargs", [{"num_grades": 0}, {"edge_widths": [64, 128]},
                                    {"se_hidden": -1}])
def test_bad_arguments(kwargs):
    with pytest.raises(ModelError, match="ERNet"):
        create_model("ernet", **kwargs)
