"""Fixtures of the batch tests: a folder of small synthetic slides (one of them unreadable)
and a model slow enough that a run can be stopped in the middle of a slide."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wsiseg.testing import synthetic_tissue, write_svs


class SlowPixelModel(torch.nn.Module):
    """A per-pixel function, made slow by work whose result is thrown away (so that a run can
    be stopped in the middle of a slide)."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, kernel_size=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[9.0, -3, -5], [-2, -6, 9], [-4, 7, -2]]).view(3, 3, 1, 1))
            self.conv.bias.zero_()
        self.rounds = rounds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = torch.ones(256, 256) / 256
        for _ in range(self.rounds):
            m = m @ m
        return self.conv(x) + 0 * m.sum()


@pytest.fixture(scope="session")
def slow_model(tmp_path_factory):
    from wsiseg.models import ClassInfo, ModelCard, save_torchscript

    card = ModelCard(
        name="slow-test", architecture="torchscript", arguments={"num_classes": 3},
        classes=tuple(ClassInfo(i, f"class{i}", (80 * i, 0, 0)) for i in range(3)),
        mpp=1.0, patch_size=200, stride=100, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
        description="slow test model",
    )
    path = tmp_path_factory.mktemp("models") / "slow.pt"
    save_torchscript(path, torch.jit.script(SlowPixelModel(rounds=300).eval()), card)
    return path


def _damage_tiles(path: Path) -> None:
    """Overwrite every tile of ``path`` with zeros: the slide opens, but no pixel decodes."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        tiles = [(o, n) for page in tif.pages if page.is_tiled
                 for o, n in zip(page.dataoffsets, page.databytecounts)]
    with open(path, "r+b") as f:
        for offset, count in tiles:
            f.seek(offset)
            f.write(bytes(count))


@pytest.fixture(scope="session")
def slides(tmp_path_factory):
    """Three small synthetic slides and one that opens but cannot be read (read-only)."""
    folder = tmp_path_factory.mktemp("slides")
    for i in range(4):
        rgb, _ = synthetic_tissue(640, 800, seed=50 + i, tissue_fraction=0.5)
        write_svs(folder / (f"s{i}.svs" if i < 3 else "bad.svs"), rgb, mpp=0.5)
    _damage_tiles(folder / "bad.svs")
    return folder


@pytest.fixture(scope="session")
def six_slides(tmp_path_factory):
    """Six small synthetic slides."""
    folder = tmp_path_factory.mktemp("six")
    for i in range(6):
        rgb, _ = synthetic_tissue(640, 800, seed=70 + i, tissue_fraction=0.5)
        write_svs(folder / f"t{i}.svs", rgb, mpp=0.5)
    return folder
