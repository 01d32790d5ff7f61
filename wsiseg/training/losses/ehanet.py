"""EHANet's loss: Lovasz hinge on the edge map, 0.5 BCE + 0.5 Dice on every other output.

For the K-class logits "BCE" is the cross-entropy and "Dice" the soft Dice of the softmax; the
1-channel side outputs are scored against the foreground (every class but background, 0).
"""

from __future__ import annotations

import torch
from torch import nn

from wsiseg.models.protocol import TrainingOutputs

from .core import (
    IGNORE_INDEX,
    binary_cross_entropy,
    binary_dice_loss,
    cross_entropy,
    edge_target,
    lovasz_hinge,
    soft_dice_loss,
)


class EHANetCriterion(nn.Module):
    """``seg + side_weight * mean(side) + edge_weight * edge``; each term as the docstring says."""

    def __init__(self, bce_weight: float = 0.5, dice_weight: float = 0.5,
                 side_weight: float = 1.0, edge_weight: float = 1.0,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.bce_weight, self.dice_weight = float(bce_weight), float(dice_weight)
        self.side_weight, self.edge_weight = float(side_weight), float(edge_weight)
        self.ignore_index = ignore_index

    def forward(self, outputs: TrainingOutputs,
                batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        target = batch["target"]
        ignore = self.ignore_index
        seg = (self.bce_weight * cross_entropy(outputs["logits"], target, ignore_index=ignore)
               + self.dice_weight * soft_dice_loss(outputs["logits"], target, ignore_index=ignore))
        total = seg
        parts = {"seg": float(seg.detach())}
        if outputs.get("side"):
            foreground = (target != 0).long().masked_fill(target == ignore, ignore)
            sides = [self.bce_weight * binary_cross_entropy(s[:, 0], foreground, ignore)
                     + self.dice_weight * binary_dice_loss(s[:, 0], foreground, ignore)
                     for s in outputs["side"]]
            side = torch.stack(sides).mean()
            total = total + self.side_weight * side
            parts["side"] = float(side.detach())
        if outputs.get("edge") is not None:
            edges = edge_target(target, ignore).long().masked_fill(target == ignore, ignore)
            edge = lovasz_hinge(outputs["edge"][:, 0], edges, ignore)
            total = total + self.edge_weight * edge
            parts["edge"] = float(edge.detach())
        return total, parts
