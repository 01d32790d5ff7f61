"""Registry of segmentation networks by name (timm style).

Each variant is a small factory function decorated with ``@register_model(default_card=...)``;
the function's name is the model name. The registry is filled when ``wsiseg.models`` is
imported and never changes afterwards.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from wsiseg.cards import ModelCard
from wsiseg.errors import ModelError

logger = logging.getLogger(__name__)

Factory = TypeVar("Factory", bound=Callable[..., torch.nn.Module])

_FACTORIES: dict[str, Callable[..., torch.nn.Module]] = {}
_DEFAULT_CARDS: dict[str, ModelCard] = {}


def register_model(*, default_card: ModelCard) -> Callable[[Factory], Factory]:
    """Register the decorated factory under its own name, with the card its output matches.

    ``default_card.name`` and ``default_card.architecture`` must both be the factory's name.
    """

    def decorate(fn: Factory) -> Factory:
        name = fn.__name__
        if name in _FACTORIES:
            raise ModelError(f"model {name!r} is registered twice; give the factory another name")
        if default_card.architecture != name or default_card.name != name:
            raise ModelError(
                f"default card of {name!r} has name {default_card.name!r} and architecture "
                f"{default_card.architecture!r}; both must be {name!r}")
        _FACTORIES[name] = fn
        _DEFAULT_CARDS[name] = default_card
        return fn

    return decorate


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_FACTORIES)


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model."""
    return name in _FACTORIES


def _unknown(name: str) -> ModelError:
    return ModelError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")


def default_card(name: str) -> ModelCard:
    """The card registered with model ``name`` (classes, resolution, patch, normalisation)."""
    if name not in _DEFAULT_CARDS:
        raise _unknown(name)
    return _DEFAULT_CARDS[name]


def create_model(name: str, **kwargs: Any) -> torch.nn.Module:
    """Build model ``name`` with random weights; keyword arguments left at None keep defaults."""
    if name not in _FACTORIES:
        raise _unknown(name)
    fn = _FACTORIES[name]
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        inspect.signature(fn).bind(**kwargs)
        return fn(**kwargs)
    except TypeError as err:
        if "argument" not in str(err):
            raise
        raise ModelError(f"model {name!r} does not take the arguments {sorted(kwargs)} ({err}); "
                         "fix the card's 'arguments' or the keyword arguments") from err


def parameter_count(name: str) -> int:
    """How many parameters model ``name`` has with its default card's arguments.

    The model is built on the meta device: shapes only, no memory and no initialisation, so
    even the largest network is counted at once.
    """
    with torch.device("meta"):
        module = create_model(name, **default_card(name).arguments)
    return sum(p.numel() for p in module.parameters())
