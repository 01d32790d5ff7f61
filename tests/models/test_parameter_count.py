"""parameter_count(name): the size of a registered network, counted without building it."""

from __future__ import annotations

import pytest

# The count of this implementation, defined with the test that builds the network.
from test_registry_and_networks import MEASURED_HSPNET_R101

from wsiseg.errors import ModelError
from wsiseg.models import create_model, default_card, list_models
from wsiseg.models.registry import parameter_count


def test_the_count_is_that_of_the_network_built_with_its_default_card():
    name = "fullnet"  # the smallest network: quick to build for real
    module = create_model(name, **default_card(name).arguments)
    assert parameter_count(name) == sum(p.numel() for p in module.parameters())
    assert default_card("hspnet_r101").num_classes == 5
    assert parameter_count("hspnet_r101") == MEASURED_HSPNET_R101


def test_every_registered_network_is_counted():
    counts = {name: parameter_count(name) for name in list_models()}
    assert all(n > 0 for n in counts.values())
    assert counts["hspnet_r18"] < counts["hspnet_r34"] < counts["hspnet_r101"]


def test_an_unknown_name_is_refused():
    with pytest.raises(ModelError, match="hspnet_r34"):
        parameter_count("hspnet_r35")
