"""Load a network with its card: from the registry, a checkpoint, TorchScript or an installed card.

Weights and checkpoints are read with ``torch.load(weights_only=True)``: they hold tensors and
plain values only, never pickled code, so loading them runs nothing of the file's. A TorchScript
file is different: it is a program, whose ``forward`` may do anything its author wrote (read or
write files, say) with the rights of whoever runs it. It is loaded only when the caller trusts
it: ``trust_code=True`` (``--trust-code`` on the command line) or the environment variable
:data:`TRUST_CODE_ENV` set to ``1``; it is told from a weights file without running it (a zip
with ``constants.pkl`` and ``code/`` entries). Every failure a user can cause is a one-line
:class:`wsiseg.errors.ModelError` naming the file, the problem and the way out.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import pickletools
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import torch

from wsiseg.atomic import atomic_write
from wsiseg.cards import ModelCard
from wsiseg.errors import ModelError, first_line
from wsiseg.slide.geometry import ANALYSIS_MPP_RANGE, PATCH_SIZE_RANGE

from .registry import create_model, default_card, is_model, list_models

logger = logging.getLogger(__name__)

#: Folder of installed trained models: ``NAME.json`` cards and the weights files they name.
CARDS_DIR = Path(__file__).resolve().parent / "cards"
CHECKPOINT_FORMAT = "wsiseg-checkpoint"
CHECKPOINT_VERSION = 1
CARD_ENTRY = "wsiseg_card.json"  # name of the card inside a TorchScript archive
#: The environment variable that, set to ``1``, lets scripts load TorchScript files (as
#: ``trust_code=True`` does).
TRUST_CODE_ENV = "WSISEG_TRUST_CODE"
#: Parameters above which a card's arguments are taken for a mistake rather than a network:
#: the largest registered network has about 50 million; this is 1 GB of float32 weights.
MAX_PARAMETERS = 250_000_000


def trusts_code(trust_code: bool = False) -> bool:
    """Whether TorchScript files may be loaded: ``trust_code``, or :data:`TRUST_CODE_ENV` is 1."""
    return trust_code or os.environ.get(TRUST_CODE_ENV, "").strip() == "1"


@dataclass
class LoadedModel:
    """A network ready for inference (eval mode, on the CPU) and the card that says how to use it.

    ``source`` is the registry name, or the file the model came from (for an installed card,
    the card's path). ``weights_sha256`` is the checksum of the weights file read (None for an
    untrained registry model); ``trained`` is False only for registry models without weights.
    """

    module: torch.nn.Module
    card: ModelCard
    weights_sha256: str | None
    source: str
    trained: bool


def save_checkpoint(path: str | os.PathLike[str], module: torch.nn.Module, card: ModelCard,
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``module``'s state dict and ``card`` to ``path``, readable by :func:`load_model`.

    ``extra`` entries (e.g. a training run's optimizer state) are stored beside them.
    """
    return write_checkpoint(path, checkpoint_payload(module.state_dict(), card, extra))


