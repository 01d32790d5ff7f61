"""How a slide becomes a map: :class:`PredictConfig`, each setting declared once.

Every field says whether it changes the map (``affects_map``); a batch keeps an earlier result
only when those settings are the same (:func:`changed_settings`). Torch-free, so the command
line builds its options from here without loading it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from wsiseg.errors import ConfigError
from wsiseg.inference.tta import TtaMode
from wsiseg.settings import setting, setting_fields, validate_fields
from wsiseg.slide.geometry import ANALYSIS_MPP_RANGE, PATCH_SIZE_RANGE, SLIDE_MPP_RANGE
from wsiseg.slide.reader import Reader

#: What a prediction does with artefacts (:mod:`wsiseg.slide.artefacts`): records them and
#: leaves them out of the analysable tissue (``record``), also leaves out the windows that lie
#: mostly on them (``exclude``), or looks for none (``off``).
QcMode = Literal["record", "exclude", "off"]
QC_MODES: tuple[QcMode, ...] = get_args(QcMode)

#: Precisions of the network's arithmetic (autocast); none, off and fp32 all mean float32.
#: auto takes bf16 on CUDA (fp16 where the GPU has no bf16) and on CPUs that multiply bf16 in
#: hardware, float32 on other CPUs (``wsiseg.inference.predictor.autocast_dtype``).
Precision = Literal["auto", "bf16", "fp16", "fp32", "none", "off"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)


def map_setting(default: Any, *, affects_map: bool, help: str, **kwargs: Any) -> Any:
    """A :func:`~wsiseg.settings.setting` of a prediction, which must say whether it changes
    the map: True when two results that differ only in it may differ (a batch then keeps an
    earlier result only if it was made with the same value), False when it changes only how
    or where the map is made. A setting added later must default to what wsiseg did before
    it existed: results that do not record it are taken to have been made with its default.
    """
    return setting(default, affects_map=affects_map, help=help, **kwargs)


@dataclass(frozen=True)
class PredictConfig:
    """Everything that decides how a slide becomes a map. ``None`` means "from the model card".

    A config is checked when it is made: one that exists is valid.
    """

    model: str | None = map_setting(
        None, affects_map=True,
        help="Installed model name, registry name (with --weights), checkpoint or TorchScript "
             "file.")
    weights: str | None = map_setting(
        None, affects_map=True, help="Weights for a registry model name.")
    # Who may run code, not what the map is; a result records it (a yes or no, nothing more).
    trust_code: bool = map_setting(
        False, affects_map=False,
        help="Load a TorchScript --model: it is code, run with your rights, so only one from "
             "a source you trust (scripts: WSISEG_TRUST_CODE=1).")
    out: str | None = map_setting(  # where, not what
        None, affects_map=False,
        help="The output zarr (default SLIDE.wsiseg.zarr beside the slide).")
    device: str = map_setting("auto", affects_map=False, help="auto, cpu, cuda or cuda:N.")
    batch_size: int | None = map_setting(
        None, affects_map=False, min=1, max=4096,
        help="Windows per forward pass (default: on slides of many windows the fastest of a "
             "short measurement, of 1, 2, 4 on the CPU and 32-256 on CUDA; else 1 on the CPU, "
             "32 on CUDA).")
    patch_size: int | None = map_setting(
        None, affects_map=True, min=PATCH_SIZE_RANGE[0], max=PATCH_SIZE_RANGE[1], unit="px",
        help="Window size in analysis pixels (default: the model card's).")
    stride: int | None = map_setting(
        None, affects_map=True, min=1, max=PATCH_SIZE_RANGE[1], unit="px",
        help="Window stride in analysis pixels (default: the model card's).")
    sigma: float | None = map_setting(
        None, affects_map=True, positive=True,
        help="Gaussian blending sigma in analysis pixels (default patch/8).")
    target_mpp: float | None = map_setting(
        None, affects_map=True, positive=True, min=ANALYSIS_MPP_RANGE[0],
        max=ANALYSIS_MPP_RANGE[1], unit="um/px",
        help="Analysis resolution in um/px (default: the model card's).")
    slide_mpp: float | None = map_setting(
        None, affects_map=True, positive=True, min=SLIDE_MPP_RANGE[0], max=SLIDE_MPP_RANGE[1],
        unit="um/px",
        help="The slide's level-0 resolution in um/px, when its metadata lacks it or is wrong.")
    tissue_threshold: float = map_setting(
        0.2, affects_map=True, min=0, max=1,
        error="tissue threshold is a fraction between 0 and 1, got {value}",
        help="Minimum tissue fraction of a window to predict it.")
    probabilities: bool = map_setting(
        False, affects_map=True, help="Also store per-class probabilities (uint8).")
    overwrite: bool = map_setting(
        False, affects_map=False,
        help="Replace existing results (a batch otherwise keeps them and does the rest).")
    threads: int | None = map_setting(
        None, affects_map=False, min=1,
        help="Reader threads (default: the cores this process may use).")
    reader: Reader = map_setting(
        "openslide", affects_map=False,
        help="Pixel decoder: OpenSlide (every format), tifffile (Aperio SVS and generic tiled "
             "TIFF, tiles decoded in parallel, several times faster) or auto (tifffile where "
             "it can).")
    # The map of a slide without damage is the same either way; one with holes where the
    # slide could not be read is kept only by a batch that skips damage too: changed_settings.
    skip_damaged: bool = map_setting(
        False, affects_map=False,
        help="Map the rest of a slide with tiles that cannot be decoded, instead of failing: "
             "windows touching them are not predicted, and they are listed in the result and "
             "marked in its 'damaged' mask.")
    tta: TtaMode = map_setting(
        "none", affects_map=True, label="test-time augmentation",
        help="Test-time augmentation: average each window's probabilities over its 4 flips "
             "(flip) or its 8 flips and quarter turns (d4); costs 4x or 8x the network time.")
    # Pen over glass stops being tissue, and --qc exclude drops windows: the map may change.
    qc: QcMode = map_setting(
        "record", affects_map=True, label="artefact detection",
        help="Pen ink and folds found on the slide's picture: record them in the result "
             "(labels/qc) and leave them out of the report's analysable tissue (record), also "
             "leave out the windows lying mostly on them, their pixels background (exclude), "
             "or look for none (off). Pen over glass is never tissue unless off.")
    compile: bool = map_setting(
        False, affects_map=False,
        help="Compile the network with torch.compile: up to a minute more at the start, "
             "faster after (1.4x for the installed model on a 2-core CPU); for large slides.")
    # The map is the same whatever the tiling of the work (the stitcher's invariance).
    band_height: int = map_setting(
        1000, affects_map=False, min=1, cli=False, help="Analysis rows read at a time.")
    stripe_width: int = map_setting(
        8192, affects_map=False, cli=False,
        help="Analysis columns blended at a time (rounded to output chunks).")
    chunk_size: int = map_setting(
        512, affects_map=False, cli=False, help="Edge of the output's zarr chunks.")
    # Float rounding only, as the device.
    amp: Precision = map_setting(
        "auto", affects_map=False, flag="--precision", label="precision",
        error="unknown precision {value!r}; use auto, bf16, fp16 or fp32",
        help="Arithmetic of the network: auto takes bf16 on CUDA and on CPUs with native bf16 "
             "(AVX512-BF16, AMX), where labels agree with fp32 on over 99.5% of pixels; fp32 "
             "elsewhere. fp16 is for CUDA only.")
    progress: bool = map_setting(
        True, affects_map=False, cli=False, help="Show progress bars.")

    def __post_init__(self) -> None:
        validate_fields(self)
        # Windows further apart than their size would leave strips of the slide unpredicted.
        if self.patch_size and self.stride and self.stride > self.patch_size:
            raise ConfigError(
                f"stride {self.stride} is larger than the patch size {self.patch_size}"
            )
        if self.chunk_size < 16 or self.stripe_width < self.chunk_size:
            raise ConfigError(
                f"chunk size {self.chunk_size} must be at least 16 and the stripe width "
                f"{self.stripe_width} at least one chunk"
            )

    def validate(self) -> None:
        """Check the settings again (they were checked when the config was made)."""
        self.__post_init__()

    def map_settings(self) -> dict[str, Any]:
        """The settings that change the map, by name, in field order."""
        return {name: getattr(self, name) for name in MAP_SETTINGS}


def _map_settings(cls: type) -> tuple[str, ...]:
    """The fields of ``cls`` that change the map; each must say whether it does."""
    names = []
    for f in setting_fields(cls):
        if f.spec.affects_map is None:  # declared with setting(), not map_setting()
            raise TypeError(f"{cls.__name__}.{f.name} must say whether it changes the map "
                            "(affects_map=True or False)")
        if f.spec.affects_map:
            names.append(f.name)
    return tuple(names)


#: Names of the settings that change the map (``affects_map=True``), in field order.
MAP_SETTINGS: tuple[str, ...] = _map_settings(PredictConfig)


def changed_settings(recorded: Mapping[str, Any], config: PredictConfig, *,
                     damaged: bool = False) -> list[str]:
    """The settings, by name, that change the map and in which ``config`` differs from
    ``recorded``, the config a result records (``ResultInfo.config``).

    A setting that ``recorded`` lacks was added after the result was made, which was made as
    its default does. ``damaged``: the result has holes where its slide could not be read,
    which only a config that skips damaged regions would leave (``skip_damaged``).
    """
    defaults = {f.name: f.default for f in setting_fields(PredictConfig)}
    changed = [name for name, value in config.map_settings().items()
               if recorded.get(name, defaults[name]) != value]
    if damaged and not config.skip_damaged:
        changed.append("skip_damaged")
    return changed
