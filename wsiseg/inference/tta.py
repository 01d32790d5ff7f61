"""Test-time augmentation: the flips and quarter turns of a window that a prediction averages.

Pure: functions of tensors (..., H, W) that use only their methods, so naming the modes
(:data:`TTA_MODES`, which ``--tta`` offers) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

from wsiseg.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: A test-time augmentation: none, the 4 flips of a window, or all 8 of its symmetries.
TtaMode = Literal["none", "flip", "d4"]

#: Names of the test-time augmentations, in the order ``--tta`` offers them.
TTA_MODES: tuple[TtaMode, ...] = get_args(TtaMode)

#: Each mode's views of a window, as (quarter turns counter-clockwise, mirrored left-right
#: first); the first is the window as it is. A top-bottom flip is a half turn of the mirror
#: image and both flips a half turn; ``d4`` is all 8 symmetries of the square.
TTA_VIEWS: dict[str, tuple[tuple[int, bool], ...]] = {
    "none": ((0, False),),
    "flip": ((0, False), (0, True), (2, True), (2, False)),
    "d4": tuple((turns, mirrored) for mirrored in (False, True) for turns in range(4)),
}


def check_tta(tta: str) -> None:
    """Refuse a test-time augmentation that is not one of :data:`TTA_MODES`."""
    if tta not in TTA_VIEWS:
        raise ConfigError(f"unknown test-time augmentation {tta!r}; use {', '.join(TTA_MODES)}")


def view_of(x: torch.Tensor, turns: int, mirrored: bool) -> torch.Tensor:
    """``x`` (..., H, W) as one view of :data:`TTA_VIEWS`: mirrored, then turned."""
    if mirrored:
        x = x.flip(-1)
    return x.rot90(turns, (-2, -1)) if turns else x


def unview(y: torch.Tensor, turns: int, mirrored: bool) -> torch.Tensor:
    """``y`` (..., H', W'), computed on :func:`view_of` an image, mapped back onto the image."""
    if turns:
        y = y.rot90(-turns, (-2, -1))
    return y.flip(-1) if mirrored else y


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy in nats over the classes of (n, C, ...) probabilities: (n, ...), 0 log 0 = 0."""
    return -probs.xlogy(probs).sum(1)


def view_information(mean: torch.Tensor, mean_entropy: torch.Tensor) -> torch.Tensor:
    """The mutual information between class and view (BALD): the entropy of the views' mean
    probabilities ``mean`` (n, C, ...) less the mean of the views' entropies ``mean_entropy``
    (n, ...); 0 where the views agree, at most the smaller of ``H(mean)`` and log(views)."""
    return (entropy(mean) - mean_entropy).clamp_(min=0)
