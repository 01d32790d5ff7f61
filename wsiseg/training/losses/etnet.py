"""ET-Net's criterion: Lovasz-softmax on the segmentation and on the edge map (Zhang et al.)."""

from __future__ import annotations

import torch
from torch import nn

from wsiseg.errors import ConfigError
from wsiseg.models.protocol import TrainingOutputs

from .core import IGNORE_INDEX, edge_target, lovasz_hinge, lovasz_softmax

EDGE_LOSSES = ("lovasz_softmax", "lovasz_hinge")


class ETNetCriterion(nn.Module):
    """``alpha * L_seg + (1 - alpha) * L_edge``, with ``alpha = 0.3`` as in the paper.

    ``L_seg`` is the Lovasz-softmax of the softmax of ``outputs["logits"]``. ``L_edge`` is on
    the one-channel ``outputs["edge"]`` logits z against ``core.edge_target(target)``. The
    paper uses Lovasz-softmax there too; with one logit per pixel that is the Lovasz-softmax
    of the two-class probabilities (1 - sigmoid(z), sigmoid(z)), exactly the softmax of the
    logits (0, z) (``edge_loss="lovasz_softmax"``, the default). ``edge_loss="lovasz_hinge"``
    takes the binary Lovasz hinge on z instead. Both average over the classes present, as
    :func:`wsiseg.training.losses.core.lovasz_softmax` does.

    Pixels whose class is ``ignore_index`` are ignored by the edge loss too (*assumed*: their
    edge status is unknown). Parts logged: ``"seg"``, ``"edge"``.
    """

    def __init__(self, alpha: float = 0.3, edge_loss: str = "lovasz_softmax",
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ConfigError(f"ET-Net criterion alpha = {alpha!r} must be a number in 0..1 "
                              "(the weight of the segmentation loss; the paper uses 0.3)")
        if edge_loss not in EDGE_LOSSES:
            raise ConfigError(f"ET-Net criterion edge_loss = {edge_loss!r} must be one of "
                              f"{', '.join(EDGE_LOSSES)}")
        self.alpha = float(alpha)
        self.edge_loss = edge_loss
        self.ignore_index = ignore_index

    def forward(self, outputs: TrainingOutputs,
                batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logits, target = outputs["logits"], batch["target"]
        seg = lovasz_softmax(logits.float().softmax(dim=1), target, ignore_index=self.ignore_index)

        z = outputs["edge"][:, 0].float()
        edges = edge_target(target, ignore_index=self.ignore_index).long()
        edges = edges.masked_fill(target == self.ignore_index, self.ignore_index)
        if self.edge_loss == "lovasz_softmax":
            p = torch.sigmoid(z)
            edge = lovasz_softmax(torch.stack([1.0 - p, p], dim=1), edges,
                                  ignore_index=self.ignore_index)
        else:
            edge = lovasz_hinge(z, edges, ignore_index=self.ignore_index)

        total = self.alpha * seg + (1.0 - self.alpha) * edge
        return total, {"seg": float(seg.detach()), "edge": float(edge.detach())}
