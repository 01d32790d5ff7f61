"""PredictConfig.validate(): settings that contradict each other are refused before any work."""

from __future__ import annotations

import pytest

from wsiseg.errors import ConfigError
from wsiseg.inference.pipeline import PredictConfig


def test_a_stride_larger_than_the_patch_size_is_refused():
    with pytest.raises(ConfigError, match="stride 200 is larger than the patch size 100"):
        PredictConfig(patch_size=100, stride=200).validate()


@pytest.mark.parametrize("patch_size, stride", [(100, 100), (100, 50), (None, 200), (100, None)])
def test_a_stride_up_to_the_patch_size_or_from_the_card_is_taken(patch_size, stride):
    PredictConfig(patch_size=patch_size, stride=stride).validate()
