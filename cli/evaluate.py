"""``wsiseg evaluate``: Dice, IoU, mIoU and pixel accuracy against ground truth.

Two inputs, one report: a predicted RESULT.zarr with its --mask, or a --model run over --data
folders of image / mask pairs, each image whole or, with --on-glass, placed on glass and mapped
through the whole pipeline. The scoring lives in :mod:`wsiseg.training.evaluation` and
:mod:`wsiseg.training.on_glass`; the options of a --model run are the settings of
:class:`~wsiseg.training.config.EvaluateConfig`, declared there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from wsiseg.training.config import EvaluateConfig, check_margin

from .common import handle_errors
from .options import options_from


def _indices(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        indices = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        indices = []
    if not indices:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of class indices, "
                                 "e.g. 1,2,3")
    return indices


def _groups(ctx: click.Context, param: click.Parameter,
            values: Sequence[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for item in values:
        name, sep, members = item.partition("=")
        name = name.strip()
        try:
            indices = [int(v) for v in members.split(",")]
        except ValueError:
            indices = []
        if not sep or not name or not indices:
            raise click.BadParameter(f"{item!r} is not NAME=I,J (e.g. gland=2,3)")
        if name in groups:
            raise click.BadParameter(f"group {name!r} is given twice; give each group once")
        groups[name] = indices
    return groups


_PATH = {"type": click.Path(path_type=Path)}
# Where click parses other than the declaration says: what a RESULT does without (the model,
# its images and their resolution), paths, an open interval (a setting's bounds are closed),
# lists, and a margin left to the config to check, so that a bad one is told in its words.
_PARSING: dict[str, dict[str, Any]] = {
    "model": {"required": False},
    "folders": {**_PATH, "multiple": True, "required": False},
    "image_mpp": {"type": click.FloatRange(min=0, min_open=True), "callback": None,
                  "required": False},
    "classes": _PATH, "attributes": _PATH,
    "mean_over": {"callback": _indices},
    "groups": {"multiple": True, "callback": _groups},
    "margin_um": {"type": float},
}
# The options of a --model run, in two runs around those of a RESULT, as --help lists them.
_BEFORE_RESULT_OPTIONS = ("model", "folders", "image_mpp", "classes", "attributes",
                          "mean_over", "groups")
_AFTER_RESULT_OPTIONS = ("trust_code", "device", "tta", "on_glass", "margin_um")


@click.command()
@click.argument("result", required=False, type=click.Path(path_type=Path))
@click.option("--mask", type=click.Path(path_type=Path), help="Ground-truth mask for RESULT: PNG or TIFF of class indices, at the map's size or the slide's level-0 size.")
@options_from(EvaluateConfig, exclude=_AFTER_RESULT_OPTIONS,
              overrides={k: v for k, v in _PARSING.items() if k in _BEFORE_RESULT_OPTIONS})
@click.option("--ignore", type=click.IntRange(0, 255), default=255, show_default=True, help="Mask value that is not scored (RESULT only; --data masks use 255).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Also write the scores as JSON.")
@options_from(EvaluateConfig, exclude=_BEFORE_RESULT_OPTIONS,
              overrides={k: v for k, v in _PARSING.items() if k in _AFTER_RESULT_OPTIONS})
@handle_errors
def evaluate(result: Path | None, mask: Path | None, ignore: int, json_out: Path | None,
             **settings: Any) -> None:
    """Score RESULT.zarr against --mask, or --model on --data folders."""
    from wsiseg.errors import ConfigError
    from wsiseg.training.evaluation import evaluate_folders, evaluate_result

    folders, on_glass, tta = settings["folders"], settings["on_glass"], settings["tta"]
    if result is not None and folders:
        raise click.UsageError("give either RESULT with --mask, or --model with --data")
    check_margin(settings["margin_um"], on_glass)
    text: str
    data: dict[str, Any]
    if result is not None:
        if mask is None:
            raise click.UsageError("RESULT needs --mask, the ground truth to compare with")
        if on_glass or tta != "none":
            given = "--on-glass" if on_glass else f"--tta {tta}"
            raise ConfigError(f"{given} goes with --model and --data (a model run over image "
                              "folders), not with RESULT, a map already made; leave it out")
        unused = [o for o, name in (("--model", "model"), ("--image-mpp", "image_mpp"),
                                    ("--classes", "classes"), ("--attributes", "attributes"))
                  if settings[name]]
        if unused:
            raise click.UsageError(f"{', '.join(unused)} go with --data, not with RESULT")
        scores = evaluate_result(result, mask, settings["mean_over"], settings["groups"], ignore)
        text, data = scores.format_table(), scores.to_dict()
    elif folders:
        if settings["model"] is None or settings["image_mpp"] is None:
            raise click.UsageError("--data needs --model and --image-mpp (e.g. 0.62 for GlaS)")
        if mask is not None or ignore != 255:
            raise click.UsageError("--mask and --ignore go with RESULT; --data folders hold "
                                   "their own masks")
        # Made here, not by config_from: a setting the config refuses is told as a wsiseg error.
        evaluation = evaluate_folders(EvaluateConfig(**settings))
        text, data = evaluation.format_report(), evaluation.to_dict()
    else:
        raise click.UsageError("give RESULT.zarr with --mask, or --model with --data")
    click.echo(text)
    if json_out is not None:
        from wsiseg.atomic import atomic_write

        with atomic_write(json_out) as f:
            f.write(json.dumps(data, indent=2, allow_nan=False) + "\n")
