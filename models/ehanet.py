"""EHANet (Tang et al.): edge-guided hierarchical aggregation on a MobileViT-S encoder.

- **EFA** (efficient fusion attention) on every skip: an ECA-style channel term (global
  average pool, 1-D convolution across channels, sigmoid) times a 1x1 spatial term (sigmoid).
- **AHFA** decoder blocks 160->128, 128->96, 96->64, 64->32: the deeper map is projected (1x1),
  upsampled to the skip's size, concatenated with the attended skip and fused by two 3x3
  convolutions; each block has a 1-channel side output.
- **IEM** (inter-layer edge module) on stages 1-2, like ET-Net's: 1x1 + 3x3 on each, stage 2
  upsampled, concatenated; a 1x1 gives the edge map, another the edge features.
- Final fusion: the last decoder map and the edge features, concatenated, 3x3 to the logits at
  stride 2, upsampled bilinearly to the input size.

The authors' exact widths inside the modules are not published: ``edge_width`` (32), the ECA
kernel (3) and the two-convolution blocks are *assumed* readings of their description; with
them the network has 5,748,791 parameters with 2 classes (MODELS.md: about 5.9M, -2.6%).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from wsiseg.cards import ClassInfo, ModelCard
from wsiseg.errors import ModelError

from .layers import ConvBNReLU, is_positive_int, upsample_like
from .mobilevit import MobileViTS
from .protocol import TrainingOutputs
from .registry import register_model


class EFA(nn.Module):
    """Efficient fusion attention: ECA channel weights x 1x1 spatial weights."""

    def __init__(self, channels: int, eca_kernel: int = 3) -> None:
        super().__init__()
        self.channel = nn.Conv1d(1, 1, eca_kernel, padding=eca_kernel // 2, bias=False)
        self.spatial = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3)).unsqueeze(1)  # (B, 1, C)
        channel = torch.sigmoid(self.channel(pooled)).transpose(1, 2).unsqueeze(-1)
        return x * channel * torch.sigmoid(self.spatial(x))


class AHFA(nn.Module):
    """Decoder block: project the deeper map, upsample, concatenate with the skip, fuse."""

    def __init__(self, deep_channels: int, skip_channels: int, eca_kernel: int = 3) -> None:
        super().__init__()
        self.project = nn.Conv2d(deep_channels, skip_channels, 1, bias=False)
        self.attention = EFA(skip_channels, eca_kernel)
        self.fuse = nn.Sequential(ConvBNReLU(2 * skip_channels, skip_channels, 3),
                                  ConvBNReLU(skip_channels, skip_channels, 3))
        self.side = nn.Conv2d(skip_channels, 1, 1)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        up = upsample_like(self.project(deep), skip)
        x = self.fuse(torch.cat([up, self.attention(skip)], dim=1))
        return x, self.side(x)


class IEM(nn.Module):
    """Inter-layer edge module on stages 1 and 2: edge logits and edge features."""

    def __init__(self, channels: tuple[int, int], width: int = 32) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(ConvBNReLU(c, width, 1), ConvBNReLU(width, width, 3)) for c in channels)
        self.edge = nn.Conv2d(2 * width, 1, 1)
        self.features = ConvBNReLU(2 * width, width, 1)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([self.branches[0](f1), upsample_like(self.branches[1](f2), f1)], dim=1)
        return self.edge(x), self.features(x)


class EHANet(nn.Module):
    """EHANet; ``forward(x)`` gives logits (B, K, H, W) at the input size."""

    loss = "ehanet"

    def __init__(self, num_classes: int = 2, edge_width: int = 32, eca_kernel: int = 3) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("edge_width", edge_width),
                            ("eca_kernel", eca_kernel)):
            if not is_positive_int(value):
                raise ModelError(f"EHANet {name} = {value!r} must be a positive integer")
        if eca_kernel % 2 == 0:
            raise ModelError(f"EHANet eca_kernel = {eca_kernel} must be odd, e.g. 3")
        self.num_classes = num_classes
        self.encoder = MobileViTS()
        c = self.encoder.out_channels  # 32, 64, 96, 128, 160
        self.decoder = nn.ModuleList(AHFA(c[i + 1], c[i], eca_kernel) for i in (3, 2, 1, 0))
        self.iem = IEM((c[0], c[1]), edge_width)
        self.head = nn.Sequential(ConvBNReLU(c[0] + edge_width, c[0], 3),
                                  nn.Conv2d(c[0], num_classes, 1))

    def _run(self, x: torch.Tensor) -> TrainingOutputs:
        feats = self.encoder(x)
        deep = feats[4]
        sides: list[torch.Tensor] = []
        for block, skip in zip(self.decoder, (feats[3], feats[2], feats[1], feats[0])):
            deep, side = block(deep, skip)
            sides.append(side)
        edge, edge_features = self.iem(feats[0], feats[1])
        logits = self.head(torch.cat([deep, edge_features], dim=1))
        return {"logits": upsample_like(logits, x), "edge": edge, "side": sides}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)["logits"]

    def forward_train(self, x: torch.Tensor) -> TrainingOutputs:
        """"logits", "edge" (B, 1, H, W) and "side" (four (B, 1, H, W)), all at input size."""
        out = self._run(x)
        out["edge"] = upsample_like(out["edge"], x)
        out["side"] = [upsample_like(s, x) for s in out["side"]]
        return out


@register_model(default_card=ModelCard(
    name="ehanet", architecture="ehanet", arguments={"num_classes": 2},
    classes=(ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "foreground", (0, 114, 189))),
    mpp=0.62, patch_size=256, stride=128,
    description="EHANet (Tang et al.): binary foreground segmentation (e.g. GlaS glands at x20); "
                "256 px crops (assumed)."))
def ehanet(num_classes: int = 2, **kwargs: Any) -> EHANet:
    """EHANet with a MobileViT-S encoder (about 5.9M parameters with 2 classes)."""
    return EHANet(num_classes=num_classes, **kwargs)
