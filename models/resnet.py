"""ResNet encoders (He et al. 2016) returning the four stage outputs C1..C4.

The layout and state-dict key names are torchvision's (``conv1``, ``bn1``, ``layer1..4``;
Bottleneck with the stride on the 3x3 conv, "v1.5"), without ``fc``, so that published ImageNet
state dicts load unchanged once their ``fc.*`` keys are dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from wsiseg.errors import ModelError

logger = logging.getLogger(__name__)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        result: torch.Tensor = self.relu(out + identity)
        return result


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand x4, with a residual connection (ResNet-50/101)."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv1x1(in_channels, channels)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = _conv1x1(channels, channels * self.expansion)
        self.bn3 = nn.BatchNorm2d(channels * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        result: torch.Tensor = self.relu(out + identity)
        return result


class ResNetEncoder(nn.Module):
    """ResNet trunk; ``forward`` returns [C1, C2, C3, C4] at strides 4, 8, 16, 32.

    ``out_channels`` gives their widths: 64/128/256/512 (BasicBlock) or 256/512/1024/2048
    (Bottleneck).
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: tuple[int, ...]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        stages = []
        for i, (channels, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or in_channels != channels * block.expansion:
                downsample = nn.Sequential(
                    _conv1x1(in_channels, channels * block.expansion, stride),
                    nn.BatchNorm2d(channels * block.expansion),
                )
            stage = [block(in_channels, channels, stride, downsample)]
            in_channels = channels * block.expansion
            stage += [block(in_channels, channels) for _ in range(1, blocks)]
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels: tuple[int, int, int, int] = tuple(  # type: ignore[assignment]
            c * block.expansion for c in (64, 128, 256, 512))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return [c1, c2, c3, c4]


def resnet18() -> ResNetEncoder:
    """ResNet-18 encoder (11.18M parameters without fc)."""
    return ResNetEncoder(BasicBlock, (2, 2, 2, 2))


def resnet34() -> ResNetEncoder:
    """ResNet-34 encoder (21.28M parameters without fc)."""
    return ResNetEncoder(BasicBlock, (3, 4, 6, 3))


def resnet50() -> ResNetEncoder:
    """ResNet-50 encoder (23.51M parameters without fc)."""
    return ResNetEncoder(Bottleneck, (3, 4, 6, 3))


def resnet101() -> ResNetEncoder:
    """ResNet-101 encoder (42.50M parameters without fc)."""
    return ResNetEncoder(Bottleneck, (3, 4, 23, 3))


ENCODERS: dict[str, Callable[[], ResNetEncoder]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
}


def create_encoder(name: str) -> ResNetEncoder:
    """The encoder called ``name`` (one of :data:`ENCODERS`), randomly initialised."""
    if name not in ENCODERS:
        raise ModelError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    return ENCODERS[name]()
