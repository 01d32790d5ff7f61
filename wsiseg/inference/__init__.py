"""Stage 2, inference: patches through the network and blended into the map.

- :mod:`~wsiseg.inference.grid`: where the windows are and which hold tissue (pure);
- :mod:`~wsiseg.inference.loader`: bands of the analysis image read once, cut into batches;
- :mod:`~wsiseg.inference.predictor`: batches of patches to class probabilities;
- :mod:`~wsiseg.inference.tta`: the flips and turns averaged at test time (pure);
- :mod:`~wsiseg.inference.stitcher`: streamed Gaussian blending into finished rows;
- :mod:`~wsiseg.inference.pipeline`: :func:`predict_slide`, which joins the stages.
"""

from __future__ import annotations

__all__ = ["PredictConfig", "predict_slide"]


def __getattr__(name: str) -> object:
    # The pipeline imports torch; load it on first use so `import wsiseg.inference.grid` stays light.
    if name in __all__:
        from wsiseg.inference import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'wsiseg.inference' has no attribute {name!r}")
