"""FullNet (Qu et al., MICCAI 2019): a full-resolution network for gland and nucleus segmentation.

No pooling and no striding: a 3x3 stem, seven dense blocks of six dilated 3x3 layers (growth
24, dropout 0.1), each followed by a 1x1 transition that halves the channels (floor), and a
plain 3x3 convolution to the classes. Every unit is conv (no bias) -> LeakyReLU -> BatchNorm.
With three classes (background, gland interior, gland contour) it has exactly 1,780,233
parameters. It trains with pixel-weighted cross-entropy plus varCE (:mod:`wsiseg.training.losses.fullnet`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wsiseg.cards import ClassInfo, ModelCard
from wsiseg.errors import ModelError

from .layers import is_positive_int
from .protocol import TrainingOutputs
from .registry import register_model

#: Dilations of the six layers of each of the seven dense blocks (the authors' GlaS setting).
DILATIONS: tuple[tuple[int, ...], ...] = (
    (1, 1, 1, 1, 1, 1), (1, 2, 3, 1, 2, 3), (1, 2, 3, 5, 6, 7), (2, 5, 7, 9, 11, 14),
    (10, 13, 16, 17, 19, 21), (1, 2, 3, 5, 6, 7), (1, 1, 1, 1, 1, 1),
)

GLAND_INSTANCE_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(0, "background", (0, 0, 0)),
    ClassInfo(1, "gland interior", (0, 160, 0)),
    ClassInfo(2, "gland contour", (255, 220, 0)),
)


class Unit(nn.Sequential):
    """conv (no bias) -> LeakyReLU -> BatchNorm, the order of the authors' code."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 dilation: int = 1, negative_slope: float = 0.01) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2),
                      dilation=dilation, bias=False),
            nn.LeakyReLU(negative_slope, inplace=True),
            nn.BatchNorm2d(out_channels),
        )


class DenseBlock(nn.Module):
    """Layers that each add ``growth`` channels, seeing everything before them."""

    def __init__(self, in_channels: int, growth: int, dilations: Sequence[int],
                 dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            Unit(in_channels + i * growth, growth, 3, int(d)) for i, d in enumerate(dilations))
        self.dropout = float(dropout)
        self.out_channels = in_channels + len(dilations) * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            new = layer(x)
            if self.dropout:
                new = F.dropout(new, self.dropout, self.training)
            x = torch.cat([x, new], dim=1)
        return x


class FullNet(nn.Module):
    """FullNet; ``forward(x)`` gives logits (B, K, H, W) at the input size, any size.

    Arguments (per MODELS.md, from the authors' code): ``num_classes`` (3: background,
    interior, contour), ``stem_width`` (24), ``growth`` (24), ``dilations`` (seven blocks of
    six, :data:`DILATIONS`), ``dropout`` (0.1, on each new layer's output), ``negative_slope``
    of the LeakyReLU (0.01, *assumed*: PyTorch's default). The last convolution has no bias,
    which is what gives the published 1,780,233 parameters.
    """

    loss = "fullnet"

    def __init__(self, num_classes: int = 3, stem_width: int = 24, growth: int = 24,
                 dilations: Sequence[Sequence[int]] = DILATIONS, dropout: float = 0.1,
                 negative_slope: float = 0.01) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("stem_width", stem_width),
                            ("growth", growth)):
            if not is_positive_int(value):
                raise ModelError(f"FullNet {name} = {value!r} must be a positive integer")
        if (not isinstance(dilations, (list, tuple)) or not dilations
                or not all(isinstance(b, (list, tuple)) and b and all(
                    isinstance(d, int) and d > 0 for d in b) for b in dilations)):
            raise ModelError(f"FullNet dilations = {dilations!r} must be a list of blocks, each "
                             "a list of positive integers, e.g. [[1, 1], [1, 2]]")
        if not 0 <= dropout < 1:
            raise ModelError(f"FullNet dropout = {dropout!r} must be in [0, 1)")
        self.num_classes = num_classes
        self.stem = Unit(3, stem_width, 3, 1, negative_slope)
        blocks: list[nn.Module] = []
        channels = stem_width
        for block_dilations in dilations:
            block = DenseBlock(channels, growth, block_dilations, dropout)
            blocks += [block, Unit(block.out_channels, block.out_channels // 2, 1, 1,
                                   negative_slope)]
            channels = block.out_channels // 2
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Conv2d(channels, num_classes, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.features(self.stem(x)))
        return logits

    def forward_train(self, x: torch.Tensor) -> TrainingOutputs:
        return {"logits": self.forward(x)}


@register_model(default_card=ModelCard(
    name="fullnet", architecture="fullnet", arguments={"num_classes": 3},
    classes=GLAND_INSTANCE_CLASSES, mpp=0.62, patch_size=208, stride=104,
    description="FullNet (Qu et al.) for gland instances: background, interior and contour, "
                "at GlaS x20 (0.62 um/px); 208 px training crops as the authors used."))
def fullnet(num_classes: int = 3, **kwargs: Any) -> FullNet:
    """FullNet with the authors' GlaS settings (1,780,233 parameters with 3 classes)."""
    return FullNet(num_classes=num_classes, **kwargs)
