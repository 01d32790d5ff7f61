"""Building blocks and helpers that several networks share.

A block is an ``nn.Sequential`` whose children are numbered (conv, norm, activation): the
layout the networks' state-dict keys, and so every weights file, rely on.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU; ``padding = dilation * (kernel_size // 2)``.

    The padding keeps the size for odd kernels; ``groups`` gives grouped (depthwise) convs.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, *,
                 dilation: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2),
                      dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def bn_relu_conv(in_channels: int, out_channels: int, kernel_size: int = 1, *, groups: int = 1,
                 bias: bool = False) -> nn.Sequential:
    """Pre-activation unit: BatchNorm -> ReLU -> conv with 'same' padding for odd kernels."""
    return nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
                         nn.Conv2d(in_channels, out_channels, kernel_size,
                                   padding=kernel_size // 2, groups=groups, bias=bias))


def upsample_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` resized bilinearly (``align_corners=False``) to the height and width of ``like``."""
    return F.interpolate(x, size=[like.shape[-2], like.shape[-1]], mode="bilinear",
                         align_corners=False)


def init_conv_weights(*modules: nn.Module) -> None:
    """Kaiming-normal (fan out, ReLU) weights and zero biases for every conv in ``modules``.

    The convs are visited in order, module by module, so a seeded network draws the same
    weights as before.
    """
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


def is_positive_int(value: Any) -> bool:
    """Whether ``value`` is an int above zero (a bool is not: ``True`` is no width)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
