"""``wsiseg train``: train a registered network on a folder of image / mask pairs.

The options are the settings of :class:`~wsiseg.training.config.TrainConfig`, declared there.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from wsiseg.training.config import TrainConfig

from .common import handle_errors, on_interrupt
from .options import options_from


def _key_values(ctx: click.Context, param: click.Parameter,
                values: Sequence[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; VALUE is JSON when it parses (numbers, lists), else a string."""
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE (e.g. head_width=128)")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


_PATH = {"type": click.Path(path_type=Path)}
# Where click parses other than the declaration says: paths; open intervals (a setting's bounds
# are closed); and values left to the config to check, so that a bad one is told in its words.
_PARSING: dict[str, dict[str, Any]] = {
    "out": _PATH, "classes": _PATH, "attributes": _PATH, "val_data": _PATH,
    "image_mpp": {"type": click.FloatRange(min=0, min_open=True), "callback": None},
    "val_fraction": {"type": click.FloatRange(0, 1, min_open=True, max_open=True)},
    "stain_jitter": {"type": click.FloatRange(0, 1, max_open=True)},
    "lr": {"type": click.FloatRange(min=0, min_open=True), "callback": None},
    "arguments": {"multiple": True, "callback": _key_values},
    "loss_options": {"multiple": True, "callback": _key_values},
    "select_by": {"type": str},
    "seed": {"type": int},
    "amp": {"type": str},
}


@click.command()
@click.argument("model")
@click.argument("data", type=click.Path(path_type=Path))
@options_from(TrainConfig, exclude=("model", "data"), overrides=_PARSING)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def train(model: str, data: Path, quiet: bool, **settings: Any) -> None:
    """Train MODEL (a registered network) on DATA, a folder of NAME.jpg + NAME_mask.png."""
    import logging

    from wsiseg.training.loop import train as run

    logger = logging.getLogger("wsiseg")
    if logger.level > logging.INFO:
        logger.setLevel(logging.INFO)  # one line per epoch is the point of a training run
    # Made here, not by config_from: a setting the config refuses is told as a wsiseg error.
    config = TrainConfig(model=model, data=data, progress=not quiet and sys.stderr.isatty(),
                         **settings)
    on_interrupt(f"{config.out / 'last.pt'} holds the last finished epoch: rerun with --resume "
                 "to continue")
    result = run(config)
    click.echo(f"{result.best}: best {config.select_by} {result.best_score:.4f} at epoch "
               f"{result.best_epoch} of {result.epochs_run}; metrics in {result.metrics}")
