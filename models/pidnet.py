"""PIDNet three-branch trunk (Xu et al., CVPR 2023), the M configuration by default.

A shared stem (two stride-2 3x3 convolutions, then ``m`` and ``m`` basic blocks to stride 8)
splits into three branches: P (detail, stays at stride 8), I (context, down to stride 64 with
PAPPM pyramid pooling) and D (boundary, stride 8). Pag modules let the P branch take what it
needs from I; D adds I's differences. Light-Bag fusion, guided by D, joins P and I into
``4 * planes`` channels at stride 8 (256 for M). ``boundary_head`` gives D's 1-channel boundary
logits, which the boundary loss supervises in training.

Reconstructed from the paper's description; M: ``planes`` 64, ``m`` 2, ``n`` 3, PAPPM(1024, 96,
256), Light-Bag.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import bn_relu_conv, upsample_like


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int = 1,
             stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                                   kernel_size // 2, bias=False), nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, relu_out: bool = True) -> None:
        super().__init__()
        self.conv1 = _conv_bn(in_channels, planes, 3, stride)
        self.conv2 = _conv_bn(planes, planes, 3)
        self.down = (_conv_bn(in_channels, planes, 1, stride)
                     if stride != 1 or in_channels != planes else None)
        self.relu_out = relu_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        y = y + (x if self.down is None else self.down(x))
        return F.relu(y) if self.relu_out else y


class Bottleneck(nn.Module):
    expansion = 2

    def __init__(self, in_channels: int, planes: int, stride: int = 1, relu_out: bool = True) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = _conv_bn(in_channels, planes, 1)
        self.conv2 = _conv_bn(planes, planes, 3, stride)
        self.conv3 = _conv_bn(planes, out, 1)
        self.down = _conv_bn(in_channels, out, 1, stride) if stride != 1 or in_channels != out else None
        self.relu_out = relu_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))
        y = y + (x if self.down is None else self.down(x))
        return F.relu(y) if self.relu_out else y


def _layer(block: type[BasicBlock | Bottleneck], in_channels: int, planes: int, blocks: int,
           stride: int = 1) -> nn.Sequential:
    """Blocks of one stage; the last has no output ReLU (the branches add before activating)."""
    layers = [block(in_channels, planes, stride, relu_out=blocks > 1)]
    for i in range(1, blocks):
        layers.append(block(planes * block.expansion, planes, 1, relu_out=i < blocks - 1))
    return nn.Sequential(*layers)


class PagFM(nn.Module):
    """Pixel-attention-guided fusion: P takes I where their embeddings agree."""

    def __init__(self, channels: int, mid: int) -> None:
        super().__init__()
        self.f_p = _conv_bn(channels, mid)
        self.f_i = _conv_bn(channels, mid)

    def forward(self, p: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        i_up = upsample_like(i, p)
        agreement = (self.f_p(p) * upsample_like(self.f_i(i), p)).sum(dim=1, keepdim=True)
        sigma = torch.sigmoid(agreement)
        return (1 - sigma) * p + sigma * i_up


class PAPPM(nn.Module):
    """Parallel aggregation pyramid pooling: four pooled scales and the map, processed at once."""

    def __init__(self, in_channels: int, branch: int, out_channels: int) -> None:
        super().__init__()
        self.pools = nn.ModuleList([nn.AvgPool2d(5, 2, 2), nn.AvgPool2d(9, 4, 4),
                                    nn.AvgPool2d(17, 8, 8), nn.AdaptiveAvgPool2d(1)])
        self.scales = nn.ModuleList(bn_relu_conv(in_channels, branch) for _ in range(4))
        self.scale0 = bn_relu_conv(in_channels, branch)
        self.process = bn_relu_conv(4 * branch, 4 * branch, 3, groups=4)
        self.compress = bn_relu_conv(5 * branch, out_channels)
        self.shortcut = bn_relu_conv(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.scale0(x)
        scaled = [upsample_like(conv(pool(x)), x) + base
                  for pool, conv in zip(self.pools, self.scales)]
        y = torch.cat([base, self.process(torch.cat(scaled, dim=1))], dim=1)
        compressed: torch.Tensor = self.compress(y)
        shortcut: torch.Tensor = self.shortcut(x)
        return compressed + shortcut


class LightBag(nn.Module):
    """Boundary-attention-guided fusion of P and I (D's sigmoid decides who speaks where)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv_p = _conv_bn(in_channels, out_channels)
        self.conv_i = _conv_bn(in_channels, out_channels)

    def forward(self, p: torch.Tensor, i: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        att = torch.sigmoid(d)
        from_p: torch.Tensor = self.conv_p((1 - att) * i + p)
        from_i: torch.Tensor = self.conv_i(i + att * p)
        return from_p + from_i


class PIDNetTrunk(nn.Module):
    """PIDNet's three branches to ``4 * planes`` channels at stride 8; see the module docstring."""

    def __init__(self, planes: int = 64, m: int = 2, n: int = 3, ppm_planes: int = 96,
                 boundary_width: int = 64) -> None:
        super().__init__()
        p = planes
        self.out_channels = 4 * p
        self.stem = nn.Sequential(_conv_bn(3, p, 3, 2), nn.ReLU(inplace=True),
                                  _conv_bn(p, p, 3, 2), nn.ReLU(inplace=True))
        self.layer1 = _layer(BasicBlock, p, p, m)
        self.layer2 = _layer(BasicBlock, p, 2 * p, m, 2)
        # I branch
        self.layer3 = _layer(BasicBlock, 2 * p, 4 * p, n, 2)
        self.layer4 = _layer(BasicBlock, 4 * p, 8 * p, n, 2)
        self.layer5 = _layer(Bottleneck, 8 * p, 8 * p, 2, 2)
        # P branch
        self.layer3_p = _layer(BasicBlock, 2 * p, 2 * p, m)
        self.layer4_p = _layer(BasicBlock, 2 * p, 2 * p, m)
        self.layer5_p = _layer(Bottleneck, 2 * p, 2 * p, 1)
        # D branch
        self.layer3_d = _layer(Bottleneck, 2 * p, p, 1)
        self.layer4_d = _layer(Bottleneck, 2 * p, p, 1)
        self.layer5_d = _layer(Bottleneck, 2 * p, 2 * p, 1)
        self.compress3 = _conv_bn(4 * p, 2 * p)
        self.compress4 = _conv_bn(8 * p, 2 * p)
        self.pag3 = PagFM(2 * p, p)
        self.pag4 = PagFM(2 * p, p)
        self.diff3 = _conv_bn(4 * p, 2 * p, 3)
        self.diff4 = _conv_bn(8 * p, 2 * p, 3)
        self.ppm = PAPPM(16 * p, ppm_planes, 4 * p)
        self.bag = LightBag(4 * p, 4 * p)
        self.boundary_head = nn.Sequential(_conv_bn(2 * p, boundary_width, 3), nn.ReLU(inplace=True),
                                           nn.Conv2d(boundary_width, 1, 1))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(fused features at stride 8, D branch at stride 8 before its last stage)."""
        x = F.relu(self.layer2(self.layer1(self.stem(x))))
        p = self.layer3_p(x)
        d = self.layer3_d(x)
        i = F.relu(self.layer3(x))
        p = self.pag3(p, self.compress3(i))
        d = d + upsample_like(self.diff3(i), d)
        i = F.relu(self.layer4(i))
        p = self.layer4_p(F.relu(p))
        d = self.layer4_d(F.relu(d))
        p = self.pag4(p, self.compress4(i))
        d = d + upsample_like(self.diff4(i), d)
        boundary = d
        p = self.layer5_p(F.relu(p))
        d = self.layer5_d(F.relu(d))
        i = upsample_like(self.ppm(self.layer5(i)), p)
        return self.bag(p, i, d), boundary

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]
