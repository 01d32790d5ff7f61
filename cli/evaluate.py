"""``wsiseg evaluate``: Dice, IoU, mIoU and pixel accuracy against ground truth.

Two inputs, one report: a predicted RESULT.zarr with its --mask, or a --model run over --data
folders of image / mask pairs, each image whole or, with --on-glass, placed on glass and mapped
through the whole pipeline. The scoring lives in :mod:`wsiseg.training.evaluation` and
:mod:`wsiseg.training.on_glass`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from wsiseg.inference.tta import TTA_MODES

from .common import handle_errors


def _indices(ctx, param, value):
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


def _groups(ctx, param, values):
    groups = {}
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


@click.command()
@click.argument("result", required=False, type=click.Path(path_type=Path))
@click.option("--mask", type=click.Path(path_type=Path), help="Ground-truth mask for RESULT: PNG or TIFF of class indices, at the map's size or the slide's level-0 size.")
@click.option("--model", help="Model to run over --data (installed name, checkpoint, ...).")
@click.option("--data", "folders", multiple=True, type=click.Path(path_type=Path), help="Folder of image / mask pairs (repeatable; scored together).")
@click.option("--image-mpp", type=click.FloatRange(min=0, min_open=True), help="Resolution of the --data images, um/px.")
@click.option("--classes", type=click.Path(path_type=Path), help="Label scheme JSON for --data masks (as in training).")
@click.option("--attributes", type=click.Path(path_type=Path), help="CSV of per-image attributes for the label scheme.")
@click.option("--mean-over", callback=_indices, help="Classes averaged in mean Dice / mIoU, e.g. 1,2,3 (default: all but background).")
@click.option("--group", "groups", multiple=True, callback=_groups, help="NAME=I,J: also score these classes together against the rest (repeatable), e.g. gland=2,3.")
@click.option("--ignore", type=click.IntRange(0, 255), default=255, show_default=True, help="Mask value that is not scored (RESULT only; --data masks use 255).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Also write the scores as JSON.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N (--data only).")
@click.option("--tta", type=click.Choice(TTA_MODES), default="none", show_default=True, help="Test-time augmentation (--data only): average over 4 flips (flip) or 8 flips and quarter turns (d4).")
@click.option("--on-glass", is_flag=True, help="Place each --data image on glass as a slide and map it through the whole pipeline (tissue detection, windows, resampling, blending); only the image's region is scored.")
@click.option("--margin", "margin_um", type=float, help="Glass around each image on every side, um (--on-glass; default 200).")
@handle_errors
def evaluate(result, mask, model, folders, image_mpp, classes, attributes, mean_over, groups,
             ignore, json_out, device, tta, on_glass, margin_um):
    """Score RESULT.zarr against --mask, or --model on --data folders."""
    from wsiseg.errors import ConfigError
    from wsiseg.training.evaluation import evaluate_folders, evaluate_result

    if result is not None and folders:
        raise click.UsageError("give either RESULT with --mask, or --model with --data")
    if margin_um is not None and not on_glass:
        raise ConfigError(f"--margin {margin_um:g} goes with --on-glass (the glass around each "
                          "image); add --on-glass or leave --margin out")
    if result is not None:
        if mask is None:
            raise click.UsageError("RESULT needs --mask, the ground truth to compare with")
        if on_glass or tta != "none":
            given = "--on-glass" if on_glass else f"--tta {tta}"
            raise ConfigError(f"{given} goes with --model and --data (a model run over image "
                              "folders), not with RESULT, a map already made; leave it out")
        unused = [o for o, v in (("--model", model), ("--image-mpp", image_mpp),
                                 ("--classes", classes), ("--attributes", attributes)) if v]
        if unused:
            raise click.UsageError(f"{', '.join(unused)} go with --data, not with RESULT")
        scores = evaluate_result(result, mask, mean_over, groups, ignore)
        text, data = scores.format_table(), scores.to_dict()
    elif folders:
        if model is None or image_mpp is None:
            raise click.UsageError("--data needs --model and --image-mpp (e.g. 0.62 for GlaS)")
        if mask is not None or ignore != 255:
            raise click.UsageError("--mask and --ignore go with RESULT; --data folders hold "
                                   "their own masks")
        if on_glass:
            from wsiseg.training.on_glass import DEFAULT_MARGIN_UM, evaluate_on_glass

            margin_um = DEFAULT_MARGIN_UM if margin_um is None else margin_um
            evaluation = evaluate_on_glass(model, folders, image_mpp, classes, attributes,
                                           mean_over, groups, device, margin_um=margin_um,
                                           tta=tta)
        else:
            evaluation = evaluate_folders(model, folders, image_mpp, classes, attributes,
                                          mean_over, groups, device, tta=tta)
        text, data = evaluation.format_report(), evaluation.to_dict()
    else:
        raise click.UsageError("give RESULT.zarr with --mask, or --model with --data")
    click.echo(text)
    if json_out is not None:
        from wsiseg.atomic import atomic_write

        with atomic_write(json_out) as f:
            f.write(json.dumps(data, indent=2, allow_nan=False) + "\n")
