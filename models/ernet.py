"""ERNet (Pang et al.): cervical tumour segmentation with an edge learner and a connectivity
enhancer, coupled by semantic-consistency attention, plus a tumour-grade head.

Reconstructed from the authors' figure (MODELS.md); code was not released:

- **Connectivity enhancer**: a PIDNet-M trunk (:mod:`.pidnet`), 256 channels at stride 8.
- **Edge learner**: three conv3x3 stride-2 + BN + ReLU, 3 -> 64 -> 128 -> 256 (widths
  *assumed*: ``edge_widths``), stride 8.
- **Semantic consistency**: concatenation (512), SE channel attention (GAP, FC 512 -> 32, ReLU,
  FC 32 -> 512, sigmoid; ``se_hidden`` *assumed*), a head BN-ReLU-conv3x3 512 -> 256,
  BN-ReLU-conv3x3 256 -> 128, BN-ReLU-conv1x1 128 -> K, bilinear to the input size.
- **Classification branch**: two 2x2 max-pools, global max pool, FC 512 -> ``num_grades``
  (*assumed* 3: well, moderately, poorly differentiated), trained jointly.

``forward_train`` also gives "grade" logits and "edge", the trunk's boundary logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wsiseg.cards import DIAGNOSTIC_CLASSES, ClassInfo, ModelCard
from wsiseg.errors import ModelError

from .layers import bn_relu_conv, is_positive_int, upsample_like
from .pidnet import PIDNetTrunk
from .protocol import TrainingOutputs
from .registry import register_model


class ERNet(nn.Module):
    """ERNet; ``forward(x)`` gives logits (B, K, H, W) at the input size."""

    loss = "ernet"

    def __init__(self, num_classes: int = 3, num_grades: int = 3,
                 edge_widths: Sequence[int] = (64, 128, 256), se_hidden: int = 32,
                 head_widths: Sequence[int] = (256, 128)) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("num_grades", num_grades),
                            ("se_hidden", se_hidden)):
            if not is_positive_int(value):
                raise ModelError(f"ERNet {name} = {value!r} must be a positive integer")
        for name, widths in (("edge_widths", edge_widths), ("head_widths", head_widths)):
            if (not isinstance(widths, (list, tuple)) or len(widths) != (3 if name == "edge_widths" else 2)
                    or not all(isinstance(w, int) and w > 0 for w in widths)):
                raise ModelError(f"ERNet {name} = {widths!r} must be "
                                 f"{3 if name == 'edge_widths' else 2} positive integers")
        self.num_classes = num_classes
        self.trunk = PIDNetTrunk()
        layers: list[nn.Module] = []
        channels = 3
        for width in edge_widths:
            layers += [nn.Conv2d(channels, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            channels = width
        self.edge_learner = nn.Sequential(*layers)
        joint = self.trunk.out_channels + channels
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(joint, se_hidden),
                                nn.ReLU(inplace=True), nn.Linear(se_hidden, joint), nn.Sigmoid())
        # The last unit, a 1x1 conv to the logits, has a bias; the 3x3 ones do not.
        self.head = nn.Sequential(bn_relu_conv(joint, head_widths[0], 3),
                                  bn_relu_conv(head_widths[0], head_widths[1], 3),
                                  bn_relu_conv(head_widths[1], num_classes, 1, bias=True))
        self.grade_head = nn.Linear(joint, num_grades)

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        context, boundary = self.trunk.forward_features(x)
        edges = self.edge_learner(x)
        if edges.shape[-2:] != context.shape[-2:]:
            edges = upsample_like(edges, context)
        joint = torch.cat([context, edges], dim=1)
        return joint * self.se(joint)[:, :, None, None], boundary

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        joint, _ = self._features(x)
        return upsample_like(self.head(joint), x)

    def forward_train(self, x: torch.Tensor) -> TrainingOutputs:
        """"logits", "grade" (B, num_grades) and "edge" (B, 1, H, W) boundary logits."""
        joint, boundary = self._features(x)
        logits = upsample_like(self.head(joint), x)
        pooled = F.max_pool2d(F.max_pool2d(joint, 2, ceil_mode=True), 2, ceil_mode=True)
        grade = self.grade_head(torch.amax(pooled, dim=(2, 3)))
        edge = upsample_like(self.trunk.boundary_head(boundary), x)
        return {"logits": logits, "grade": grade, "edge": edge}


@register_model(default_card=ModelCard(
    name="ernet", architecture="ernet", arguments={"num_classes": 3},
    classes=(DIAGNOSTIC_CLASSES[0], DIAGNOSTIC_CLASSES[1],
             ClassInfo(2, DIAGNOSTIC_CLASSES[5].name, DIAGNOSTIC_CLASSES[5].color)),
    mpp=1.0, patch_size=400, stride=100,
    description="ERNet (Pang et al.): background, normal and tumour in cervical H&E; x10 "
                "and 400 px patches assumed (the paper's input size is not published)."))
def ernet(num_classes: int = 3, **kwargs: Any) -> ERNet:
    """ERNet with its PIDNet-M connectivity enhancer."""
    return ERNet(num_classes=num_classes, **kwargs)
