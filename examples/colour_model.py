"""Write a tiny per-pixel colour model, with its card, to try wsiseg end to end.

This is NOT a diagnostic network: it is a fixed 1x1 convolution that calls a pixel
"haematoxylin-rich" (purple: nuclei) or "eosin-rich" (pink: stroma, cytoplasm) from its colour.
It needs no training and no download, so it shows the whole slide-to-map path working on any
H&E slide. For diagnostic maps use trained weights: ``--model hspnet_r34 --weights FILE``.

    python examples/colour_model.py colour.pt
    wsiseg predict ../shared/data/slides/CMU-1-Small-Region.svs --model colour.pt --trust-code

It is written as TorchScript, which is code: wsiseg runs it only with --trust-code (or
WSISEG_TRUST_CODE=1), here a file you have just made yourself.
"""

from __future__ import annotations

import sys

import torch

from wsiseg.models import ClassInfo, ModelCard, save_torchscript


class ColourModel(torch.nn.Module):
    """Logits per pixel: background (bright), eosin-rich (red > blue), haematoxylin-rich."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, kernel_size=1)
        with torch.no_grad():
            # Inputs are RGB in 0..1 (the card's mean 0, std 1).
            self.conv.weight.copy_(torch.tensor([
                [[12.0], [12.0], [12.0]],   # background: bright on every channel
                [[14.0], [-4.0], [-6.0]],   # eosin: red well above blue
                [[-2.0], [-8.0], [14.0]],   # haematoxylin: blue dominant
            ]).view(3, 3, 1, 1))
            self.conv.bias.copy_(torch.tensor([-29.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def card() -> ModelCard:
    return ModelCard(
        name="colour-demo",
        architecture="torchscript",
        arguments={"num_classes": 3},
        classes=(
            ClassInfo(0, "background", (0, 0, 0)),
            ClassInfo(1, "eosin-rich", (240, 120, 170)),
            ClassInfo(2, "haematoxylin-rich", (90, 60, 200)),
        ),
        mpp=1.0,
        patch_size=400,
        stride=100,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        description="Per-pixel colour rule for trying the pipeline; not a diagnostic model.",
    )


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "colour.pt"
    save_torchscript(out, torch.jit.script(ColourModel().eval()), card())
    print(f"wrote {out}")
