"""FullNet's loss: pixel-weighted cross-entropy plus varCE (Qu et al., MICCAI 2019).

The weight map stresses the narrow gaps between touching instances (U-Net's weighting): w = 1 +
w0 exp(-(d1 + d2)^2 / (2 sigma^2)), with d1, d2 the distances to the nearest and second nearest
instance. varCE asks each instance to be predicted uniformly: for every instance, the variance
over its pixels of each class's softmax probability, summed over classes, averaged over the
instances of the batch.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from wsiseg.models.protocol import TrainingOutputs

from .core import IGNORE_INDEX, cross_entropy


def weight_map(instances: np.ndarray, w0: float = 10.0, sigma: float = 20.0) -> np.ndarray:
    """Per-pixel weights (float32) from an instance map (0 = no instance, ids > 0).

    With fewer than two instances there are no gaps to stress and every weight is 1.
    """
    ids = [i for i in np.unique(instances) if i != 0]
    if len(ids) < 2:
        return np.ones(instances.shape, dtype=np.float32)
    distances = np.stack([ndimage.distance_transform_edt(instances != i) for i in ids])
    distances.sort(axis=0)
    d1, d2 = distances[0], distances[1]
    weights: np.ndarray = (1.0 + w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * sigma**2)))
    return weights.astype(np.float32)


def three_class_target(instances: np.ndarray, contour_width: int = 1) -> np.ndarray:
    """FullNet's target from an instance map: 0 background, 1 interior, 2 contour.

    Contour pixels are instance pixels within ``contour_width`` (chessboard distance) of a
    pixel of another id or of background; image edges are not contours.
    """
    out = np.zeros(instances.shape, dtype=np.uint8)
    inside = instances != 0
    out[inside] = 1
    size = 2 * contour_width + 1
    hi = ndimage.maximum_filter(instances, size=size, mode="nearest")
    lo = ndimage.minimum_filter(instances, size=size, mode="nearest")
    out[inside & ((hi != instances) | (lo != instances))] = 2
    return out


def instances_from_target(target: np.ndarray, background: int = 0,
                          ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Connected components (8-connectivity) of the pixels that are neither background nor
    ignored: the instances when a data set gives no instance ids."""
    foreground = (target != background) & (target != ignore_index)
    labels: np.ndarray = ndimage.label(foreground, structure=np.ones((3, 3), dtype=bool))[0]
    return labels


def var_ce(probs: torch.Tensor, instances: torch.Tensor) -> torch.Tensor:
    """varCE of softmax ``probs`` (B, K, H, W) over ``instances`` (B, H, W); 0 without any."""
    terms = []
    for b in range(probs.shape[0]):
        for i in torch.unique(instances[b]):
            if int(i) == 0:
                continue
            inside = instances[b] == i
            p = probs[b][:, inside]  # (K, n)
            terms.append(p.var(dim=1, unbiased=False).sum())
    if not terms:
        return probs.sum() * 0.0
    return torch.stack(terms).mean()


class FullNetCriterion(nn.Module):
    """Weighted cross-entropy + ``alpha`` x varCE.

    ``batch`` may hold "instances" (B, H, W) instance ids and "pixel_weight" (B, H, W);
    missing ones are derived from "target" (connected components of non-background pixels,
    then :func:`weight_map` with ``w0`` and ``sigma``; 20 px suits GlaS at x20).
    """

    def __init__(self, alpha: float = 1.0, w0: float = 10.0, sigma: float = 20.0,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.alpha, self.w0, self.sigma = float(alpha), float(w0), float(sigma)
        self.ignore_index = ignore_index

    def forward(self, outputs: TrainingOutputs,
                batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logits, target = outputs["logits"], batch["target"]
        instances = batch.get("instances")
        if instances is None:
            cpu = target.detach().cpu().numpy()
            instances = torch.from_numpy(np.stack(
                [instances_from_target(t, ignore_index=self.ignore_index) for t in cpu]
            )).to(target.device)
        weight = batch.get("pixel_weight")
        if weight is None:
            maps = [weight_map(i, self.w0, self.sigma) for i in instances.cpu().numpy()]
            weight = torch.from_numpy(np.stack(maps)).to(logits.device)
        ce = cross_entropy(logits, target, pixel_weight=weight, ignore_index=self.ignore_index)
        var = var_ce(logits.float().softmax(dim=1), instances)
        total = ce + self.alpha * var
        return total, {"weighted_ce": float(ce.detach()), "var_ce": float(var.detach())}
