"""load_model: registry names, checkpoints, TorchScript, installed cards, and every way to fail."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from wsiseg.errors import ModelError, OutputError
from wsiseg.models import (
    ClassInfo,
    LoadedModel,
    ModelCard,
    create_model,
    default_card,
    installed_cards,
    load_model,
    loading,
    save_checkpoint,
    save_torchscript,
)
from wsiseg.testing.cli import error_line

# TorchScript is deprecated in torch 2.13 but still the portable format wsiseg reads.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

# A small HSP-Net (ResNet-18 trunk, narrow decoder) keeps files and forwards cheap.
SMALL_ARGS = {"num_classes": 3, "ds_widths": [8, 8, 8, 8], "hhsp_width": 8, "head_width": 8}


def small_card(**changes) -> ModelCard:
    card = ModelCard(
        name="small", architecture="hspnet_r18", arguments=dict(SMALL_ARGS),
        classes=(ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "normal", (0, 160, 0)),
                 ClassInfo(2, "lesion", (220, 0, 0))),
        mpp=2.0, patch_size=256, stride=64, description="test model",
    )
    return dataclasses.replace(card, **changes)


class Colour(torch.nn.Module):
    """A per-pixel model, quick to script."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.fixture(scope="module")
def small_model() -> torch.nn.Module:
    torch.manual_seed(1)
    return create_model("hspnet_r18", **SMALL_ARGS).eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(1, 3, 64, 48)


