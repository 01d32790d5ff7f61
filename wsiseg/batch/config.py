"""How a batch runs: :class:`BatchConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field

from wsiseg.export import ExportOptions, check_formats
from wsiseg.inference.config import PredictConfig


@dataclass(frozen=True)
class BatchConfig:
    """How a batch runs: where results go, how each slide is predicted, what is exported."""

    out_dir: str
    predict: PredictConfig = field(default_factory=PredictConfig)
    overwrite: bool = False  # redo slides whose result exists
    exports: tuple[str, ...] = ()
    export_options: ExportOptions = field(default_factory=ExportOptions)
    progress: bool = True
    #: A bucket prefix (``s3://BUCKET/maps/``) each finished result and ``manifest.csv`` are
    #: published to (:mod:`wsiseg.result.publish`); ``out_dir`` is then the local staging
    #: folder the batch makes them in, and keeps its state in.
    publish_to: str | None = None

    def __post_init__(self) -> None:
        if self.exports:  # unknown formats are refused before any slide is predicted
            check_formats(self.exports)
