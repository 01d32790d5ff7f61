"""ERNet's joint loss: segmentation + tumour grade (+ the trunk's boundary)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wsiseg.models.protocol import TrainingOutputs

from .core import IGNORE_INDEX, binary_cross_entropy, cross_entropy, edge_target


class ERNetCriterion(nn.Module):
    """``CE(seg) + grade_weight * CE(grade) + edge_weight * BCE(boundary)``.

    The grade term averages over the images whose ``batch["grade"]`` is known (>= 0) and is 0
    when none is. The boundary term supervises the PIDNet D branch with the class edges of
    the target, as PIDNet trains it.
    """

    def __init__(self, grade_weight: float = 1.0, edge_weight: float = 1.0,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.grade_weight, self.edge_weight = float(grade_weight), float(edge_weight)
        self.ignore_index = ignore_index

    def forward(self, outputs: TrainingOutputs,
                batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        target = batch["target"]
        seg = cross_entropy(outputs["logits"], target, ignore_index=self.ignore_index)
        total, parts = seg, {"seg": float(seg.detach())}
        grades = batch.get("grade")
        if outputs.get("grade") is not None and grades is not None:
            known = grades >= 0
            grade = (F.cross_entropy(outputs["grade"].float()[known], grades[known])
                     if bool(known.any()) else outputs["grade"].sum() * 0.0)
            total = total + self.grade_weight * grade
            parts["grade"] = float(grade.detach())
        if outputs.get("edge") is not None and self.edge_weight:
            edges = edge_target(target, self.ignore_index).long()
            edges = edges.masked_fill(target == self.ignore_index, self.ignore_index)
            edge = binary_cross_entropy(outputs["edge"][:, 0], edges, self.ignore_index)
            total = total + self.edge_weight * edge
            parts["edge"] = float(edge.detach())
        return total, parts