def run(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return module(x)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# --- registry names -------------------------------------------------------------------------


def test_registry_name_without_weights_is_untrained():
    loaded = load_model("hspnet_r18")
    assert isinstance(loaded, LoadedModel)
    assert (loaded.trained, loaded.weights_sha256, loaded.source) == (False, None, "hspnet_r18")
    assert loaded.card == default_card("hspnet_r18") and not loaded.module.training


@pytest.mark.slow
def test_registry_name_with_a_state_dict(tmp_path, x):
    torch.manual_seed(2)
    model = create_model("hspnet_r18").eval()
    path = tmp_path / "weights.pth"
    torch.save(model.state_dict(), path)
    loaded = load_model("hspnet_r18", weights=path)
    assert loaded.trained and loaded.weights_sha256 == sha256(path)
    assert loaded.card == default_card("hspnet_r18")
    assert torch.equal(run(loaded.module, x), run(model, x))


@pytest.mark.slow
def test_registry_name_with_its_checkpoint_uses_the_stored_card(tmp_path, small_model, x):
    path = save_checkpoint(tmp_path / "small.ckpt", small_model, small_card())
    loaded = load_model("hspnet_r18", weights=path)
    assert loaded.card == small_card() and loaded.card.num_classes == 3
    assert torch.equal(run(loaded.module, x), run(small_model, x))
    with pytest.raises(ModelError, match="checkpoint of 'hspnet_r18', not 'hspnet_r34'") as err:
        load_model("hspnet_r34", weights=path)
    assert str(path) in one_line(err)


@pytest.mark.slow
def test_state_dict_of_another_architecture_names_the_keys(tmp_path, small_model):
    path = tmp_path / "r18.pt"
    torch.save(small_model.state_dict(), path)
    with pytest.raises(ModelError) as err:
        load_model("hspnet_r34", weights=path)
    message = one_line(err)
    assert str(path) in message and "does not fit hspnet_r34" in message
    assert "encoder.layer1.2.conv1.weight" in message  # a ResNet-34 key that R18 lacks


def test_missing_weights_file():
    with pytest.raises(ModelError, match="nope.pt does not exist"):
        load_model("hspnet_r18", weights="nope.pt")


# --- checkpoints ------------------------------------------------------------------------------


@pytest.mark.slow
def test_checkpoint_round_trip(tmp_path, small_model, x):
    path = save_checkpoint(tmp_path / "small.pt", small_model, small_card())
    raw = torch.load(path, weights_only=True)
    assert (raw["format"], raw["version"]) == ("wsiseg-checkpoint", 1)
    assert raw["card"] == small_card().to_dict() and set(raw["state_dict"]) == set(
        small_model.state_dict())
    loaded = load_model(path)
    assert loaded.card == small_card() and loaded.trained and not loaded.module.training
    assert (loaded.source, loaded.weights_sha256) == (str(path), sha256(path))
    assert torch.equal(run(loaded.module, x), run(small_model, x))


@pytest.mark.slow
def test_checkpoint_with_extra_entries_loads_and_keeps_them(tmp_path, small_model, x):
    payload = loading.checkpoint_payload(small_model.state_dict(), small_card(),
                                         {"epoch": 3, "history": [{"loss": 0.5}]})
    path = loading.write_checkpoint(tmp_path / "last.pt", payload)
    raw = torch.load(path, weights_only=True)
    assert (raw["epoch"], raw["history"]) == (3, [{"loss": 0.5}])
    assert all(v.device.type == "cpu" and v.is_contiguous() for v in raw["state_dict"].values())
    loaded = load_model(path)
    assert loaded.card == small_card()
    assert torch.equal(run(loaded.module, x), run(small_model, x))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_failed_checkpoint_write_leaves_no_partial_file(tmp_path, small_model, monkeypatch):
    path = save_checkpoint(tmp_path / "small.pt", small_model, small_card())
    before = path.read_bytes()

    def disk_full(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(loading.torch, "save", disk_full)
    with pytest.raises(OutputError) as err:
        save_checkpoint(path, small_model, small_card(name="newer"))
    assert str(path) in one_line(err) and "no space left" in one_line(err)
    assert [p.name for p in tmp_path.iterdir()] == ["small.pt"]
    assert path.read_bytes() == before


@pytest.mark.slow
def test_checkpoint_with_wrong_keys_names_them(tmp_path, small_model):
    state = dict(small_model.state_dict())
    del state["head.2.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save({"format": "wsiseg-checkpoint", "version": 1, "card": small_card().to_dict(),
                "state_dict": state}, path)
    with pytest.raises(ModelError) as err:
        load_model(path)
    message = one_line(err)
    assert str(path) in message and "head.2.weight" in message and "extra.weight" in message


def test_checkpoint_whose_card_disagrees_with_its_weights(tmp_path, small_model):
    card = small_card(arguments={**SMALL_ARGS, "num_classes": 2},
                      classes=small_card().classes[:2])
    path = save_checkpoint(tmp_path / "k.pt", small_model, card)
    with pytest.raises(ModelError, match=r"head\.2\.weight is \(3, 8, 3, 3\) in the file"):
        load_model(path)


def test_checkpoint_with_a_bad_card(tmp_path, small_model):
    d = small_card().to_dict()
    d["stride"] = 0
    path = tmp_path / "c.pt"
    torch.save({"format": "wsiseg-checkpoint", "version": 1, "card": d,
                "state_dict": small_model.state_dict()}, path)
    with pytest.raises(ModelError, match=r"c\.pt \(its embedded card\): field 'stride' = 0"):
        load_model(path)


def test_checkpoint_of_a_later_version(tmp_path, small_model):
    path = tmp_path / "v2.pt"
    torch.save({"format": "wsiseg-checkpoint", "version": 2, "card": {}, "state_dict": {}}, path)
    with pytest.raises(ModelError, match="version 2.*update wsiseg"):
        load_model(path)


@pytest.mark.slow
def test_bare_state_dict_needs_an_architecture(tmp_path, small_model):
    path = tmp_path / "sd.pt"
    torch.save(small_model.state_dict(), path)
    with pytest.raises(ModelError) as err:
        load_model(path)
    message = one_line(err)
    assert "bare state dict without a card" in message
    # hspnet_r18's layers, narrowed: no --model NAME would build it, its card is the way
    assert "layers of hspnet_r18 built with other arguments" in message
    assert "save_checkpoint" in message and "--weights" not in message


@pytest.mark.slow
def test_a_bare_state_dict_is_told_the_network_it_fits(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(create_model("fullnet").state_dict(), path)
    with pytest.raises(ModelError) as err:
        load_model(path)
    assert f"they fit fullnet: use --model fullnet --weights {path}" in one_line(err)
    with pytest.raises(ModelError) as err:  # weights given for another network
        load_model("ehanet", weights=path)
    message = one_line(err)
    assert "does not fit ehanet" in message and "--model fullnet --weights" in message


@pytest.mark.slow
def test_weights_that_fit_no_network_are_not_guessed_at(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save({"conv.weight": torch.zeros(4, 3, 1, 1), "conv.bias": torch.zeros(4)}, path)
    with pytest.raises(ModelError) as err:
        load_model(path)
    message = one_line(err)
    assert "fit none of the registered networks" in message and "--model" not in message
    with pytest.raises(ModelError) as err:
        load_model("fullnet", weights=path)
    message = one_line(err)
    assert "does not fit fullnet" in message and "nor do they fit another" in message
    assert "--model" not in message


def test_weights_are_only_for_registry_names(tmp_path, small_model):
    path = save_checkpoint(tmp_path / "small.pt", small_model, small_card())
    with pytest.raises(ModelError, match="only for registered architectures"):
        load_model(path, weights=path)


# --- files that are not models ----------------------------------------------------------------


@pytest.mark.parametrize("content", [os.urandom(4096), b"", b"PK\x03\x04 truncated zip", None])
def test_not_a_model_file(tmp_path, small_model, content):
    path = tmp_path / "junk.pt"
    if content is None:  # a real checkpoint cut in half
        save_checkpoint(path, small_model, small_card())
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(ModelError) as err:
        load_model(path)
    message = one_line(err)
    assert str(path) in message and "not a PyTorch model file or is damaged" in message


def test_pickled_objects_are_refused_not_executed(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"model": Colour()}, path)  # whole module: needs unpickling code
    with pytest.raises(ModelError) as err:
        load_model(path)
    message = one_line(err)
    assert str(path) in message and "weights_only=True" in message and "Colour" in message


class _Touches:
    """Pickles to a call that would create a file: the proof that a load ran code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("how", ["whole module", "torch.save", "pickle.dump", "legacy"])
def test_code_in_a_pickle_is_named_and_never_run(tmp_path, how):
    import pickle

    path, marker = tmp_path / "model.pt", tmp_path / "ran"
    if how == "whole module":
        torch.save(Colour(), path)
        called = "Colour"
    elif how == "pickle.dump":
        path.write_bytes(pickle.dumps({"weights": _Touches(marker)}))
        called = "io.open"
    else:
        torch.save({"weights": _Touches(marker)}, path,
                   _use_new_zipfile_serialization=how != "legacy")
        called = "io.open"
    with pytest.raises(ModelError) as err:
        load_model(path)
    message = one_line(err)
    assert str(path) in message and "holds code, not plain weights" in message
    assert called in message and "weights_only=True" in message
    assert "torch.save(model.state_dict(), path)" in message and "save_checkpoint" in message
    assert "damaged" not in message
    assert not marker.exists()


@pytest.mark.slow
def test_cli_gives_one_line_for_code_and_for_weights_of_another_network(tmp_path, svs_x40):
    from click.testing import CliRunner

    from wsiseg.cli.main import main

    code, weights = tmp_path / "whole.pt", tmp_path / "fullnet.pt"
    torch.save(Colour(), code)
    torch.save(create_model("fullnet").state_dict(), weights)
    for args, words in ((["--model", code], ["whole.pt", "holds code"]),
                        (["--model", "hspnet_r34", "--weights", weights],
                         ["fullnet.pt", "does not fit hspnet_r34", "--model fullnet"])):
        result = CliRunner().invoke(main, ["predict", str(svs_x40.path), "--out",
                                           str(tmp_path / "out.zarr"), *map(str, args)])
        error_line(result, *words)


def test_other_torch_content(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(ModelError, match="holds a list, not a wsiseg checkpoint"):
        load_model(path)


def test_nothing_by_that_name():
    with pytest.raises(ModelError) as err:
        load_model("hspnet_r35")
    message = one_line(err)
    assert "hspnet_r35" in message and "hspnet_r34" in message and "existing file" in message


def test_a_folder_is_not_a_model(tmp_path):
    with pytest.raises(ModelError, match="not a file"):
        load_model(tmp_path)


# --- TorchScript ------------------------------------------------------------------------------


def colour_card() -> ModelCard:
    return ModelCard(name="colour", architecture="torchscript", arguments={"num_classes": 3},
                     classes=small_card().classes, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def test_torchscript_with_embedded_card(tmp_path, x):
    model = Colour().eval()
    path = save_torchscript(tmp_path / "colour.pt", torch.jit.script(model), colour_card())
    loaded = load_model(str(path))
    assert loaded.card == colour_card() and loaded.trained and not loaded.module.training
    assert (loaded.source, loaded.weights_sha256) == (str(path), sha256(path))
    assert torch.equal(run(loaded.module, x), run(model, x))


@pytest.mark.slow
def test_scripted_hspnet_round_trip(tmp_path, small_model, x):
    path = save_torchscript(tmp_path / "hsp.pt", torch.jit.script(small_model), small_card())
    loaded = load_model(path)
    assert loaded.card == small_card()
    assert torch.equal(run(loaded.module, x), run(small_model, x))


@pytest.mark.parametrize("beside", ["colour.card.json", "colour.json"])
def test_torchscript_with_card_beside_it(tmp_path, x, beside):
    model = Colour().eval()
    path = tmp_path / "colour.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    (tmp_path / beside).write_text(colour_card().to_json())
    loaded = load_model(path)
    assert loaded.card == colour_card()
    assert torch.equal(run(loaded.module, x), run(model, x))


def test_card_beside_torchscript_with_wrong_sha256(tmp_path):
    path = tmp_path / "colour.pt"
    torch.jit.save(torch.jit.script(Colour()), str(path))
    card = dataclasses.replace(colour_card(), weights_sha256="0" * 64)
    (tmp_path / "colour.card.json").write_text(card.to_json())
    with pytest.raises(ModelError, match="has sha256 .* expects 0000"):
        load_model(path)


def test_torchscript_without_card(tmp_path):
    path = tmp_path / "x.pt"
    torch.jit.save(torch.jit.script(Colour()), str(path))
    with pytest.raises(ModelError) as err:
        load_model(path)
    assert one_line(err) == ("x.pt is a TorchScript model without a card; put its card in "
                             "x.card.json beside it (see models/README.md)")


def test_torchscript_is_not_weights_for_a_registry_name(tmp_path):
    path = save_torchscript(tmp_path / "c.pt", torch.jit.script(Colour()), colour_card())
    with pytest.raises(ModelError, match="is a TorchScript model, not weights for hspnet_r18"):
        load_model("hspnet_r18", weights=path)


def test_save_torchscript_needs_a_script_module(tmp_path):
    with pytest.raises(ModelError, match="torch.jit.script"):
        save_torchscript(tmp_path / "c.pt", Colour(), colour_card())


# --- installed cards --------------------------------------------------------------------------


@pytest.fixture
def cards_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cards"
    folder.mkdir()
    monkeypatch.setattr(loading, "CARDS_DIR", folder)
    return folder


def install(folder: Path, weights: Path, card: ModelCard, sha: str | None = None) -> ModelCard:
    card = dataclasses.replace(card, weights=weights.name,
                               weights_sha256=sha or sha256(weights))
    (folder / f"{card.name}.json").write_text(card.to_json())
    return card


@pytest.mark.slow
def test_installed_card_with_a_checkpoint(cards_dir, small_model, x):
    assert installed_cards() == {}
    weights = save_checkpoint(cards_dir / "small_weights.pt", small_model, small_card())
    card = install(cards_dir, weights, small_card())
    assert installed_cards() == {"small": cards_dir / "small.json"}
    loaded = load_model("small")
    assert loaded.card == card and loaded.trained
    assert loaded.source == str(cards_dir / "small.json")
    assert loaded.weights_sha256 == sha256(weights)
    assert torch.equal(run(loaded.module, x), run(small_model, x))


def test_installed_card_with_a_state_dict_or_torchscript(cards_dir, small_model, x):
    weights = cards_dir / "sd.pth"
    torch.save(small_model.state_dict(), weights)
    install(cards_dir, weights, small_card())
    assert torch.equal(run(load_model("small").module, x), run(small_model, x))
    scripted = cards_dir / "colour_ts.pt"
    torch.jit.save(torch.jit.script(Colour()), str(scripted))
    card = install(cards_dir, scripted, colour_card())
    assert load_model("colour").card == card


def test_installed_card_with_a_sha256_mismatch_is_refused(cards_dir, small_model):
    weights = save_checkpoint(cards_dir / "small_weights.pt", small_model, small_card())
    install(cards_dir, weights, small_card(), sha="f" * 64)
    with pytest.raises(ModelError) as err:
        load_model("small")
    message = one_line(err)
    assert "small_weights.pt" in message and "f" * 64 in message and sha256(weights) in message


def test_installed_card_without_its_weights_file(cards_dir):
    card = dataclasses.replace(small_card(), weights="gone.pt")
    (cards_dir / "small.json").write_text(card.to_json())
    with pytest.raises(ModelError, match="gone.pt does not exist"):
        load_model("small")


def test_installed_card_that_is_not_valid(cards_dir):
    d = small_card().to_dict()
    d["mpp"] = -1
    (cards_dir / "small.json").write_text(json.dumps(d))
    with pytest.raises(ModelError, match=r"small\.json: field 'mpp' = -1"):
        load_model("small")


def test_shipped_cards_are_valid_and_hold_the_default_model():
    folder = Path(loading.__file__).parent / "cards"
    cards = installed_cards()
    assert loading.DEFAULT_MODEL in cards and loading.default_model_name() == loading.DEFAULT_MODEL
    for name, path in cards.items():
        card = ModelCard.from_json(path.read_text(), source=str(path))
        weights = folder / card.weights
        assert card.name == name and weights.is_file()
        assert hashlib.sha256(weights.read_bytes()).hexdigest() == card.weights_sha256
        assert weights.stat().st_size < 32 * 2**20  # fp16 weights that fit a git repository
