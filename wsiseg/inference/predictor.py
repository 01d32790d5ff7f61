"""Turning batches of uint8 patches into class probabilities on a device."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from wsiseg.errors import ConfigError, ModelError

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; other names are checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available; use --device cpu")
    return device


@dataclass(frozen=True)
class Normalisation:
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str = "RGB"


class Predictor:
    """Runs a segmentation network on uint8 (n, P, P, 3) RGB patches.

    Patches go to the device as uint8 (pinned on CUDA) and are normalised there; the network
    runs under ``torch.inference_mode`` (and bf16/fp16 autocast on CUDA); the result is the
    softmax over classes in float32, (n, C, P, P), left on the device for the stitcher.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        num_classes: int,
        normalisation: Normalisation,
        device: torch.device,
        amp: str | None = "auto",
    ) -> None:
        self.device = device
        self.num_classes = num_classes
        self.module = module.to(device).eval()
        order = [2, 1, 0] if normalisation.channel_order.upper() == "BGR" else [0, 1, 2]
        self._order = order
        mean = torch.tensor([normalisation.mean[i] for i in order], dtype=torch.float32)
        std = torch.tensor([normalisation.std[i] for i in order], dtype=torch.float32)
        self._scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1).to(device)
        self._shift = (-mean / std).view(1, 3, 1, 1).to(device)
        self.autocast_dtype = _autocast_dtype(device, amp)

    def to_device(self, patches: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(patches)
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t

    @torch.inference_mode()
    def __call__(self, patches: np.ndarray) -> torch.Tensor:
        x = self.to_device(patches)
        x = x.permute(0, 3, 1, 2)[:, self._order].float()
        x = x * self._scale + self._shift
        if self.autocast_dtype is not None:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                logits = self.module(x)
        else:
            logits = self.module(x)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        elif isinstance(logits, dict):
            logits = logits["out"]
        n, _, p, q = x.shape
        if logits.shape != (n, self.num_classes, p, q):
            raise ModelError(
                f"the network returned logits of shape {tuple(logits.shape)}, expected "
                f"{(n, self.num_classes, p, q)} from its card; check the card's classes and "
                "that the network outputs logits at the input size"
            )
        return torch.softmax(logits.float(), dim=1)


def _autocast_dtype(device: torch.device, amp: str | None) -> torch.dtype | None:
    if amp in (None, "none", "off", "fp32") or device.type != "cuda":
        return None
    if amp == "fp16":
        return torch.float16
    if amp in ("auto", "bf16"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    raise ConfigError(f"unknown precision {amp!r}; use auto, bf16, fp16 or fp32")


def segment_image(predictor: Predictor, image: np.ndarray, multiple: int = 32) -> np.ndarray:
    """Class probabilities (K, H, W) of a whole (H, W, 3) uint8 image, as a numpy array.

    The image is mirror-padded up to a multiple of ``multiple`` (the network's coarsest
    stride), so every pixel sees real context, and the padding is cut off again.
    """
    h, w = image.shape[:2]
    pad_h, pad_w = -h % multiple, -w % multiple
    mode = "reflect" if pad_h < h and pad_w < w else "edge"
    padded = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)
    probs = predictor(np.ascontiguousarray(padded[None]))[0, :, :h, :w]
    return probs.float().cpu().numpy()
