"""EHANet and its MobileViT-S encoder: sizes, parameter counts, training outputs, checkpoints."""

from __future__ import annotations

import pytest
import torch

from wsiseg.errors import ModelError
from wsiseg.models import create_model, default_card, load_model, save_checkpoint
from wsiseg.models.mobilevit import ConvBNAct, MobileViTS

MEASURED_EHANET = 5_748_791  # 2 classes
SPEC_EHANET = 5.9e6  # MODELS.md
# MobileViT-S as published has 5.6M parameters with its 1x1 160->640 layer and 1000-class
# classifier (102,400 + 1,280 + 641,000 more than the encoder here).
MEASURED_MOBILEVIT_S_ENCODER = 4_833_952


def test_parameter_counts():
    encoder = MobileViTS()
    assert sum(p.numel() for p in encoder.parameters()) == MEASURED_MOBILEVIT_S_ENCODER
    # The encoder with the published network's 1x1 160->640 layer and 1000-class classifier
    # put back on its last stage is MobileViT-S as published: 5.6M parameters.
    classifier = torch.nn.Sequential(
        ConvBNAct(encoder.out_channels[-1], 640, 1), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(640, 1000))
    published = torch.nn.Sequential(encoder, classifier)
    with torch.no_grad():
        assert classifier(encoder.eval()(torch.rand(1, 3, 64, 64))[-1]).shape == (1, 1000)
    n = sum(p.numel() for p in published.parameters())
    assert abs(n - 5.6e6) / 5.6e6 < 0.01
    n = sum(p.numel() for p in create_model("ehanet").parameters())
    assert n == MEASURED_EHANET and abs(n - SPEC_EHANET) / SPEC_EHANET < 0.03


@pytest.mark.slow
def test_encoder_taps_at_strides_2_to_32_for_odd_sizes():
    with torch.no_grad():
        feats = MobileViTS().eval()(torch.rand(1, 3, 100, 70))
    assert [tuple(f.shape[1:]) for f in feats] == [
        (32, 50, 35), (64, 25, 18), (96, 13, 9), (128, 7, 5), (160, 4, 3)]


@pytest.mark.slow
def test_forward_400_and_train_outputs():
    model = create_model("ehanet").eval()
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 400, 400))
        assert logits.shape == (1, 2, 400, 400) and torch.isfinite(logits).all()
        x = torch.rand(1, 3, 64, 96)
        out = model.forward_train(x)
        assert torch.equal(out["logits"], model(x))
    assert out["edge"].shape == (1, 1, 64, 96)
    assert [tuple(s.shape) for s in out["side"]] == [(1, 1, 64, 96)] * 4


@pytest.mark.slow
def test_checkpoint_round_trip_and_training_step(tmp_path):
    model = create_model("ehanet")
    x = torch.rand(2, 3, 64, 64)
    out = model.forward_train(x)
    (out["logits"].mean() + out["edge"].mean() + sum(s.mean() for s in out["side"])).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    path = save_checkpoint(tmp_path / "e.pt", model, default_card("ehanet"))
    with torch.no_grad():
        assert torch.equal(load_model(path).module(x), model(x))


@pytest.mark.parametrize("kwargs", [{"edge_width": 0}, {"eca_kernel": 4}])
def test_bad_arguments(kwargs):
    with pytest.raises(ModelError, match="EHANet"):
        create_model("ehanet", **kwargs)
