"""What training and scoring a model depend on: :class:`TrainConfig` and :class:`EvaluateConfig`.

Each setting is declared once, with :func:`wsiseg.settings.setting` (its default, check and help
text); ``wsiseg train`` and ``wsiseg evaluate`` build their options from the declarations. A
config is checked when it is made: one that exists is valid. Torch-free, so the command line
imports it without loading torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from wsiseg.errors import ConfigError
from wsiseg.inference.config import Precision
from wsiseg.inference.tta import TtaMode
from wsiseg.settings import setting, setting_fields, validate_fields

Optimizer = Literal["sgd", "adamw"]
OPTIMIZERS: tuple[Optimizer, ...] = get_args(Optimizer)
#: Validation scores that can choose ``best.pt``.
SelectBy = Literal["mean_dice", "mean_iou", "pixel_accuracy"]
SELECT_BY: tuple[SelectBy, ...] = get_args(SelectBy)

#: Glass around each image on every side, um, when a model is scored on glass and no margin
#: is given.
DEFAULT_MARGIN_UM = 200.0
#: What a glass margin below zero is told (here and by ``wsiseg.training.on_glass``).
MARGIN_ERROR = ("the glass margin must be 0 um or more, got {value:g} um; pass --margin 200, "
                "say")
#: What an image resolution that is not positive is told when scoring on image folders.
IMAGE_MPP_ERROR = "image resolution {value!r} um/px is not positive; pass --image-mpp (GlaS: 0.62)"


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; saved in its checkpoints.

    ``model`` is a registered network name; ``arguments`` override its constructor arguments
    (``num_classes`` follows the label scheme). ``lr`` is the decoder's learning rate and the
    encoder's is ``lr * encoder_lr_scale`` (HSP-Net: 10x smaller for a pretrained encoder).
    ``loss_options`` are keyword arguments of the network's criterion. ``on_glass`` is the share
    of crops drawn over the image laid on glass (and then the held-out images are scored laid on
    glass too); ``stain_jitter`` the strength of the stain augmentation; ``init`` a model
    (installed name or checkpoint) of the same network whose weights the run starts from.

    The fields are in the order ``wsiseg train --help`` lists them.
    """

    model: str = setting(help="A registered network.")
    data: Path = setting(help="Folder of NAME.jpg + NAME_mask.png.")
    out: Path = setting(help="Run folder: best.pt, last.pt, metrics.csv.")
    name: str | None = setting(
        None, help="Name written in the trained model's card (default MODEL-trained).")
    classes: Path | None = setting(
        None, help="Label scheme JSON: mask values (+ attributes, + tissue) to classes "
                   "(default: mask values are the card's classes).")
    attributes: Path | None = setting(
        None, help="CSV of per-image attributes (one row per image stem).")
    attributes_key: str = setting(
        "name", help="Column of --attributes holding the image stem.")
    # None is refused too, in __post_init__: its message names the images.
    image_mpp: float | None = setting(
        None, positive=True,
        error="image resolution {value} um/px is not positive; pass --image-mpp, e.g. 0.62 for "
              "GlaS at x20",
        help="Resolution of the images, um/px (GlaS: 0.62).")
    val_data: Path | None = setting(
        None, help="Separate validation folder (default: hold out part of DATA).")
    # Checked in __post_init__: it matters only without val_data.
    val_fraction: float = setting(0.15, help="Share of images (or groups) held out.")
    split_by: str | None = setting(
        None, help="Attribute whose groups stay on one side of the split (e.g. patient_id).")
    epochs: int = setting(
        50, min=1, error="epochs {value} is not a run; pass --epochs 1 or more",
        help="Passes over the training images (each draws --crops-per-image crops of each).")
    batch_size: int = setting(
        8, min=2, help="Crops per optimisation step (2 or more: BatchNorm needs two).",
        error="batch size {value} is too small: BatchNorm needs two samples; pass --batch-size "
              "2 or more")
    crop_size: int | None = setting(
        None, min=8,
        error="crop size {value} px is too small; pass --crop-size 8 or more (a multiple of 32 "
              "suits every network)",
        help="Crop size in px (default: the card's patch size, or less for small images).")
    crops_per_image: int = setting(
        1, min=1,
        error="crops per image {value} draws nothing; pass --crops-per-image 1 or more",
        help="Random crops drawn from each image per epoch.")
    on_glass: float = setting(
        0.0, min=0, max=1,
        error="on-glass share {value} must be between 0 and 1; pass e.g. --on-glass 0.5",
        help="Share of crops drawn over the image laid on glass, glass labelled background, so "
             "the network learns tissue edges as a slide shows them; held-out images are then "
             "scored on glass (e.g. 0.5).")
    # At least 0 and below 1: checked in __post_init__ (a setting's bounds are inclusive).
    stain_jitter: float = setting(
        0.0, help="Stain augmentation: each of H, E and DAB scaled by 1 +- this and shifted by "
                  "+- this optical density (0.05 light, 0.2 strong).")
    init: str | None = setting(
        None, help="Start from the weights of this model (installed name or checkpoint) of the "
                   "same network and arguments.")
    trust_code: bool = setting(
        False, help="Let --init be a TorchScript file: it is code, run with your rights, so "
                    "only one from a source you trust (scripts: WSISEG_TRUST_CODE=1).")
    optimizer: Optimizer = setting(
        "sgd", error="unknown optimizer {value!r}; use sgd or adamw",
        help="SGD with momentum 0.9, or AdamW.")
    lr: float = setting(
        1e-2, positive=True, error="learning rate {value} must be positive; pass e.g. --lr 0.01",
        help="Learning rate of the decoder and head.")
    encoder_lr_scale: float = setting(
        0.1, min=0,
        error="encoder learning-rate scale {value} is negative; pass --encoder-lr-scale 0 or "
              "more, e.g. 0.1",
        help="Encoder learning rate = lr x this.")
    weight_decay: float = setting(
        1e-4, min=0, help="Weight decay of the optimizer.",
        error="weight decay {value} is negative; pass --weight-decay 0 or more, e.g. 1e-4")
    warmup_epochs: int = setting(
        1, min=0, help="Epochs of linear learning-rate warm-up before the cosine decay.",
        error="warm-up epochs {value} is negative; pass --warmup-epochs 0 or more")
    arguments: Mapping[str, Any] = setting(
        default_factory=dict, flag="--arg",
        help="Network argument KEY=VALUE (repeatable), e.g. head_width=128.")
    loss_options: Mapping[str, Any] = setting(
        default_factory=dict, flag="--loss-option",
        help="Criterion option KEY=VALUE (repeatable), e.g. dice_weight=0.5.")
    select_by: SelectBy = setting(
        "mean_dice",
        error="cannot select checkpoints by {value!r}; use mean_dice, mean_iou or "
              "pixel_accuracy",
        help="Validation score that picks best.pt.")
    # numpy's generators, which draw the crops, take no negative seeds
    seed: int = setting(
        0, min=0, error="seed {value} is negative; pass --seed 0 or more",
        help="Seed of the split, the initial weights and every crop: a run is reproducible.")
    device: str = setting("auto", help="auto, cpu, cuda or cuda:N.")
    amp: Precision = setting(
        "auto", error="unknown precision {value!r}; use auto, bf16, fp16 or fp32",
        help="Mixed precision: auto, bf16, fp16 or fp32, as predict's --precision (auto: bf16 "
             "on CUDA and on CPUs with native bf16, fp32 on other CPUs; fp16 on CUDA only).")
    threads: int | None = setting(
        None, min=1, error="threads {value} cannot run; pass --threads 1 or more, or leave it out",
        help="CPU threads for torch.")
    resume: bool = setting(False, help="Continue the run in --out from its last.pt.")
    progress: bool = setting(False, cli=False, help="A progress bar over each epoch's batches.")

    def __post_init__(self) -> None:
        """Refuse a value no run can use, with one line naming it and the way out."""
        if self.image_mpp is None:
            raise ConfigError(f"the resolution of the images in {self.data} is not known; pass "
                              "--image-mpp (um per pixel, e.g. 0.62 for GlaS at x20)")
        validate_fields(self)
        if self.val_data is None and not 0 < self.val_fraction < 1:
            raise ConfigError(f"validation fraction {self.val_fraction} must be between 0 and 1; "
                              "or give --val-data")
        if not 0 <= self.stain_jitter < 1:
            raise ConfigError(f"stain jitter {self.stain_jitter} must be at least 0 and below 1; "
                              "pass e.g. --stain-jitter 0.05")

    def to_json_dict(self) -> dict[str, Any]:
        """The settings as JSON values (paths as strings), as a checkpoint stores them."""
        return _json_values(asdict(self))

    @classmethod
    def json_defaults(cls) -> dict[str, Any]:
        """The settings that have a default, at their defaults, as :meth:`to_json_dict` gives
        them: what a run saved before a setting existed ran with."""
        return _json_values({f.name: f.default for f in setting_fields(cls) if f.has_default})


