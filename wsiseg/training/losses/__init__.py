"""Training losses: shared building blocks (:mod:`.core`) and one criterion per network family.

A network names its criterion with a class attribute ``loss`` (default ``"segmentation"``; see
:mod:`wsiseg.models.protocol`); :func:`criterion_for` builds it. A criterion is called as
``criterion(outputs, batch)`` with the network's training outputs
(:func:`wsiseg.models.protocol.training_outputs`) and the batch, and returns the total loss and
its named parts (floats, for logging).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from torch import nn

from wsiseg.errors import ConfigError
from wsiseg.models.protocol import DEFAULT_CRITERION, criterion_name

# Criterion name -> "module:class", imported when used.
CRITERIA: dict[str, str] = {
    DEFAULT_CRITERION: "wsiseg.training.losses.segmentation:SegmentationCriterion",
    "fullnet": "wsiseg.training.losses.fullnet:FullNetCriterion",
    "etnet": "wsiseg.training.losses.etnet:ETNetCriterion",
    "ernet": "wsiseg.training.losses.ernet:ERNetCriterion",
    "ehanet": "wsiseg.training.losses.ehanet:EHANetCriterion",
}


def criterion_for(module: nn.Module, **options: Any) -> nn.Module:
    """Build the training criterion of ``module`` with keyword ``options`` (its weights)."""
    name = criterion_name(module)
    if name not in CRITERIA:
        raise ConfigError(f"no training criterion named {name!r}; known: {', '.join(CRITERIA)}")
    module_name, class_name = CRITERIA[name].split(":")
    cls: type[nn.Module] = getattr(importlib.import_module(module_name), class_name)
    accepted = set(inspect.signature(cls).parameters)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(f"the {name} criterion has no option(s) {unknown}; it takes "
                          f"{sorted(accepted) or 'none'}")
    return cls(**options)
