"""Model cards: round trips and validation of every field."""

from __future__ import annotations

import dataclasses
import json

import pytest

from wsiseg.errors import ModelError, WsisegError
from wsiseg.models import DIAGNOSTIC_CLASSES, ClassInfo, ModelCard


def good_dict() -> dict:
    return {
        "name": "hspnet_r34_mtchi",
        "architecture": "hspnet_r34",
        "arguments": {"num_classes": 3},
        "classes": [
            {"index": 0, "name": "background", "color": [0, 0, 0]},
            {"index": 1, "name": "normal", "color": [0, 160, 0]},
            {"index": 2, "name": "CIN3", "color": [220, 0, 0]},
        ],
        "mpp": 1.0,
        "patch_size": 400,
        "stride": 100,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "channel_order": "RGB",
        "description": "test card",
        "weights": "hspnet_r34_mtchi.pt",
        "weights_sha256": "ab" * 32,
    }


def test_diagnostic_classes_are_the_maps_standard_classes():
    assert [(c.index, c.name, c.color) for c in DIAGNOSTIC_CLASSES] == [
        (0, "background", (0, 0, 0)),
        (1, "normal", (0, 160, 0)),
        (2, "CIN1", (255, 220, 0)),
        (3, "CIN2", (255, 140, 0)),
        (4, "CIN3", (220, 0, 0)),
        (5, "tumour", (128, 0, 128)),
    ]


def test_round_trip_through_dict_and_json():
    card = ModelCard.from_dict(good_dict())
    assert card.num_classes == 3
    assert card.classes[2] == ClassInfo(2, "CIN3", (220, 0, 0))
    assert card.mean == (0.485, 0.456, 0.406) and isinstance(card.std, tuple)
    d = card.to_dict()
    assert d == good_dict()
    # JSON-safe: no tuples anywhere, and json gives the same dict back.
    assert json.loads(json.dumps(d)) == d
    assert isinstance(d["classes"][0]["color"], list) and isinstance(d["mean"], list)
    assert ModelCard.from_dict(d) == card
    assert ModelCard.from_json(card.to_json()) == card


def test_defaults_and_hand_built_cards_equal_parsed_ones():
    card = ModelCard(name="m", architecture="hspnet_r18",
                     classes=(ClassInfo(0, "a", (1, 2, 3)), ClassInfo(1, "b", (4, 5, 6))))
    assert (card.mpp, card.patch_size, card.stride, card.channel_order) == (1.0, 400, 100, "RGB")
    assert card.mean == (0.485, 0.456, 0.406) and card.std == (0.229, 0.224, 0.225)
    assert card.weights is None and card.weights_sha256 is None and card.arguments == {}
    minimal = {"name": "m", "architecture": "hspnet_r18",
               "classes": [{"index": 0, "name": "a", "color": [1, 2, 3]},
                           {"index": 1, "name": "b", "color": [4, 5, 6]}]}
    assert ModelCard.from_dict(minimal) == card


def test_card_is_frozen_and_replace_validates():
    card = ModelCard.from_dict(good_dict())
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.mpp = 2.0  # type: ignore[misc]
    assert dataclasses.replace(card, mpp=0.5).mpp == 0.5
    with pytest.raises(ModelError, match="mpp"):
        dataclasses.replace(card, mpp=-1.0)


def test_sha256_is_normalised_to_lower_case():
    d = good_dict()
    d["weights_sha256"] = "AB" * 32
    assert ModelCard.from_dict(d).weights_sha256 == "ab" * 32


def _set(key, value):
    def change(d):
        d[key] = value
    return change


def _drop(key):
    def change(d):
        del d[key]
    return change


def _class(i, key, value):
    def change(d):
        d["classes"][i][key] = value
    return change


BAD = {
    "missing classes": (_drop("classes"), "classes"),
    "missing architecture": (_drop("architecture"), "architecture"),
    "unknown field": (_set("patchsize", 512), "patchsize"),
    "empty name": (_set("name", ""), "name"),
    "architecture not a string": (_set("architecture", 5), "architecture"),
    "arguments not an object": (_set("arguments", [5]), "arguments"),
    "num_classes disagrees": (_set("arguments", {"num_classes": 5}), "num_classes"),
    "classes empty": (_set("classes", []), "classes"),
    "classes not a list": (_set("classes", "background"), "classes"),
    "class without colour": (lambda d: d["classes"][1].pop("color"), "classes"),
    "indices not from 0": (lambda d: [c.update(index=c["index"] + 1) for c in d["classes"]],
                           "index"),
    "indices with a gap": (_class(2, "index", 3), "index"),
    "index not an int": (_class(1, "index", "1"), "index"),
    "duplicate class name": (_class(2, "name", "normal"), "classes"),
    "colour over 255": (_class(1, "color", [0, 256, 0]), "color"),
    "colour negative": (_class(1, "color", [0, -1, 0]), "color"),
    "colour of two": (_class(1, "color", [0, 1]), "color"),
    "colour float": (_class(1, "color", [0.5, 1, 1]), "color"),
    "mpp zero": (_set("mpp", 0), "mpp"),
    "mpp negative": (_set("mpp", -1.0), "mpp"),
    "mpp string": (_set("mpp", "1.0"), "mpp"),
    "mpp nan": (_set("mpp", float("nan")), "mpp"),
    "patch_size zero": (_set("patch_size", 0), "patch_size"),
    "patch_size float": (_set("patch_size", 400.0), "patch_size"),
    "stride zero": (_set("stride", 0), "stride"),
    "stride over patch": (_set("stride", 401), "stride"),
    "mean of two": (_set("mean", [0.5, 0.5]), "mean"),
    "mean in 0..255": (_set("mean", [123.7, 116.3, 103.5]), "mean"),
    "std zero": (_set("std", [0.2, 0.0, 0.2]), "std"),
    "std in 0..255": (_set("std", [58.4, 57.1, 57.4]), "std"),
    "std of four": (_set("std", [0.2, 0.2, 0.2, 0.2]), "std"),
    "channel order": (_set("channel_order", "RBG"), "channel_order"),
    "weights with a folder": (_set("weights", "../elsewhere/w.pt"), "weights"),
    "sha256 too short": (_set("weights_sha256", "abc123"), "weights_sha256"),
    "description not text": (_set("description", 3), "description"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_card_names_its_field_in_one_line(case):
    change, field = BAD[case]
    d = good_dict()
    change(d)
    with pytest.raises(ModelError) as info:
        ModelCard.from_dict(d, source="cards/bad.json")
    message = str(info.value)
    assert field in message
    assert message.startswith("cards/bad.json")
    assert "\n" not in message
    assert isinstance(info.value, (WsisegError, ValueError))


def test_bad_value_is_quoted_in_the_message():
    d = good_dict()
    d["stride"] = 401
    with pytest.raises(ModelError, match=r"'stride' = 401 .*1\.\.patch_size \(400\)"):
        ModelCard.from_dict(d)


def test_hand_built_bad_card_is_refused_too():
    with pytest.raises(ModelError, match="channel_order"):
        ModelCard(name="m", architecture="x", classes=(ClassInfo(0, "a", (0, 0, 0)),),
                  channel_order="rgb")


def test_not_an_object_and_bad_json():
    with pytest.raises(ModelError, match="JSON object"):
        ModelCard.from_dict([1, 2, 3], source="x.json")
    with pytest.raises(ModelError, match=r"^x\.json is not valid JSON"):
        ModelCard.from_json("{name: 1", source="x.json")
