"""The map's uncertainty: the normalised entropy of the blend, streamed with the labels, and
with test-time augmentation the views' disagreement as well."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wsiseg.inference.grid import PatchGrid
from wsiseg.inference.pipeline import PredictConfig, predict_slide
from wsiseg.inference.predictor import Normalisation, Predictor
from wsiseg.inference.stitcher import Stitcher, uncertainty, uncertainty_u8
from wsiseg.inference.tta import TTA_VIEWS, entropy, unview, view_information, view_of
from wsiseg.result.pyramid import mean_downsample, uncertainty_level_path
from wsiseg.result.rows import FinishedRows
from wsiseg.result.store import open_result, open_result_group, result_array, uncertainty_array
from wsiseg.slide.geometry import plan_geometry
from wsiseg.slide.reader import open_slide
from wsiseg.slide.region import RegionReader


def u8(prob, information=None, views=1) -> np.ndarray:
    p = torch.tensor(prob, dtype=torch.float32).view(len(prob), 1, 1)
    info = None if information is None else torch.tensor(information, dtype=torch.float32).view(1, 1)
    return uncertainty_u8(uncertainty(p, info, views)).numpy()[0, 0]


def test_entropy_values_are_exact_on_constructed_probabilities():
    assert u8([0, 0, 1, 0, 0, 0]) == 0  # one-hot: certain
    assert u8([1 / 6] * 6) == 255  # uniform: as uncertain as can be
    assert u8([0.5, 0.5, 0, 0, 0, 0]) == round(255 * math.log(2) / math.log(6)) == 99
    assert u8([0.5, 0.5]) == 255
    assert u8([1.0]) == 0  # one class: nothing to be unsure of


def blended_uncertainty(views_of_window, grid, classes, views, batched):
    """Uncertainty rows of a stitcher fed windows whose ``views`` views are ``views_of_window``
    (V, C) constants, with their mean and their information as the predictor makes them."""
    p = grid.patch_size
    stack = torch.tensor(views_of_window, dtype=torch.float32).view(views, 1, classes, 1, 1)
    stack = stack.expand(views, 1, classes, p, p)
    mean = stack.mean(0)
    information = view_information(mean, torch.stack([entropy(v) for v in stack]).mean(0))
    out: list[FinishedRows] = []
    st = Stitcher(grid, classes, p / 8, out.append, views=views, batched=batched)
    for r in range(grid.shape[0]):
        cols = np.arange(grid.shape[1])
        st.add(np.full(len(cols), r), cols, mean.expand(len(cols), -1, -1, -1),
               information.expand(len(cols), -1, -1))
    st.finish()
    rows = np.concatenate([o.uncertainty for o in out])
    assert rows.shape == (grid.height, grid.width)
    return rows


@pytest.mark.parametrize("batched", [False, True])  # window by window, and as on a GPU
def test_views_that_disagree_are_less_certain_than_views_that_agree_with_the_same_mean(batched):
    grid = PatchGrid(70, 50, 32, 16)
    agree = [[0.5, 0.5, 0.0]] * 4
    disagree = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]] * 2  # the same mean, (0.5, 0.5, 0)
    calm = blended_uncertainty(agree, grid, 3, 4, batched)
    torn = blended_uncertainty(disagree, grid, 3, 4, batched)
    # Entropy of the mean alone: log 2 / log 3 for both.
    assert (calm == round(255 * math.log(2) / math.log(3))).all()
    # The views' mutual information is log 2, normalised by sqrt(H(mean) log 4).
    assert (torn == round(255 * math.log(2) / math.sqrt(math.log(2) * math.log(4)))).all()
    assert (torn > calm).all()


def test_the_predictor_gives_the_views_mutual_information():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 3, 3, padding=1)).eval()
    predictor = Predictor(net, 3, Normalisation((0.5,) * 3, (0.25,) * 3), torch.device("cpu"),
                          tta="flip", amp=None)
    patches = np.random.default_rng(2).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    probs, information = predictor.with_information(patches)
    assert information is not None and information.shape == (2, 16, 16)
    x = (torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        seen = torch.stack([unview(torch.softmax(net(view_of(x, t, m)), 1), t, m)
                            for t, m in TTA_VIEWS["flip"]])
    mean = seen.mean(0)
    expected = entropy(mean) - torch.stack([entropy(v) for v in seen]).mean(0)
    assert torch.allclose(probs, mean, atol=1e-5)
    assert torch.allclose(information, expected, atol=1e-5)
    assert float(information.max()) > 1e-3  # the views really disagree somewhere
    assert torch.equal(predictor(patches), probs)
    assert Predictor(net, 3, Normalisation((0.5,) * 3, (0.25,) * 3), torch.device("cpu"),
                     amp=None).with_information(patches)[1] is None


def reference_probabilities(slide_path, model, target_mpp=1.0) -> np.ndarray:
    """The per-pixel model on the whole analysis image at once: (C, H, W)."""
    with open_slide(slide_path) as slide:
        g = plan_geometry(slide.level_downsamples, slide.bounds, slide.mpp, target_mpp)
        image = RegionReader(slide, g).read(0, 0, g.width, g.height)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        return torch.softmax(model(x), dim=1)[0].numpy()


@pytest.mark.parametrize("tta", ["none", "flip"])
def test_streamed_uncertainty_is_the_entropy_of_the_map_and_has_mean_levels(
        svs_x20, pixel_model, tmp_path, tta):
    """Every window kept: the blend is the per-pixel function, so the streamed uncertainty is
    its normalised entropy, in stripes too; a per-pixel function has no view disagreement."""
    model_path, module = pixel_model
    out = tmp_path / "u.wsiseg.zarr"
    info = predict_slide(svs_x20.path, PredictConfig(
        model=str(model_path), out=str(out), patch_size=96, stride=32, tissue_threshold=0.0,
        progress=False, stripe_width=256, chunk_size=128, tta=tta))
    assert info.stripes == 2
    assert info.uncertainty == ("entropy" if tta == "none" else "entropy+views")
    labels, opened = open_result(out)
    group = open_result_group(out)
    streamed = uncertainty_array(group, opened)
    assert streamed is not None and streamed.chunks == labels.chunks
    ref = reference_probabilities(svs_x20.path, module)
    h = -(ref * np.log(np.clip(ref, 1e-30, None))).sum(0) / math.log(ref.shape[0])
    diff = np.abs(streamed[:].astype(int) - np.rint(255 * h).astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.05
    assert int(streamed[:].max()) - int(streamed[:].min()) > 40  # it varies over the slide
    level1 = result_array(group, "uncertainty")
    assert np.array_equal(group[uncertainty_level_path(1)][:],
                          mean_downsample(level1[:][None])[0])
