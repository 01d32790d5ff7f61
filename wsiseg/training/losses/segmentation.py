"""The plain segmentation criterion: cross-entropy, optionally plus soft Dice (HSP-Net)."""

from __future__ import annotations

import torch
from torch import nn

from wsiseg.models.protocol import TrainingOutputs

from .core import IGNORE_INDEX, cross_entropy, soft_dice_loss


class SegmentationCriterion(nn.Module):
    """``ce_weight * CE + dice_weight * (1 - soft Dice)`` on the logits.

    HSP-Net's paper trains with cross-entropy (its CE-Loss rows), so ``dice_weight`` is 0 by
    default; a Dice term helps when small classes matter more than their pixel share.
    """

    def __init__(self, ce_weight: float = 1.0, dice_weight: float = 0.0,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.ce_weight = float(ce_weight)
        self.dice_weight = float(dice_weight)
        self.ignore_index = ignore_index

    def forward(self, outputs: TrainingOutputs,
                batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logits, target = outputs["logits"], batch["target"]
        ce = cross_entropy(logits, target, ignore_index=self.ignore_index)
        total = self.ce_weight * ce
        parts = {"ce": float(ce.detach())}
        if self.dice_weight:
            dice = soft_dice_loss(logits, target, ignore_index=self.ignore_index)
            total = total + self.dice_weight * dice
            parts["dice"] = float(dice.detach())
        return total, parts
