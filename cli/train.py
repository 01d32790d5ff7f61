"""``wsiseg train``: train a registered network on a folder of image / mask pairs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .common import handle_errors, on_interrupt


def _key_values(ctx, param, values):
    """KEY=VALUE pairs; VALUE is JSON when it parses (numbers, lists), else a string."""
    out = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE (e.g. head_width=128)")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


@click.command()
@click.argument("model")
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder: best.pt, last.pt, metrics.csv.")
@click.option("--name", help="Name written in the trained model's card (default MODEL-trained).")
@click.option("--classes", type=click.Path(path_type=Path), help="Label scheme JSON: mask values (+ attributes, + tissue) to classes (default: mask values are the card's classes).")
@click.option("--attributes", type=click.Path(path_type=Path), help="CSV of per-image attributes (one row per image stem).")
@click.option("--attributes-key", default="name", show_default=True, help="Column of --attributes holding the image stem.")
@click.option("--image-mpp", type=click.FloatRange(min=0, min_open=True), help="Resolution of the images, um/px (GlaS: 0.62).")
@click.option("--val-data", type=click.Path(path_type=Path), help="Separate validation folder (default: hold out part of DATA).")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.15, show_default=True, help="Share of images (or groups) held out.")
@click.option("--split-by", help="Attribute whose groups stay on one side of the split (e.g. patient_id).")
@click.option("--epochs", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=8, show_default=True)
@click.option("--crop-size", type=click.IntRange(min=8), help="Crop size in px (default: the card's patch size, or less for small images).")
@click.option("--crops-per-image", type=click.IntRange(min=1), default=1, show_default=True, help="Random crops drawn from each image per epoch.")
@click.option("--on-glass", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="Share of crops drawn over the image laid on glass, glass labelled background, so the network learns tissue edges as a slide shows them; held-out images are then scored on glass (e.g. 0.5).")
@click.option("--stain-jitter", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True, help="Stain augmentation: each of H, E and DAB scaled by 1 +- this and shifted by +- this optical density (0.05 light, 0.2 strong).")
@click.option("--init", help="Start from the weights of this model (installed name or checkpoint) of the same network and arguments.")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-2, show_default=True, help="Learning rate of the decoder and head.")
@click.option("--encoder-lr-scale", type=click.FloatRange(min=0), default=0.1, show_default=True, help="Encoder learning rate = lr x this.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-4, show_default=True)
@click.option("--warmup-epochs", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--arg", "arguments", multiple=True, callback=_key_values, help="Network argument KEY=VALUE (repeatable), e.g. head_width=128.")
@click.option("--loss-option", "loss_options", multiple=True, callback=_key_values, help="Criterion option KEY=VALUE (repeatable), e.g. dice_weight=0.5.")
@click.option("--select-by", default="mean_dice", show_default=True, help="Validation score that picks best.pt.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--amp", default="auto", show_default=True, help="Mixed precision on CUDA: auto, bf16, fp16 or fp32 (the CPU trains in fp32, as it predicts).")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for torch.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def train(model, data, out, name, classes, attributes, attributes_key, image_mpp, val_data,
          val_fraction, split_by, epochs, batch_size, crop_size, crops_per_image, optimizer, lr,
          encoder_lr_scale, weight_decay, warmup_epochs, arguments, loss_options, select_by,
          seed, device, amp, threads, resume, quiet, on_glass, stain_jitter, init):
    """Train MODEL (a registered network) on DATA, a folder of NAME.jpg + NAME_mask.png."""
    import logging

    from wsiseg.training.loop import TrainConfig
    from wsiseg.training.loop import train as run

    logger = logging.getLogger("wsiseg")
    if logger.level > logging.INFO:
        logger.setLevel(logging.INFO)  # one line per epoch is the point of a training run
    config = TrainConfig(
        model=model, data=data, out=out, name=name, arguments=arguments, classes=classes,
        attributes=attributes, attributes_key=attributes_key, image_mpp=image_mpp,
        val_data=val_data, val_fraction=val_fraction, split_by=split_by, epochs=epochs,
        batch_size=batch_size, crop_size=crop_size, crops_per_image=crops_per_image,
        on_glass=on_glass, stain_jitter=stain_jitter, init=init, optimizer=optimizer, lr=lr, encoder_lr_scale=encoder_lr_scale,
        weight_decay=weight_decay, warmup_epochs=warmup_epochs, loss_options=loss_options,
        select_by=select_by, seed=seed, device=device, amp=amp, threads=threads, resume=resume,
        progress=not quiet and sys.stderr.isatty(),
    )
    on_interrupt(f"{out / 'last.pt'} holds the last finished epoch: rerun with --resume to "
                 "continue")
    result = run(config)
    click.echo(f"{result.best}: best {select_by} {result.best_score:.4f} at epoch "
               f"{result.best_epoch} of {result.epochs_run}; metrics in {result.metrics}")
