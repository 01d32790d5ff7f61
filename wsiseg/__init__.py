"""wsiseg: whole-slide image segmentation inference for computational pathology.

The main entry point is :func:`predict_slide` with a :class:`PredictConfig`. Heavy modules
(torch, OpenSlide) load on first use, so importing wsiseg is quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsiseg._version import __version__
from wsiseg.errors import (
    ConfigError,
    DamagedSlideError,
    DatasetError,
    MetricsError,
    ModelError,
    OutputError,
    ResolutionError,
    ResultError,
    SlideError,
    WsisegError,
)

if TYPE_CHECKING:  # loaded on first use by __getattr__ below, so importing wsiseg stays quick
    from wsiseg.inference.pipeline import PredictConfig, predict_slide
    from wsiseg.slide.reader import open_slide

__all__ = [
    "ConfigError",
    "DamagedSlideError",
    "DatasetError",
    "MetricsError",
    "ModelError",
    "OutputError",
    "PredictConfig",
    "ResolutionError",
    "ResultError",
    "SlideError",
    "WsisegError",
    "__version__",
    "open_slide",
    "predict_slide",
]


def __getattr__(name: str) -> object:
    if name in ("PredictConfig", "predict_slide"):
        from wsiseg.inference import pipeline

        return getattr(pipeline, name)
    if name == "open_slide":
        from wsiseg.slide.reader import open_slide

        return open_slide
    raise AttributeError(f"module 'wsiseg' has no attribute {name!r}")
