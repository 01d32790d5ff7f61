"""What the pipeline needs of a network.

Inference needs a :class:`SegmentationNetwork`: called on a normalised batch (B, 3, H, W), it
gives the class logits (B, K, H, W) at the input size. Training can use three more parts; each
is optional, and a network without it trains with the default:

- ``forward_train(x)`` (:class:`TrainsOnOutputs`): the :class:`TrainingOutputs` its criterion
  supervises, the logits and e.g. an edge map; default ``{"logits": network(x)}``;
- ``loss`` (:class:`NamesItsCriterion`): the name of its criterion (a key of
  :data:`wsiseg.training.losses.CRITERIA`); default ``"segmentation"``;
- ``encoder``: the child module (a backbone that may be pretrained) that trains at
  ``lr * encoder_lr_scale``; default none, every parameter trains at ``lr``.

:func:`training_outputs`, :func:`criterion_name` and :func:`encoder_of` apply these rules.
"""

from __future__ import annotations

from typing import Protocol, TypedDict, runtime_checkable

import torch
from torch import nn

#: The criterion of a network that names none.
DEFAULT_CRITERION = "segmentation"


class _Logits(TypedDict):
    logits: torch.Tensor


class TrainingOutputs(_Logits, total=False):
    """A network's outputs in training: ``"logits"`` (B, K, H, W), and those of them its
    criterion supervises as well, each at the input size: ``"edge"`` (B, 1, H, W) edge-map
    logits, ``"side"`` one-channel side outputs (B, 1, H, W) of decoder stages, ``"grade"``
    (B, G) logits of a per-image grade."""

    edge: torch.Tensor
    side: list[torch.Tensor]
    grade: torch.Tensor


class SegmentationNetwork(Protocol):
    """What inference needs of a network: ``network(x)`` on a normalised float batch
    (B, 3, H, W) gives the class logits (B, K, H, W) at the input size."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class TrainsOnOutputs(Protocol):
    """A network whose training outputs go beyond its logits (see :class:`TrainingOutputs`)."""

    def forward_train(self, x: torch.Tensor) -> TrainingOutputs: ...


@runtime_checkable
class NamesItsCriterion(Protocol):
    """A network that trains with a criterion of its own, named by a class attribute."""

    loss: str


def training_outputs(network: SegmentationNetwork, x: torch.Tensor) -> TrainingOutputs:
    """What ``network`` gives its criterion for the batch ``x``."""
    if isinstance(network, TrainsOnOutputs):
        return network.forward_train(x)
    logits: torch.Tensor = network(x)
    return {"logits": logits}


def criterion_name(network: nn.Module) -> str:
    """The name of the criterion ``network`` trains with."""
    if isinstance(network, NamesItsCriterion):
        return str(network.loss)
    return DEFAULT_CRITERION


def encoder_of(network: nn.Module) -> nn.Module | None:
    """The child module ``encoder`` of ``network``, None when it has none."""
    # Looked up by name among the children: nn.Module keeps them in its _modules, where the
    # isinstance check of a runtime Protocol does not look from Python 3.12 on.
    return dict(network.named_children()).get("encoder")
