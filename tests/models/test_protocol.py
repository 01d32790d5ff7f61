"""What training needs of a network, with the defaults a network without it trains with."""

from __future__ import annotations

import pytest
import torch

from wsiseg.models import create_model, default_card, list_models
from wsiseg.models.protocol import (
    NamesItsCriterion,
    TrainsOnOutputs,
    criterion_name,
    encoder_of,
    training_outputs,
)

#: The registered networks' own criteria, and which have an encoder trained at its own rate.
CRITERIA = {"ehanet": "ehanet", "ernet": "ernet", "etnet": "etnet", "fullnet": "fullnet",
            "hspnet_r101": "segmentation", "hspnet_r18": "segmentation",
            "hspnet_r34": "segmentation"}
WITH_ENCODER = {"ehanet", "etnet", "hspnet_r101", "hspnet_r18", "hspnet_r34"}


class Plain(torch.nn.Module):
    """A network with nothing but ``forward``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_every_registered_network_is_listed_here():
    assert sorted(CRITERIA) == list_models()


@pytest.mark.parametrize("name", list_models())
def test_a_registered_network_names_its_criterion_and_encoder(name):
    with torch.device("meta"):
        module = create_model(name, **default_card(name).arguments)
    assert criterion_name(module) == CRITERIA[name]
    encoder = encoder_of(module)
    assert (encoder is not None) == (name in WITH_ENCODER)
    if encoder is not None:
        assert encoder is module.encoder


def test_a_network_with_nothing_but_forward_trains_on_its_logits():
    module = Plain()
    assert not isinstance(module, TrainsOnOutputs) and not isinstance(module, NamesItsCriterion)
    x = torch.rand(1, 3, 4, 4)
    outputs = training_outputs(module, x)
    assert list(outputs) == ["logits"] and torch.equal(outputs["logits"], module(x))
    assert criterion_name(module) == "segmentation" and encoder_of(module) is None


def test_training_outputs_are_those_of_forward_train():
    module = create_model("etnet", num_classes=2, edge_width=8).eval()
    assert isinstance(module, TrainsOnOutputs) and isinstance(module, NamesItsCriterion)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        outputs = training_outputs(module, x)
        assert set(outputs) == {"logits", "edge"}
        assert torch.equal(outputs["logits"], module(x))
