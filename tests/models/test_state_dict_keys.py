"""State-dict keys are the networks' interface to every file of weights: the shipped weights
load bit for bit, and no network's keys change."""

from __future__ import annotations

import hashlib

import pytest
import torch

from wsiseg.cards import ModelCard
from wsiseg.models import create_model, default_card, installed_cards, list_models, load_model

#: sha256 of "\n".join(sorted state-dict keys) of each registered network built with its
#: default card's arguments. Golden values, recorded from the networks as they were before
#: their shared blocks moved to models/layers.py: every checkpoint and installed weights file
#: is keyed by these names, so a refactoring must leave them as they are. A deliberate change
#: of a network's layout changes its value here, and leaves checkpoints saved before it
#: unloadable.
KEYS_SHA256 = {
    "ehanet": "6df32810c0e85fc2fd9c34101b460dc10fba26bbbec953b48fba579f73e6b6f2",
    "ernet": "85cefcdb37df27130d54ddd61047ae1be2f768982417aaaf0b5d4ffda821ee59",
    "etnet": "23b51138b0153d0a51f2bd362a427cc0b20d912e7d09aca82e29b829bb60b423",
    "fullnet": "8e30e75051b887d21e9806553597f887d2d95a8db564b0dca6392ccc46ab7623",
    "hspnet_r101": "07f96fb5200089e3d6288fb25cb281c6322ce997ee32ec6538a1b40175cf9529",
    "hspnet_r18": "5448ddb56ba970b23a2301efc7a12d71f1d5aa5106d3ec43161f0e9d5583d490",
    "hspnet_r34": "33a50b9ca74ba55d57dfda26bdeaadfe428fdb46d9c3dac7a2bae2aad8e0e13b",
}

#: Installed cards that name a weights file beside them.
WITH_WEIGHTS = sorted(name for name, path in installed_cards().items()
                      if ModelCard.from_json(path.read_text(encoding="utf-8")).weights)


def keys_sha256(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()


def test_every_registered_network_has_a_recorded_key_set():
    assert sorted(KEYS_SHA256) == list_models()


@pytest.mark.parametrize("name", list_models())
def test_a_fresh_network_has_its_recorded_state_dict_keys(name):
    with torch.device("meta"):  # shapes only: even the largest network is built at once
        module = create_model(name, **default_card(name).arguments)
    assert keys_sha256(list(module.state_dict())) == KEYS_SHA256[name]


def test_a_model_with_weights_is_installed():
    assert WITH_WEIGHTS  # else the test below checks nothing


@pytest.mark.parametrize("name", WITH_WEIGHTS)
def test_installed_weights_load_strictly_and_bit_for_bit(name):
    card_path = installed_cards()[name]
    card = ModelCard.from_json(card_path.read_text(encoding="utf-8"))
    weights_path = card_path.parent / card.weights
    saved = torch.load(weights_path, map_location="cpu", weights_only=True)
    saved = saved.get("state_dict", saved)  # a checkpoint, or a bare state dict

    loaded = load_model(name)  # strict loading, and the card's sha256 checked
    assert loaded.weights_sha256 == card.weights_sha256
    state = loaded.module.state_dict()
    assert state.keys() == saved.keys()
    for key, tensor in saved.items():
        # fp16 on disk, fp32 in the network: widening is exact, so equal means bit for bit
        assert torch.equal(state[key], tensor.to(state[key].dtype)), key
    fresh = create_model(card.architecture, **card.arguments)
    result = fresh.load_state_dict(saved, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
