"""Training and evaluating networks on annotated images.

- :mod:`~wsiseg.training.config`: :class:`TrainConfig` and :class:`EvaluateConfig`, each
  setting declared once (torch-free);
- :mod:`~wsiseg.training.datasets`: folders of image/mask pairs and label schemes;
- :mod:`~wsiseg.training.losses`: each network's criterion;
- :mod:`~wsiseg.training.sampling`: the held-out split, augmented crops and batches (pure);
- :mod:`~wsiseg.training.loop`: :func:`train`, epoch by epoch;
- :mod:`~wsiseg.training.validation`: the held-out images scored after each epoch;
- :mod:`~wsiseg.training.state`: a run's checkpoints and history, and resuming it;
- :mod:`~wsiseg.training.metrics`: confusion matrices and scores (pure);
- :mod:`~wsiseg.training.evaluation`: results and models scored against ground truth;
- :mod:`~wsiseg.training.on_glass`: models scored through the whole pipeline, on annotated
  images placed on glass as slides.

A trained checkpoint becomes an installed model with :func:`wsiseg.models.export_model`.
"""

from __future__ import annotations

import importlib

# Where each name lives; the loop imports torch, so each is loaded on first use.
_HOMES = {
    "EvaluateConfig": "wsiseg.training.config",
    "TrainConfig": "wsiseg.training.config",
    "TrainResult": "wsiseg.training.loop",
    "train": "wsiseg.training.loop",
    "export_model": "wsiseg.models.loading",
}

__all__ = ["EvaluateConfig", "TrainConfig", "TrainResult", "export_model", "train"]


def __getattr__(name: str) -> object:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'wsiseg.training' has no attribute {name!r}")
