"""ET-Net: edge-attention guidance network (Zhang et al., MICCAI 2019), as specified in MODELS.md.

A ResNet-50 encoder gives E1..E4 (E1 at stride 4; E4 dilated, so at stride 16 like E3, as in
the paper). Three decoding blocks (D-Blocks) fuse each deeper feature with the next shallower
encoder feature: 1x1 projection of the deeper one, upsampling to the encoder feature's size,
addition, then 1x1, depthwise 3x3, 1x1 (outputs 1024, 512, 256). The edge guidance module
(EGM) runs 1x1-3x3 convs on E1 and on E2 upsampled to E1's grid, concatenates them and gives
both the supervised edge map and edge-attention features. The weighted aggregation module
(WAM) reweights every D-Block output channel-wise (GAP, 1x1, ReLU, 1x1, sigmoid, multiply),
merges them from the deepest up by upsample-and-add, concatenates the edge-attention features
and maps them to the class logits with a 1x1 conv.
"""

from __future__ import annotations

import logging
from itertools import pairwise
from typing import Any

import torch
from torch import nn

from wsiseg.cards import ClassInfo, ModelCard
from wsiseg.errors import ModelError

from .layers import ConvBNReLU, init_conv_weights, is_positive_int, upsample_like
from .protocol import TrainingOutputs
from .registry import register_model
from .resnet import BasicBlock, Bottleneck, ResNetEncoder, create_encoder

logger = logging.getLogger(__name__)

OUTPUT_STRIDES = (16, 32)

#: The default card's classes: ET-Net segments one structure against the rest (vessels,
#: lungs, optic disc); in histology that is glands against everything else (GlaS).
GLAND_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(0, "background", (0, 0, 0)),
    ClassInfo(1, "gland", (0, 114, 189)),
)


