"""FullNet: the published parameter count, full-resolution logits, checkpoints."""

from __future__ import annotations

import pytest
import torch

from wsiseg.errors import ModelError
from wsiseg.models import create_model, default_card, load_model, save_checkpoint
from wsiseg.models.fullnet import FullNet

PUBLISHED_FULLNET = 1_780_233  # 3 classes, from the authors' code


def test_parameter_count_is_exactly_the_published_one():
    assert sum(p.numel() for p in create_model("fullnet").parameters()) == PUBLISHED_FULLNET


def test_channels_follow_the_dense_blocks():
    model = FullNet()
    widths = [m[0].out_channels for m in model.features[1::2]]
    assert widths == [84, 114, 129, 136, 140, 142, 143]
    assert model.features[6].layers[3][0].dilation == (9, 9)


def test_logits_at_any_input_size_and_train_outputs():
    model = create_model("fullnet").eval()
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 37, 50))
        assert logits.shape == (1, 3, 37, 50) and torch.isfinite(logits).all()
        assert torch.equal(model.forward_train(torch.ones(1, 3, 8, 8))["logits"],
                           model(torch.ones(1, 3, 8, 8)))


def test_checkpoint_round_trip(tmp_path):
    model = create_model("fullnet", num_classes=2).eval()
    card = default_card("fullnet")
    card = type(card)(**{**card.__dict__, "classes": card.classes[:2],
                         "arguments": {"num_classes": 2}})
    path = save_checkpoint(tmp_path / "f.pt", model, card)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(load_model(path).module(x), model(x))


@pytest.mark.parametrize("kwargs", [{"growth": 0}, {"dilations": [[1, 0]]}, {"dropout": 1.5}])
def test_bad_arguments(kwargs):
    with pytest.raises(ModelError, match="FullNet"):
        create_model("fullnet", **kwargs)
