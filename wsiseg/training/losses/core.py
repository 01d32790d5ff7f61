"""Loss building blocks shared by the networks' training criteria.

Every function takes logits or probabilities as (B, K, H, W) (or (B, H, W) for the binary ones)
and integer targets (B, H, W) in which ``ignore_index`` marks pixels that count for nothing.
All return a scalar tensor; an input whose pixels are all ignored gives 0 with a gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255


def _zero(like: torch.Tensor) -> torch.Tensor:
    # Keeps the graph connected, so a batch that is all "ignore" still backpropagates.
    return like.sum() * 0.0


def cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                  pixel_weight: torch.Tensor | None = None,
                  ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean cross-entropy over the pixels that are not ignored.

    With ``pixel_weight`` (B, H, W) it is the weighted mean ``sum(w * ce) / sum(w)``.
    """
    valid = target != ignore_index
    if not bool(valid.any()):
        return _zero(logits)
    ce = F.cross_entropy(logits.float(), target.masked_fill(~valid, 0), reduction="none")
    if pixel_weight is None:
        return ce[valid].mean()
    w = pixel_weight.to(ce.dtype)[valid]
    return (ce[valid] * w).sum() / w.sum().clamp_min(torch.finfo(ce.dtype).tiny)


def _one_hot(target: torch.Tensor, num_classes: int, valid: torch.Tensor) -> torch.Tensor:
    onehot = F.one_hot(target.masked_fill(~valid, 0), num_classes)  # (B, H, W, K)
    return onehot.permute(0, 3, 1, 2).float() * valid[:, None].float()


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor,
                   ignore_index: int = IGNORE_INDEX, eps: float = 1.0) -> torch.Tensor:
    """1 - the mean over classes of the soft Dice of the softmax, over the batch's valid pixels.

    Per class: (2 sum(p t) + eps) / (sum(p) + sum(t) + eps); ``eps`` makes a class absent from
    both prediction and target score 1 rather than 0/0.
    """
    valid = target != ignore_index
    probs = logits.float().softmax(dim=1) * valid[:, None].float()
    onehot = _one_hot(target, logits.shape[1], valid)
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    dice = (2 * intersection + eps) / (probs.sum(dims) + onehot.sum(dims) + eps)
    return 1.0 - dice.mean()


def _lovasz_grad(sorted_truth: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss at errors sorted descending.

    With ``g`` foreground pixels in all and the first ``i`` sorted pixels predicted as
    foreground, the Jaccard loss is ``1 - (g - fn_i) / (g + fp_i)``; the gradient is its
    increments along the sorted order.
    """
    total = sorted_truth.sum()
    intersection = total - sorted_truth.cumsum(0)
    union = total + (1.0 - sorted_truth).cumsum(0)
    jaccard = 1.0 - intersection / union
    if jaccard.numel() > 1:
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return jaccard


def lovasz_softmax(probs: torch.Tensor, target: torch.Tensor,
                   ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Lovasz-softmax loss (Berman et al., 2018) averaged over the classes present in the target.

    ``probs`` are softmax probabilities (B, K, H, W); all valid pixels of the batch form one set.
    """
    valid = (target != ignore_index).reshape(-1)
    k = probs.shape[1]
    flat = probs.float().permute(0, 2, 3, 1).reshape(-1, k)[valid]
    truth = target.reshape(-1)[valid]
    losses = []
    for c in range(k):
        fg = (truth == c).float()
        if not bool(fg.any()):
            continue
        errors = (fg - flat[:, c]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, _lovasz_grad(fg[order])))
    if not losses:
        return _zero(probs)
    return torch.stack(losses).mean()


def lovasz_hinge(logits: torch.Tensor, target: torch.Tensor,
                 ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Binary Lovasz hinge loss over all valid pixels of the batch; logits, target (B, H, W)."""
    valid = (target != ignore_index).reshape(-1)
    flat = logits.float().reshape(-1)[valid]
    truth = target.reshape(-1)[valid].float()
    if flat.numel() == 0:
        return _zero(logits)
    errors = 1.0 - flat * (2.0 * truth - 1.0)
    errors_sorted, order = torch.sort(errors, descending=True)
    return torch.dot(F.relu(errors_sorted), _lovasz_grad(truth[order]))


def binary_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                         ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean binary cross-entropy with logits over valid pixels; logits, target (B, H, W)."""
    valid = target != ignore_index
    if not bool(valid.any()):
        return _zero(logits)
    return F.binary_cross_entropy_with_logits(logits.float()[valid], target[valid].float())


def binary_dice_loss(logits: torch.Tensor, target: torch.Tensor,
                     ignore_index: int = IGNORE_INDEX, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice of sigmoid(logits) against a 0/1 target over valid pixels of the batch."""
    valid = target != ignore_index
    p = torch.sigmoid(logits.float())[valid]
    t = target[valid].float()
    return 1.0 - (2 * (p * t).sum() + eps) / (p.sum() + t.sum() + eps)


def edge_target(target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """1.0 on pixels with a 4-neighbour of another class (ignored pixels are no class), else 0.

    (B, H, W) integer target in, (B, H, W) float out; ignored pixels are never edges.
    """
    t = target.long()
    valid = t != ignore_index
    edge = torch.zeros_like(t, dtype=torch.bool)
    pairs = (
        (t[:, 1:, :], t[:, :-1, :], valid[:, 1:, :] & valid[:, :-1, :]),
        (t[:, :, 1:], t[:, :, :-1], valid[:, :, 1:] & valid[:, :, :-1]),
    )
    (down, up, v_rows), (right, left, v_cols) = pairs
    differ_rows = (down != up) & v_rows
    differ_cols = (right != left) & v_cols
    edge[:, 1:, :] |= differ_rows
    edge[:, :-1, :] |= differ_rows
    edge[:, :, 1:] |= differ_cols
    edge[:, :, :-1] |= differ_cols
    return edge.float()