def _json_values(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else dict(v) if isinstance(v, Mapping) else v
            for k, v in settings.items()}


@dataclass(frozen=True)
class EvaluateConfig:
    """How a model is scored on folders of annotated images (``evaluate_folders``).

    Each image is segmented whole at the model's resolution, or, with ``on_glass``, placed on
    glass ``margin_um`` wide (default :data:`DEFAULT_MARGIN_UM`) as a slide and mapped through
    the whole pipeline. ``classes`` is a label scheme JSON (default: mask values are the model's
    class indices), ``attributes`` a CSV of per-image attributes; ``mean_over`` and ``groups``
    are as in :meth:`wsiseg.training.metrics.Scores.from_matrix`; ``seed`` makes the glass's
    noise (different for each image) repeatable.

    The fields are in the order ``wsiseg evaluate --help`` lists them.
    """

    model: str = setting(help="Model to run over --data (installed name, checkpoint, ...).")
    folders: Sequence[str | os.PathLike[str]] = setting(
        flag="--data", help="Folder of image / mask pairs (repeatable; scored together).")
    image_mpp: float = setting(
        positive=True, error=IMAGE_MPP_ERROR, help="Resolution of the --data images, um/px.")
    classes: str | os.PathLike[str] | None = setting(
        None, help="Label scheme JSON for --data masks (as in training).")
    attributes: str | os.PathLike[str] | None = setting(
        None, help="CSV of per-image attributes for the label scheme.")
    mean_over: Sequence[int] | None = setting(
        None, help="Classes averaged in mean Dice / mIoU, e.g. 1,2,3 (default: all but "
                   "background).")
    groups: Mapping[str, Sequence[int]] = setting(
        default_factory=dict, flag="--group",
        help="NAME=I,J: also score these classes together against the rest (repeatable), e.g. "
             "gland=2,3.")
    trust_code: bool = setting(
        False, help="Load a TorchScript --model: it is code, run with your rights, so only "
                    "one from a source you trust (scripts: WSISEG_TRUST_CODE=1).")
    device: str = setting("auto", help="auto, cpu, cuda or cuda:N (--data only).")
    tta: TtaMode = setting(
        "none", label="test-time augmentation",
        help="Test-time augmentation (--data only): average over 4 flips (flip) or 8 flips and "
             "quarter turns (d4).")
    on_glass: bool = setting(
        False, help="Place each --data image on glass as a slide and map it through the whole "
                    "pipeline (tissue detection, windows, resampling, blending); only the "
                    "image's region is scored.")
    margin_um: float | None = setting(
        None, flag="--margin", min=0, error=MARGIN_ERROR,
        help="Glass around each image on every side, um (--on-glass; default 200).")
    seed: int = setting(
        0, cli=False, help="Seed of the glass's noise on glass (different for each image).")

    def __post_init__(self) -> None:
        check_margin(self.margin_um, self.on_glass)
        validate_fields(self)

    @property
    def glass_margin_um(self) -> float:
        """The glass around each image when scored on glass, um."""
        return DEFAULT_MARGIN_UM if self.margin_um is None else float(self.margin_um)


def check_margin(margin_um: float | None, on_glass: bool) -> None:
    """Refuse a glass margin without scoring on glass: it would be ignored."""
    if margin_um is not None and not on_glass:
        raise ConfigError(f"--margin {margin_um:g} goes with --on-glass (the glass around each "
                          "image); add --on-glass or leave --margin out")
