"""Fixtures of the tests of :mod:`wsiseg.result`: a small published result to edit or damage
(:mod:`hostile_results`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hostile_results import SCALE, publish

from wsiseg.testing import synthetic_tissue, write_svs


@pytest.fixture(scope="session")
def small_published(tmp_path_factory) -> Path:
    """A published result (read-only: copy it to edit it) of a 600 x 400 slide: a 300 x 200
    map in chunks of 64 and its level 1, probabilities included, beside its slide
    ``slide.svs``."""
    folder = tmp_path_factory.mktemp("published")
    rgb, tissue = synthetic_tissue(400, 600, seed=3, tissue_fraction=0.5)
    slide = write_svs(folder / "slide.svs", rgb, mpp=0.5)
    labels = tissue[::SCALE, ::SCALE].astype(np.uint8)
    labels[20:50, 30:90] = 2
    return publish(folder / "slide.wsiseg.zarr", slide, labels, (600, 400), probabilities=True)


@pytest.fixture
def result_copy(small_published, tmp_path) -> Path:
    """A copy of :func:`small_published` to edit."""
    return Path(shutil.copytree(small_published, tmp_path / small_published.name))
