"""Segmentation networks, their model cards, the registry by name and loading with cards.

``load_model(spec)`` is the entry point: a registered name, an installed card name, a
checkpoint or a TorchScript file gives a :class:`LoadedModel` (eval-mode module and its card).
"""

from __future__ import annotations

from wsiseg.cards import DIAGNOSTIC_CLASSES, ClassInfo, ModelCard

from .registry import create_model, default_card, list_models, register_model

# Importing the network modules fills the registry (once, at import time).
from . import hspnet  # noqa: F401  isort: skip
from . import etnet  # noqa: F401  isort: skip
from . import fullnet  # noqa: F401  isort: skip
from . import ehanet  # noqa: F401  isort: skip
from . import ernet  # noqa: F401  isort: skip
from .loading import (
    LoadedModel,
    export_model,
    installed_cards,
    load_model,
    save_checkpoint,
    save_torchscript,
)
from .protocol import (
    NamesItsCriterion,
    SegmentationNetwork,
    TrainingOutputs,
    TrainsOnOutputs,
)

__all__ = [
    "DIAGNOSTIC_CLASSES",
    "ClassInfo",
    "LoadedModel",
    "ModelCard",
    "NamesItsCriterion",
    "SegmentationNetwork",
    "TrainingOutputs",
    "TrainsOnOutputs",
    "create_model",
    "default_card",
    "export_model",
    "installed_cards",
    "list_models",
    "load_model",
    "register_model",
    "save_checkpoint",
    "save_torchscript",
]
