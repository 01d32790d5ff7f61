"""Shared fixtures: small synthetic slides with known resolution and tissue, and the real data.

The synthetic slides are written once per test session (with :mod:`wsiseg.testing`) into
temporary folders. Each fixture returns a :class:`SyntheticSlide`: ``rgb_level0`` holds the
pixels OpenSlide returns at level 0 (for a JPEG slide that is the decoded image, read back
once, not the array that was compressed), ``tissue`` the true tissue mask at level 0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

from wsiseg.testing import synthetic_tissue, write_generic_tiff, write_svs

# The suite's test models are TorchScript files it writes itself, so it trusts their code as
# --trust-code does; the commands it starts inherit this. Tests of the refusal remove it.
os.environ["WSISEG_TRUST_CODE"] = "1"

#: ../shared/data beside the repository (real slides, GlaS); absent on some machines.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class SyntheticSlide(NamedTuple):
    """A slide file written for the tests, and what it holds."""

    path: Path
    #: Level-0 resolution written in the file, um/px; None when the file has none.
    mpp: float | None
    #: (H, W, 3) uint8: what OpenSlide reads at level 0.
    rgb_level0: np.ndarray
    #: (H, W) bool: where tissue was painted.
    tissue: np.ndarray
    #: The pyramid's downsamples.
    downsamples: tuple[int, ...]


def read_level0(path: Path) -> np.ndarray:
    """All of level 0 as OpenSlide returns it, RGB uint8 (opaque slides only)."""
    import openslide

    with openslide.OpenSlide(str(path)) as osr:
        rgba = np.asarray(osr.read_region((0, 0), 0, osr.dimensions))
    assert (rgba[..., 3] == 255).all(), f"{path}: level 0 has transparent pixels"
    return np.ascontiguousarray(rgba[..., :3])


@pytest.fixture(autouse=True)
def _library_logging_restored():
    """Each test starts with the ``wsiseg`` logger as the library leaves it: a command run in
    an earlier test sends its lines to stderr and stops them reaching the root (and caplog)."""
    import logging

    logger = logging.getLogger("wsiseg")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


@pytest.fixture
def ctrl_c():
    """Ctrl-C raises KeyboardInterrupt here and in the commands this test starts, as in a
    terminal, even when the tests were started in the background of a shell, which ignores it
    (a handler, unlike SIG_IGN, is not passed on to child processes: they get the default)."""
    import signal

    saved = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, saved)


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Each test starts with torch's thread count of the session: training sets its own."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def svs_x40(tmp_path_factory) -> SyntheticSlide:
    """Aperio SVS, JPEG Q90, 2000 x 1600 at 0.25 um/px (x40), levels 1, 4, 16 (x10 = level 1)."""
    rgb, tissue = synthetic_tissue(1600, 2000, seed=40, tissue_fraction=0.4)
    path = write_svs(tmp_path_factory.mktemp("svs_x40") / "x40.svs", rgb, mpp=0.25)
    return SyntheticSlide(path, 0.25, read_level0(path), tissue, (1, 4, 16))


@pytest.fixture(scope="session")
def svs_x20(tmp_path_factory) -> SyntheticSlide:
    """Aperio SVS, JPEG Q90, 1008 x 800 at 0.5 um/px (x20), levels 1, 4, 16 (x10 = level 0 / 2)."""
    rgb, tissue = synthetic_tissue(800, 1008, seed=20, tissue_fraction=0.4)
    path = write_svs(tmp_path_factory.mktemp("svs_x20") / "x20.svs", rgb, mpp=0.5)
    return SyntheticSlide(path, 0.5, read_level0(path), tissue, (1, 4, 16))


@pytest.fixture(scope="session")
def tiff_no_mpp(tmp_path_factory) -> SyntheticSlide:
    """Generic tiled TIFF (deflate, lossless), 640 x 512, levels 1 and 4, no resolution tags."""
    rgb, tissue = synthetic_tissue(512, 640, seed=7, tissue_fraction=0.4)
    path = write_generic_tiff(tmp_path_factory.mktemp("tiff_no_mpp") / "no_mpp.tiff", rgb,
                              mpp=None, levels=(1, 4))
    return SyntheticSlide(path, None, rgb, tissue, (1, 4))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real slides and GlaS images); tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (see the README's Set-up)")
    return SHARED_DATA



# -- a local S3 server ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_server():
    """The address of a local S3 server (moto's), for the whole session."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The environment that points S3 clients at :func:`s3_server`; its address."""
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_ENDPOINT_URL", s3_server)):
        monkeypatch.setenv(name, value)
    return s3_server


# -- models for pipeline tests -------------------------------------------------------------------
class PixelModel(torch.nn.Module):
    """A pure per-pixel function: a fixed 1x1 convolution of RGB in 0..1 to 4 class logits."""

    def __init__(self, weight, bias) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, len(bias), kernel_size=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor(weight, dtype=torch.float32).view(len(bias), 3, 1, 1))
            self.conv.bias.copy_(torch.tensor(bias, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _test_card(name: str, classes: int):
    from wsiseg.models import ClassInfo, ModelCard

    return ModelCard(
        name=name, architecture="torchscript", arguments={"num_classes": classes},
        classes=tuple(ClassInfo(i, f"class{i}", (40 * i, 255 - 40 * i, 0)) for i in range(classes)),
        mpp=1.0, patch_size=400, stride=100, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
        description="test model",
    )


@pytest.fixture(scope="session")
def pixel_model(tmp_path_factory):
    """(TorchScript file with embedded card, the module) of a 4-class per-pixel function."""
    from wsiseg.models import save_torchscript

    module = PixelModel(
        [[6, 6, 6], [9, -3, -5], [-2, -6, 9], [-4, 7, -2]], [-14.0, 0.0, 0.0, 0.5]
    ).eval()
    path = tmp_path_factory.mktemp("models") / "pixel.pt"
    save_torchscript(path, torch.jit.script(module), _test_card("pixel-test", 4))
    return path, module


@pytest.fixture(scope="session")
def constant_model(tmp_path_factory):
    """TorchScript file of a model whose logits are (0, 1, 2) everywhere."""
    from wsiseg.models import save_torchscript

    module = PixelModel([[0, 0, 0]] * 3, [0.0, 1.0, 2.0]).eval()
    path = tmp_path_factory.mktemp("models") / "constant.pt"
    save_torchscript(path, torch.jit.script(module), _test_card("constant-test", 3))
    return path


@pytest.fixture(scope="session")
def cmu_result(shared_data, pixel_model, tmp_path_factory) -> Path:
    """The result of the per-pixel model on the real CMU-1-Small-Region.svs (read-only)."""
    from wsiseg.inference.pipeline import PredictConfig, predict_slide

    path, _ = pixel_model
    out = tmp_path_factory.mktemp("cmu") / "cmu.wsiseg.zarr"
    return predict_slide(shared_data / "slides" / "CMU-1-Small-Region.svs",
                         PredictConfig(model=str(path), out=str(out), progress=False)).path