class DecodingBlock(nn.Module):
    """D-Block: fuse a deeper feature into an encoder feature, then 1x1, depthwise 3x3, 1x1.

    The deeper feature is projected to the encoder feature's width by a 1x1 conv, upsampled
    to its size and added. The three convs then run at ``skip_channels // reduction`` channels
    (the E-Block bottleneck ratio, 4) and end at ``out_channels``.
    """

    def __init__(self, deep_channels: int, skip_channels: int, out_channels: int,
                 reduction: int = 4) -> None:
        super().__init__()
        mid = max(1, skip_channels // reduction)
        self.project = ConvBNReLU(deep_channels, skip_channels)
        self.fuse = nn.Sequential(
            ConvBNReLU(skip_channels, mid),
            ConvBNReLU(mid, mid, 3, groups=mid),
            ConvBNReLU(mid, out_channels),
        )

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        fused: torch.Tensor = self.fuse(upsample_like(self.project(deep), skip) + skip)
        return fused


class EdgeGuidanceModule(nn.Module):
    """EGM: 1x1-3x3 convs on E1 and on E2 (upsampled to E1's grid first), concatenated.

    Returns ``(edge_logits, edge_features)``: a 1x1 conv gives the one-channel edge map at
    E1's grid (supervised), another 1x1 conv (with BN+ReLU) the edge-attention features.
    """

    def __init__(self, e1_channels: int, e2_channels: int, width: int = 256) -> None:
        super().__init__()
        self.branch1 = nn.Sequential(ConvBNReLU(e1_channels, width), ConvBNReLU(width, width, 3))
        self.branch2 = nn.Sequential(ConvBNReLU(e2_channels, width), ConvBNReLU(width, width, 3))
        self.edge = nn.Conv2d(2 * width, 1, 1)
        self.features = ConvBNReLU(2 * width, width)

    def forward(self, e1: torch.Tensor, e2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        both = torch.cat([self.branch1(e1), self.branch2(upsample_like(e2, e1))], dim=1)
        return self.edge(both), self.features(both)


class WeightedBlock(nn.Module):
    """Channel weights from global context: GAP, 1x1, ReLU, 1x1, sigmoid, multiply.

    The hidden width is ``channels // reduction``; the paper names none, so squeeze-and-
    excitation's 16 is used. The convs have biases and no BatchNorm: they see a 1x1 map, so
    the block trains with any batch size.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.weights = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights: torch.Tensor = self.weights(x)
        return x * weights


class WeightedAggregationModule(nn.Module):
    """WAM: weighted blocks on the D-Block outputs, merged from the deepest up, plus edges.

    ``widths`` are the D-Block output widths from the deepest (1024, 512, 256). Going up, the
    running sum is projected to the next width by a 1x1 conv (with BN+ReLU), upsampled and
    added to the next weighted output; the result is concatenated with the edge-attention
    features and a 1x1 conv gives the class logits at the shallowest grid (E1's).
    """

    def __init__(self, widths: tuple[int, ...], edge_width: int, num_classes: int,
                 reduction: int = 16) -> None:
        super().__init__()
        self.weighted = nn.ModuleList(WeightedBlock(w, reduction) for w in widths)
        self.project = nn.ModuleList(
            ConvBNReLU(deep, shallow) for deep, shallow in pairwise(widths))
        self.classifier = nn.Conv2d(widths[-1] + edge_width, num_classes, 1)

    def forward(self, decoded: list[torch.Tensor], edge_features: torch.Tensor) -> torch.Tensor:
        merged = self.weighted[0](decoded[0])
        for project, weighted, x in zip(self.project, self.weighted[1:], decoded[1:]):
            merged = upsample_like(project(merged), x) + weighted(x)
        logits: torch.Tensor = self.classifier(
            torch.cat([merged, upsample_like(edge_features, merged)], dim=1))
        return logits


def _dilate_last_stage(encoder: ResNetEncoder) -> None:
    """Keep E4 at E3's stride: no stride in layer4, dilation 2 in its later 3x3 convs.

    The first 3x3 conv (the one that had the stride) keeps dilation 1, the usual way of
    dilating a pretrained ResNet; the weights and state-dict keys do not change.
    """
    convs: list[nn.Conv2d] = []
    for block in encoder.layer4:
        if isinstance(block, Bottleneck):
            convs.append(block.conv2)
        elif isinstance(block, BasicBlock):
            convs += [block.conv1, block.conv2]
        if isinstance(block.downsample, nn.Sequential) and isinstance(block.downsample[0],
                                                                     nn.Conv2d):
            block.downsample[0].stride = (1, 1)  # only the first block has one
    convs[0].stride = (1, 1)
    for conv in convs[1:]:
        conv.dilation, conv.padding = (2, 2), (2, 2)


class ETNet(nn.Module):
    """ET-Net segmentation network; ``forward(x)`` gives logits (B, K, H, W) at the input size.

    ``forward_train(x)`` also gives ``"edge"``, the edge-map logits (B, 1, H, W) at the input
    size, supervised by the ``etnet`` criterion (:class:`wsiseg.training.losses.etnet.ETNetCriterion`).

    Arguments (those marked *assumed* are not given by the paper; defaults per MODELS.md):

    - ``encoder``: "resnet50" in the paper (any of models/resnet.py works; the D-Block widths
      follow the encoder's, 1024/512/256 for ResNet-50).
    - ``num_classes``: K, the number of output channels.
    - ``output_stride``: 16 (the paper dilates E-Block 4, so E4 and E3 share a grid and the
      first D-Block's upsampling keeps the size) or 32 (undilated, faster; every D-Block then
      upsamples x2). The weights are the same either way.
    - ``decoder_reduction``: the D-Block's 1x1 - depthwise 3x3 - 1x1 convs run at the encoder
      feature's width divided by this (4, *assumed*: the E-Block bottleneck ratio).
    - ``weighted_reduction``: hidden width divisor of the weighted blocks' two 1x1 convs (16,
      *assumed*: squeeze-and-excitation's ratio; the paper names none, and full width would
      add 2.6M parameters, 6.6% over the 29.9M that MODELS.md gives).
    - ``edge_width``: width of the EGM's branches and of its edge-attention features (256,
      *assumed*).

    Also *assumed*: every conv but the two output convs (edge map, class logits) is followed
    by BN and ReLU (the weighted blocks' convs excepted, see :class:`WeightedBlock`); the
    bottom-up merge of the WAM projects the running sum to the next width with a 1x1 conv;
    upsampling is bilinear with ``align_corners=False`` to exact sizes, so any input size
    works; no dropout. Logits and edge map are made at stride 4 and upsampled to the input.
    """

    loss = "etnet"

    def __init__(self, encoder: str = "resnet50", num_classes: int = 2, output_stride: int = 16,
                 decoder_reduction: int = 4, weighted_reduction: int = 16,
                 edge_width: int = 256) -> None:
        super().__init__()
        _check_arguments(num_classes, output_stride, decoder_reduction, weighted_reduction,
                         edge_width)
        self.encoder = create_encoder(encoder)
        if output_stride == 16:
            _dilate_last_stage(self.encoder)
        self.num_classes = int(num_classes)
        c1, c2, c3, c4 = self.encoder.out_channels
        self.decoders = nn.ModuleList([
            DecodingBlock(c4, c3, c3, decoder_reduction),
            DecodingBlock(c3, c2, c2, decoder_reduction),
            DecodingBlock(c2, c1, c1, decoder_reduction),
        ])
        self.egm = EdgeGuidanceModule(c1, c2, edge_width)
        self.wam = WeightedAggregationModule((c3, c2, c1), edge_width, num_classes,
                                             weighted_reduction)
        init_conv_weights(self.decoders, self.egm, self.wam)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits at the input size and edge logits at E1's grid (inference needs no edges)."""
        e1, e2, e3, e4 = self.encoder(x)
        decoded = []
        deep = e4
        for block, skip in zip(self.decoders, (e3, e2, e1)):
            deep = block(deep, skip)
            decoded.append(deep)
        edge, edge_features = self.egm(e1, e2)
        return upsample_like(self.wam(decoded, edge_features), x), edge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)[0]

    def forward_train(self, x: torch.Tensor) -> TrainingOutputs:
        """``{"logits": (B, K, H, W), "edge": (B, 1, H, W)}``, both at the input size."""
        logits, edge = self._run(x)
        return {"logits": logits, "edge": upsample_like(edge, x)}


def _check_arguments(num_classes: Any, output_stride: Any, decoder_reduction: Any,
                     weighted_reduction: Any, edge_width: Any) -> None:
    if not is_positive_int(num_classes):
        raise ModelError(f"ET-Net num_classes = {num_classes!r} must be a positive integer, e.g. 2")
    if output_stride not in OUTPUT_STRIDES or isinstance(output_stride, bool):
        raise ModelError(f"ET-Net output_stride = {output_stride!r} must be 16 (the paper's "
                         "dilated E-Block 4) or 32")
    for name, value, example in (("decoder_reduction", decoder_reduction, 4),
                                 ("weighted_reduction", weighted_reduction, 16),
                                 ("edge_width", edge_width, 256)):
        if not is_positive_int(value):
            raise ModelError(f"ET-Net {name} = {value!r} must be a positive integer, "
                             f"e.g. {example}")


@register_model(default_card=ModelCard(
    name="etnet",
    architecture="etnet",
    arguments={"num_classes": 2},
    classes=GLAND_CLASSES,
    mpp=0.62,
    patch_size=512,
    stride=256,
    description="ET-Net (Zhang et al.) with a ResNet-50 encoder: gland versus background at "
                "x20 (0.62 um/px, GlaS), 512 px patches (the paper's crops), stride 256.",
))
def etnet(num_classes: int = 2, **kwargs: Any) -> ETNet:
    """ET-Net with a ResNet-50 encoder (about 29.9M parameters per MODELS.md).

    The paper segments one or two structures against the rest; the default card does the same
    for histology: background and gland, at GlaS's x20 (0.62 um/px, *assumed*: the paper has
    no histology), on the paper's 512x512 crops, with windows overlapping by half (stride 256,
    *assumed*).
    """
    return ETNet("resnet50", num_classes=num_classes, **kwargs)