def checkpoint_payload(state_dict: Mapping[str, torch.Tensor], card: ModelCard,
                       extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a checkpoint file holds: format and version, the card, the weights, ``extra``.

    The weights are copied to the CPU in the default memory layout, so the file loads on any
    device and the copy does not change while training goes on.
    """
    weights = {k: v.detach().to("cpu", memory_format=torch.contiguous_format).clone()
               for k, v in state_dict.items()}
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "card": card.to_dict(),
            "state_dict": weights, **(extra or {})}


def write_checkpoint(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> Path:
    """Write a :func:`checkpoint_payload` to ``path``, whole or not at all.

    A failure leaves no temporary file and any earlier file at ``path`` as it was; OS errors
    become an :class:`~wsiseg.errors.OutputError`.
    """
    path = Path(path)
    with atomic_write(path, "wb") as f:
        torch.save(dict(payload), f)
    return path


def export_model(checkpoint: str | os.PathLike[str], folder: str | os.PathLike[str], name: str,
                 description: str | None = None, half: bool = True) -> Path:
    """Install a checkpoint (e.g. a training run's ``best.pt``) as a named card with its weights.

    Writes ``folder/NAME.pt`` (state dict + card; ``half`` stores floats as fp16: half the
    size, and the network is rebuilt in fp32 on loading) and ``folder/NAME.json``, the card
    naming that file and its sha256. Returns the card's path.
    """
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    card = ModelCard.from_dict(state["card"], source=str(checkpoint))
    weights = {k: (v.half() if half and v.is_floating_point() else v)
               for k, v in state["state_dict"].items()}
    card = replace(card, name=name, description=description or card.description)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights_path = write_checkpoint(folder / f"{name}.pt", checkpoint_payload(weights, card))
    card_path = folder / f"{name}.json"
    with atomic_write(card_path) as f:
        f.write(replace(card, weights=weights_path.name,
                        weights_sha256=_sha256(weights_path)).to_json() + "\n")
    return card_path


def save_torchscript(path: str | os.PathLike[str], module: torch.jit.ScriptModule,
                     card: ModelCard) -> Path:
    """Write a scripted or traced ``module`` with ``card`` embedded, readable by load_model."""
    if not isinstance(module, torch.jit.ScriptModule):
        raise ModelError(f"save_torchscript needs a scripted or traced module, got "
                         f"{type(module).__name__}; pass torch.jit.script(model) or "
                         "torch.jit.trace(model, example), or use save_checkpoint")
    path = Path(path)
    with atomic_write(path, "wb") as f:
        torch.jit.save(module, f, _extra_files={CARD_ENTRY: card.to_json()})
    return path


#: The installed model ``wsiseg predict`` uses when no --model is given.
DEFAULT_MODEL = "hspnet-lite-glas"


def default_model_name() -> str | None:
    """The installed model to use when none is named: DEFAULT_MODEL, else the first by name."""
    cards = installed_cards()
    if DEFAULT_MODEL in cards:
        return DEFAULT_MODEL
    return min(cards) if cards else None


def installed_cards() -> dict[str, Path]:
    """Installed trained models: card name (file name without .json) -> card path."""
    if not CARDS_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(CARDS_DIR.glob("*.json")) if p.is_file()}


def load_model(spec: str | os.PathLike[str], weights: str | os.PathLike[str] | None = None,
               map_location: str | torch.device = "cpu", trust_code: bool = False
               ) -> LoadedModel:
    """Load a model and its card, in eval mode.

    ``spec`` is a registered name (``weights``: an optional checkpoint or state dict file), an
    installed card name (see :func:`installed_cards`), or a checkpoint written by
    :func:`save_checkpoint` or a TorchScript file written by :func:`save_torchscript` (or with
    its card beside it as ``NAME.card.json`` or ``NAME.json``). A TorchScript file is code and
    is loaded only with ``trust_code`` (or :data:`TRUST_CODE_ENV` set to 1, see
    :func:`trusts_code`); without, a :class:`ModelError` says so.
    """
    loaded = _load(spec, weights, map_location, trusts_code(trust_code))
    check_card_sizes(loaded.card, loaded.source)
    return loaded


def check_card_sizes(card: ModelCard, source: str) -> None:
    """Refuse a card whose resolution or window size no network is used at (a typo, or a
    broken file), in one line naming ``source``, the field and the sensible range."""
    low, high = ANALYSIS_MPP_RANGE
    if not low <= card.mpp <= high:
        raise ModelError(f"{source}: its card's mpp {card.mpp:g} um/px is implausible "
                         f"(sensible: {low:g}-{high:g} um/px, 1.0 at x10); fix the card's "
                         "'mpp' field")
    low_p, high_p = PATCH_SIZE_RANGE
    if not low_p <= card.patch_size <= high_p:
        raise ModelError(f"{source}: its card's patch_size {card.patch_size} is implausible "
                         f"(sensible: {low_p}-{high_p} px, e.g. 400); fix the card's "
                         "'patch_size' field")


def _load(spec: str | os.PathLike[str], weights: str | os.PathLike[str] | None,
          map_location: str | torch.device, trusted: bool) -> LoadedModel:
    if isinstance(spec, str) and is_model(spec):
        if spec in installed_cards():
            logger.warning("%s is a registered architecture; the installed card %s is ignored "
                           "(rename the card)", spec, installed_cards()[spec])
        return _from_registry(spec, weights, map_location)
    cards = installed_cards()
    installed = isinstance(spec, str) and spec in cards
    if not installed and not Path(spec).exists():
        raise ModelError(
            f"{spec} is neither a registered model ({', '.join(list_models())}), an installed "
            f"model ({', '.join(sorted(cards)) or 'none installed'}) nor an existing file; "
            "check the name or the path")
    if weights is not None:
        raise ModelError(f"weights={weights} is only for registered architectures "
                         f"({', '.join(list_models())}); {spec} brings its own weights, so "
                         "leave weights out")
    if installed:
        return _from_installed(str(spec), cards[str(spec)], map_location, trusted)
    return _from_file(Path(spec), map_location, trusted)


# --- the four kinds of spec -------------------------------------------------------------------


def _from_registry(name: str, weights: str | os.PathLike[str] | None,
                   map_location: str | torch.device) -> LoadedModel:
    if weights is None:
        logger.info("%s: random weights (no weights file given)", name)
        return LoadedModel(create_model(name).eval(), default_card(name), None, name, False)
    path = _existing_file(weights, "weights file")
    if _is_torchscript(path):
        raise ModelError(f"{path} is a TorchScript model, not weights for {name}; load it "
                         f"on its own (--model {path}) without weights")
    obj = _read_torch(path, map_location)
    if _is_checkpoint(obj, path):
        card = _checkpoint_card(obj, path)
        if card.architecture != name:
            raise ModelError(f"{path} is a checkpoint of {card.architecture!r}, not {name!r}; "
                             f"load it on its own (--model {path}) without weights")
        logger.info("%s: using the card stored in %s", name, path)
        module = _build(card, path)
        state = obj["state_dict"]
    elif _is_state_dict(obj):
        card, module, state = default_card(name), create_model(name), obj
    else:
        raise _not_weights(path, obj)
    _load_state(module, state, path, name)
    return LoadedModel(module.eval(), card, _sha256(path), name, True)


def _from_file(path: Path, map_location: str | torch.device, trusted: bool) -> LoadedModel:
    path = _existing_file(path, "model file")
    if _is_torchscript(path):
        return _from_torchscript(path, None, map_location, trusted)
    obj = _read_torch(path, map_location)
    if _is_checkpoint(obj, path):
        card = _checkpoint_card(obj, path)
        module = _build(card, path)
        _load_state(module, obj["state_dict"], path, card.architecture)
        return LoadedModel(module.eval(), card, _sha256(path), str(path), True)
    if _is_state_dict(obj):
        raise ModelError(f"{path} is a bare state dict without a card; "
                         f"{_bare_state_dict_way_out(obj, path)}")
    raise _not_weights(path, obj)


def _from_torchscript(path: Path, card: ModelCard | None,
                      map_location: str | torch.device, trusted: bool) -> LoadedModel:
    if not trusted:
        raise ModelError(
            f"{path} is a TorchScript model: code that runs with your rights (it may read or "
            "write your files), not plain weights; load it only if you trust where it came "
            f"from, with --trust-code ({TRUST_CODE_ENV}=1 in scripts), or ask for its weights "
            "as a checkpoint (wsiseg.models.save_checkpoint)")
    extra = {CARD_ENTRY: ""}
    try:
        # torch's stubs leave torch.jit.load untyped
        module = torch.jit.load(  # type: ignore[no-untyped-call]
            str(path), map_location=map_location, _extra_files=extra)
    except Exception as err:
        raise ModelError(f"{path} looks like a TorchScript model but cannot be loaded "
                         f"({first_line(err)}); re-export it with torch.jit.save") from err
    if card is None:
        card = _torchscript_card(path, extra[CARD_ENTRY])
    return LoadedModel(module.eval(), card, _sha256(path), str(path), True)


def _from_installed(name: str, card_path: Path, map_location: str | torch.device,
                    trusted: bool) -> LoadedModel:
    card = ModelCard.from_json(_read_text(card_path), source=str(card_path))
    if card.weights is None:
        raise ModelError(f"{card_path} names no weights file; set its 'weights' field to the "
                         "weights file beside it (see models/cards/README.md)")
    path = card_path.parent / card.weights
    if not path.is_file():
        raise ModelError(f"{card_path} names the weights {card.weights}, but {path} does not "
                         "exist; put the weights file beside the card")
    _verify_sha256(path, card, card_path)
    if _is_torchscript(path):
        loaded = _from_torchscript(path, card, map_location, trusted)
    else:
        obj = _read_torch(path, map_location)
        if _is_checkpoint(obj, path):
            state = obj["state_dict"]
        elif _is_state_dict(obj):
            state = obj
        else:
            raise _not_weights(path, obj)
        module = _build(card, card_path)
        _load_state(module, state, path, card.architecture)
        loaded = LoadedModel(module.eval(), card, _sha256(path), str(card_path), True)
    loaded.source = str(card_path)
    return loaded


# --- helpers ----------------------------------------------------------------------------------


def _existing_file(path: str | os.PathLike[str], what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{what} {path} does not exist; check the path")
    if not path.is_file():
        raise ModelError(f"{what} {path} is not a file; give the .pt/.pth/.ckpt file itself")
    return path


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ModelError(f"cannot read the card {path} ({err}); check the file") from err


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:  # hashlib.file_digest needs 3.11; setup.cfg allows 3.10
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_sha256(path: Path, card: ModelCard, card_path: Path) -> None:
    if card.weights_sha256 is None:
        logger.info("%s has no weights_sha256; %s is not verified", card_path, path)
        return
    actual = _sha256(path)
    if actual != card.weights_sha256:
        raise ModelError(f"{path} has sha256 {actual}, but its card {card_path} expects "
                         f"{card.weights_sha256}; the file is damaged or not the one the card "
                         "was written for: fetch it again or fix weights_sha256")


def _is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with constants.pkl and code/)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _read_torch(path: Path, map_location: str | torch.device) -> Any:
    """``torch.load(weights_only=True)`` with every failure turned into a ModelError."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        code = _code_in_pickle(path, str(err))
        if code is not None:
            raise _holds_code(path, code) from err
        raise _damaged(path, err) from err
    except Exception as err:
        raise _damaged(path, err) from err


def _holds_code(path: Path, code: list[str]) -> ModelError:
    what = ", ".join(code[:3]) + (f" and {len(code) - 3} more" if len(code) > 3 else "")
    return ModelError(
        f"{path} holds code, not plain weights: a pickled Python object that calls {what} when "
        "loaded (a whole model saved with torch.save(model), say), which the safe load "
        "(weights_only=True) refuses; where it was made, save the weights alone: "
        "torch.save(model.state_dict(), path) for --model NAME --weights FILE, or "
        "wsiseg.models.save_checkpoint(path, model, card) for a checkpoint with its card")


def _is_plain_global(name: str) -> bool:
    """Whether a pickle's global is one a ``torch.save`` of tensors and containers refers to
    (tensor rebuilding, storage types, dtypes): not code of its own."""
    module, _, attr = name.rpartition(".")
    if module in ("builtins", "__builtin__") and attr in _CONTAINERS:
        return True
    if name in ("collections.OrderedDict", "torch.Size", "torch.device") or \
            name.startswith("torch._utils._rebuild_"):
        return True
    return module == "torch" and (attr.endswith("Storage") or attr in _TORCH_DTYPES)


_CONTAINERS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "bool", "str",
               "bytes", "complex"}
_TORCH_DTYPES = {str(t).rpartition(".")[2] for t in vars(torch).values()
                 if isinstance(t, torch.dtype)}


def _code_in_pickle(path: Path, message: str) -> list[str] | None:
    """The callables the pickle in ``path`` would run when loaded (found without loading it),
    or None when it holds none: a damaged file, or not a pickle at all.

    ``message`` is torch's refusal; where the pickle cannot be walked, it may name what it
    refused ("Unsupported global: GLOBAL x.y", "unsupported GLOBAL x.y").
    """
    found = _pickle_globals(path)
    if found is not None:
        return [g for g in dict.fromkeys(found) if not _is_plain_global(g)] or None
    for line in message.splitlines():
        for marker in ("Unsupported global: GLOBAL ", "unsupported GLOBAL "):
            if marker in line:
                return [line.split(marker, 1)[1].split()[0]]
    return None


def _pickle_globals(path: Path) -> list[str] | None:
    """The ``module.name`` globals the pickle in ``path`` refers to, read with pickletools
    (nothing is run); None when it cannot be walked.

    A torch zip archive keeps its pickle in ``*/data.pkl``. Torch's legacy format is pickles
    one after the other (magic number, protocol, system info, the object, storage keys) with
    raw tensor bytes after them; a ``pickle.dump`` file is one pickle.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith("data.pkl")]
                return _globals_in(io.BytesIO(z.read(names[0]))) if names else None
        with open(path, "rb") as f:
            return _globals_in(f)
    except Exception:  # noqa: BLE001 - not a pickle, or a damaged one
        return None


def _globals_in(stream: IO[bytes], pickles: int = 4) -> list[str]:
    size = stream.seek(0, os.SEEK_END)
    stream.seek(0)
    found: list[str] = []
    for _ in range(pickles):  # up to the object of a legacy file, which holds the globals
        strings: list[str] = []
        for op, arg, _ in pickletools.genops(stream):
            if op.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            if isinstance(arg, str):
                strings.append(arg)
        if found or stream.tell() >= size:
            break
    return found


def _damaged(path: Path, err: BaseException) -> ModelError:
    return ModelError(f"{path} is not a PyTorch model file or is damaged "
                      f"({type(err).__name__}); give a checkpoint, state dict or TorchScript "
                      "file, or fetch it again")


def _is_checkpoint(obj: Any, path: Path) -> bool:
    if not isinstance(obj, Mapping) or obj.get("format") != CHECKPOINT_FORMAT:
        return False
    if obj.get("version") != CHECKPOINT_VERSION:
        raise ModelError(f"{path} is a wsiseg checkpoint of version {obj.get('version')!r}; "
                         f"this wsiseg reads version {CHECKPOINT_VERSION}: update wsiseg")
    if not isinstance(obj.get("state_dict"), Mapping) or "card" not in obj:
        raise ModelError(f"{path} is a wsiseg checkpoint without its card or state dict; "
                         "re-save it with wsiseg.models.save_checkpoint")
    return True


def _is_state_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def _not_weights(path: Path, obj: Any) -> ModelError:
    what = (f"a dict with keys {sorted(map(str, obj))[:5]}" if isinstance(obj, Mapping)
            else f"a {type(obj).__name__}")
    return ModelError(f"{path} holds {what}, not a wsiseg checkpoint or a state dict; save "
                      "the model with wsiseg.models.save_checkpoint")


def _checkpoint_card(obj: Mapping[str, Any], path: Path) -> ModelCard:
    return ModelCard.from_dict(obj["card"], source=f"{path} (its embedded card)")


def _torchscript_card(path: Path, embedded: bytes | str) -> ModelCard:
    if embedded:
        return ModelCard.from_json(embedded, source=f"{path} (its embedded {CARD_ENTRY})")
    stem = path.stem
    for beside in (path.with_name(f"{stem}.card.json"), path.with_name(f"{stem}.json")):
        if beside.is_file():
            card = ModelCard.from_json(_read_text(beside), source=str(beside))
            if card.weights_sha256 is not None:
                _verify_sha256(path, card, beside)
            logger.info("%s: card read from %s", path, beside)
            return card
    raise ModelError(f"{path.name} is a TorchScript model without a card; put its card in "
                     f"{stem}.card.json beside it (see models/README.md)")


def _build(card: ModelCard, source: Path) -> torch.nn.Module:
    """The registry network ``card`` describes, with errors naming ``source``; arguments that
    would build an implausibly large one are refused before any memory is taken."""
    _check_parameters(card, source)
    try:
        return create_model(card.architecture, **card.arguments)
    except ModelError as err:
        raise ModelError(f"{source}: its card cannot build a network: {err}") from err


def _check_parameters(card: ModelCard, source: Path) -> None:
    """Refuse arguments that make a network of more than :data:`MAX_PARAMETERS` parameters,
    counted on the meta device (shapes only: no memory). Arguments other than the class
    count that equal the defaults are known to build a network of sensible size."""
    if not is_model(card.architecture):
        return  # reported by create_model
    defaults = dict(default_card(card.architecture).arguments)
    given = {k: v for k, v in card.arguments.items() if k != "num_classes"}
    if all(defaults.get(k) == v for k, v in given.items()):
        return
    try:
        with torch.device("meta"):
            module = create_model(card.architecture, **card.arguments)
        count = sum(p.numel() for p in module.parameters())
    except ModelError as err:
        raise ModelError(f"{source}: its card cannot build a network: {err}") from err
    except Exception as err:  # absurd arguments break a factory in many ways
        raise ModelError(f"{source}: its card's arguments {card.arguments} cannot build "
                         f"{card.architecture} ({type(err).__name__}: {first_line(err)}); fix "
                         "the card's 'arguments'") from err
    if count > MAX_PARAMETERS:
        raise ModelError(
            f"{source}: its card's arguments {card.arguments} make {card.architecture} a "
            f"network of {count:.3g} parameters ({4 * count / 2**30:.3g} GiB of weights), "
            f"implausibly large (sensible: under {MAX_PARAMETERS:.3g}); fix the card's "
            "'arguments'")


def _fits(state: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Registered networks (with their default arguments) that ``state`` fits: (those whose
    tensor names and shapes all match, those with the same names but some other shapes).

    The networks are built on the meta device: shapes only, no memory, no initialisation.
    """
    exact: list[str] = []
    other_shapes: list[str] = []
    for name in list_models():
        try:
            with torch.device("meta"):
                expected = create_model(name, **default_card(name).arguments).state_dict()
        except Exception as err:  # noqa: BLE001 - a network that cannot be built so is not offered
            logger.debug("%s is not offered: it cannot be built by default (%s)", name, err)
            continue
        if expected.keys() != state.keys():
            continue
        same = all(isinstance(state[k], torch.Tensor) and state[k].shape == v.shape
                   for k, v in expected.items())
        (exact if same else other_shapes).append(name)
    return exact, other_shapes


def _fitting_network_hint(state: Mapping[str, Any], path: Path) -> str | None:
    """What ``state`` fits among the registered networks, as the way out; None when nothing
    fits (then no network is guessed)."""
    exact, other_shapes = _fits(state)
    if exact:
        return f"they fit {' and '.join(exact)}: use --model {exact[0]} --weights {path}"
    if other_shapes:
        name = other_shapes[0]
        return (f"they have the layers of {name} built with other arguments (e.g. "
                "num_classes): save them with their card (wsiseg.models.save_checkpoint) and "
                "pass that file as --model")
    return None


def _bare_state_dict_way_out(state: Mapping[str, Any], path: Path) -> str:
    hint = _fitting_network_hint(state, path)
    if hint is not None:
        return hint
    return (f"they fit none of the registered networks ({', '.join(list_models())}) as built "
            "by default; load them with the network and arguments they were saved from, as a "
            "checkpoint with its card (wsiseg.models.save_checkpoint)")


def _few(keys: list[str], n: int = 3) -> str:
    shown = ", ".join(keys[:n])
    return f"[{shown}{f', ... {len(keys) - n} more' if len(keys) > n else ''}]"


def _load_state(module: torch.nn.Module, state: Mapping[str, Any], path: Path, what: str) -> None:
    """Strict ``load_state_dict`` with a one-line message on any mismatch."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        hint = "it was saved from another architecture or with other arguments"
        if unexpected and all(str(k).startswith("module.") for k in unexpected):
            hint = "its keys start with 'module.' (saved from DataParallel): strip that prefix"
        elif (fit := _fitting_network_hint(state, path)) is not None:
            hint = fit
        else:
            hint = ("nor do they fit another registered network as built by default: load "
                    "them with the network and arguments they were saved from")
        raise ModelError(f"{path} does not fit {what}: missing keys {_few(missing)}, unexpected "
                         f"keys {_few([str(k) for k in unexpected])}; {hint}")
    wrong = [k for k, v in expected.items()
             if not isinstance(state[k], torch.Tensor) or state[k].shape != v.shape]
    if wrong:
        k = wrong[0]
        got = tuple(state[k].shape) if isinstance(state[k], torch.Tensor) else type(state[k])
        raise ModelError(f"{path} does not fit {what}: {len(wrong)} tensor(s) differ in shape, "
                         f"e.g. {k} is {got} in the file but {tuple(expected[k].shape)} in the "
                         "model; the card's arguments (e.g. num_classes) must match the weights")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ModelError(f"{path} does not fit {what} ({first_line(err)})") from err
