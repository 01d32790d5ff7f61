"""MobileViT-S encoder (Mehta & Rastegari, ICLR 2022), without its classifier.

MobileNetV2 inverted residuals, and MobileViT blocks that unfold the feature map into 2x2
patches, run a transformer across patches (one sequence per position inside the patch), and
fold back. The S configuration: stem 16; stages 32 / 64 / 96 / 128 / 160 channels at strides
2 / 4 / 8 / 16 / 32; transformer widths 144 / 192 / 240 with depths 2 / 4 / 3; expansion 4.
``forward`` returns the five stage outputs. Inputs of any size work: a MobileViT block pads an
odd-sized map by one row or column (replicating the edge) and crops the result back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNAct(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, groups: int = 1, act: bool = True) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.SiLU(inplace=True) if act else nn.Identity(),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise (stride), 1x1 project; residual if it fits."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int = 4) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.block = nn.Sequential(
            ConvBNAct(in_channels, hidden, 1),
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden),
            ConvBNAct(hidden, out_channels, 1, act=False),
        )
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.block(x)
        return x + y if self.residual else y


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer: attention and a SiLU feed-forward of twice the width."""

    def __init__(self, dim: int, heads: int = 4, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attention(y, y, y, need_weights=False)[0]
        mlp: torch.Tensor = self.mlp(self.norm2(x))
        return x + mlp


class MobileViTBlock(nn.Module):
    """Local 3x3 + 1x1 to ``dim``; transformer over 2x2 patches; 1x1 back; fuse with the input."""

    def __init__(self, channels: int, dim: int, depth: int, patch: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.patch = patch
        self.local = nn.Sequential(ConvBNAct(channels, channels, 3),
                                   nn.Conv2d(channels, dim, 1, bias=False))
        self.transformer = nn.Sequential(*[TransformerLayer(dim, heads) for _ in range(depth)],
                                         nn.LayerNorm(dim))
        self.project = ConvBNAct(dim, channels, 1)
        self.fuse = ConvBNAct(2 * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        p = self.patch
        pad_h, pad_w = -h % p, -w % p
        y = self.local(x)
        if pad_h or pad_w:
            y = F.pad(y, (0, pad_w, 0, pad_h), mode="replicate")
        b, d, hp, wp = y.shape
        # (B, d, H, W) -> (B * p * p, patches, d): one sequence per position within a patch.
        y = y.reshape(b, d, hp // p, p, wp // p, p).permute(0, 3, 5, 2, 4, 1)
        y = y.reshape(b * p * p, (hp // p) * (wp // p), d)
        y = self.transformer(y)
        y = y.reshape(b, p, p, hp // p, wp // p, d).permute(0, 5, 3, 1, 4, 2)
        y = y.reshape(b, d, hp, wp)[:, :, :h, :w]
        fused: torch.Tensor = self.fuse(torch.cat([x, self.project(y)], dim=1))
        return fused


class MobileViTS(nn.Module):
    """MobileViT-S stages; ``out_channels`` = (32, 64, 96, 128, 160) at strides 2..32."""

    out_channels = (32, 64, 96, 128, 160)

    def __init__(self, expansion: int = 4, dims: tuple[int, int, int] = (144, 192, 240),
                 depths: tuple[int, int, int] = (2, 4, 3), heads: int = 4) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 16, 3, 2)
        self.stage1 = InvertedResidual(16, 32, 1, expansion)
        self.stage2 = nn.Sequential(InvertedResidual(32, 64, 2, expansion),
                                    InvertedResidual(64, 64, 1, expansion),
                                    InvertedResidual(64, 64, 1, expansion))
        stages = []
        for (cin, cout), dim, depth in zip(((64, 96), (96, 128), (128, 160)), dims, depths):
            stages.append(nn.Sequential(InvertedResidual(cin, cout, 2, expansion),
                                        MobileViTBlock(cout, dim, depth, heads=heads)))
        self.stage3, self.stage4, self.stage5 = stages

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.stage1(self.stem(x))
        f2 = self.stage2(f1)
        f3 = self.stage3(f2)
        f4 = self.stage4(f3)
        return [f1, f2, f3, f4, self.stage5(f4)]
