"""HSP-Net: hierarchical spatial pyramid network (Meng et al.), as specified in MODELS.md.

A ResNet encoder gives C1..C4 (strides 4..32). V-HSP: DS-Blocks 1-4 reduce them to 32/64/128/256
channels, the last three are upsampled bilinearly to the C1 grid and all four concatenated
(480). H-HSP: DS-Block 5 maps the concatenation to 256 channels. A head of three 3x3 convs gives
the logits, upsampled bilinearly to the input size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from wsiseg.cards import DIAGNOSTIC_CLASSES, ModelCard
from wsiseg.errors import ModelError

from .layers import ConvBNReLU, init_conv_weights, is_positive_int, upsample_like
from .registry import register_model
from .resnet import create_encoder

logger = logging.getLogger(__name__)


class DSBlock(nn.Module):
    """DS-Block(c -> c'): parallel branches, concatenated, then 1x1 -> c' with BN+ReLU.

    Branches, each c -> c' with BN+ReLU: global average pool -> 1x1 -> upsample; 1x1; and one
    3x3 conv per entry of ``dilations`` (paper: 6, 12, 18), so five branches by default.

    The pooled branch normalises a 1x1 map: in training mode that needs a batch of more than
    one (BatchNorm cannot estimate variance from a single value); eval mode takes any batch.
    """

    def __init__(self, in_channels: int, out_channels: int,
                 dilations: Sequence[int] = (6, 12, 18)) -> None:
        super().__init__()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBNReLU(in_channels, out_channels))
        self.branches = nn.ModuleList(
            [ConvBNReLU(in_channels, out_channels)]
            + [ConvBNReLU(in_channels, out_channels, 3, dilation=int(d)) for d in dilations]
        )
        self.project = ConvBNReLU((len(dilations) + 2) * out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [upsample_like(self.pool(x), x)]
        for branch in self.branches:
            outs.append(branch(x))
        out: torch.Tensor = self.project(torch.cat(outs, dim=1))
        return out


class HSPNet(nn.Module):
    """HSP-Net segmentation network; ``forward(x)`` gives logits (B, K, H, W) at the input size.

    Arguments (those marked *assumed* are not given by the paper; defaults per MODELS.md):

    - ``encoder``: "resnet34" or "resnet101" in the paper ("resnet18", "resnet50" also work).
    - ``num_classes``: K, the number of output channels.
    - ``ds_widths``: output widths c'1..c'4 of DS-Blocks 1-4 (paper Table 1: 32/64/128/256).
    - ``hhsp_width``: output width of DS-Block 5 (256). Its input is the V-HSP concatenation,
      sum(ds_widths) = 480 channels; Table 1 lists 256 there, so 480 -> 256 is *assumed*.
    - ``dilations``: dilations of the three atrous branches of every DS-Block (6, 12, 18).
    - ``head_width``: width of the first two of the head's three 3x3 convs (256, *assumed*).

    Upsampling is bilinear with ``align_corners=False`` (*assumed*), to the exact C1 size in
    V-HSP and to the exact input size at the end, so inputs of any size work; sizes divisible
    by 32 give the paper's x4 final upsampling exactly. No dropout (*assumed*: none is
    mentioned). The pooled DS-Block branch uses BatchNorm like the others, so training needs
    batches of two or more; inference works with any batch.
    """

    def __init__(self, encoder: str = "resnet34", num_classes: int = 5,
                 ds_widths: Sequence[int] = (32, 64, 128, 256), hhsp_width: int = 256,
                 dilations: Sequence[int] = (6, 12, 18), head_width: int = 256) -> None:
        super().__init__()
        _check_arguments(num_classes, ds_widths, hhsp_width, dilations, head_width)
        self.encoder = create_encoder(encoder)
        self.num_classes = int(num_classes)
        self.vhsp = nn.ModuleList(
            DSBlock(c, int(w), dilations)
            for c, w in zip(self.encoder.out_channels, ds_widths, strict=True))
        self.hhsp = DSBlock(sum(int(w) for w in ds_widths), hhsp_width, dilations)
        self.head = nn.Sequential(
            ConvBNReLU(hhsp_width, head_width, 3),
            ConvBNReLU(head_width, head_width, 3),
            nn.Conv2d(head_width, num_classes, 3, padding=1),
        )
        init_conv_weights(self.vhsp, self.hhsp, self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        reduced = []
        for i, block in enumerate(self.vhsp):
            y = block(feats[i])
            if i > 0:
                y = upsample_like(y, feats[0])
            reduced.append(y)
        logits = self.head(self.hhsp(torch.cat(reduced, dim=1)))
        return upsample_like(logits, x)


def _check_arguments(num_classes: Any, ds_widths: Any, hhsp_width: Any, dilations: Any,
                     head_width: Any) -> None:
    if not is_positive_int(num_classes):
        raise ModelError(f"HSP-Net num_classes = {num_classes!r} must be a positive integer")
    if (not isinstance(ds_widths, (list, tuple)) or len(ds_widths) != 4
            or not all(is_positive_int(w) for w in ds_widths)):
        raise ModelError(f"HSP-Net ds_widths = {ds_widths!r} must be four positive integers, "
                         "e.g. [32, 64, 128, 256]")
    if not isinstance(dilations, (list, tuple)) or not all(is_positive_int(d) for d in dilations):
        raise ModelError(f"HSP-Net dilations = {dilations!r} must be positive integers, "
                         "e.g. [6, 12, 18]")
    for name, value in (("hhsp_width", hhsp_width), ("head_width", head_width)):
        if not is_positive_int(value):
            raise ModelError(f"HSP-Net {name} = {value!r} must be a positive integer, e.g. 256")


def _card(name: str, encoder: str) -> ModelCard:
    return ModelCard(
        name=name,
        architecture=name,
        arguments={"num_classes": 5},
        classes=DIAGNOSTIC_CLASSES[:5],
        mpp=1.0,
        patch_size=400,
        stride=100,
        description=f"HSP-Net (Meng et al.) with a {encoder} encoder: background, normal and "
                    "CIN1-3 at x10 (1.0 um/px), 400 px patches, stride 100.",
    )


@register_model(default_card=_card("hspnet_r18", "ResNet-18"))
def hspnet_r18(num_classes: int = 5, **kwargs: Any) -> HSPNet:
    """HSP-Net with a ResNet-18 encoder (a light variant, not in the paper)."""
    return HSPNet("resnet18", num_classes=num_classes, **kwargs)


@register_model(default_card=_card("hspnet_r34", "ResNet-34"))
def hspnet_r34(num_classes: int = 5, **kwargs: Any) -> HSPNet:
    """HSP-Net with a ResNet-34 encoder."""
    return HSPNet("resnet34", num_classes=num_classes, **kwargs)


@register_model(default_card=_card("hspnet_r101", "ResNet-101"))
def hspnet_r101(num_classes: int = 5, **kwargs: Any) -> HSPNet:
    """HSP-Net with a ResNet-101 encoder (the paper's best: 69.70M parameters reported)."""
    return HSPNet("resnet101", num_classes=num_classes, **kwargs)
