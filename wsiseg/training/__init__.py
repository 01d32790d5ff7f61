"""Training and evaluating networks on annotated images.

- :mod:`~wsiseg.training.datasets`: folders of image/mask pairs and label schemes;
- :mod:`~wsiseg.training.losses`: each network's criterion;
- :mod:`~wsiseg.training.sampling`: the held-out split, augmented crops and batches (pure);
- :mod:`~wsiseg.training.loop`: :func:`train` and :func:`export_model`;
- :mod:`~wsiseg.training.metrics`: confusion matrices and scores (pure);
- :mod:`~wsiseg.training.evaluation`: results and models scored against ground truth;
- :mod:`~wsiseg.training.on_glass`: models scored through the whole pipeline, on annotated
  images placed on glass as slides.
"""

from __future__ import annotations

__all__ = ["TrainConfig", "TrainResult", "export_model", "train"]


def __getattr__(name: str):
    # The loop imports torch; load it on first use.
    if name in __all__:
        from wsiseg.training import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'wsiseg.training' has no attribute {name!r}")
