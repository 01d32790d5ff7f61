"""Reading pixels: the fast path into numpy gives what OpenSlide's public API gives."""

from __future__ import annotations

import numpy as np
import openslide
import pytest

from wsiseg.slide.reader import (
    _DIRECT_READ,
    _composite_on_white,
    _premultiplied_bgra_on_white,
    open_slide,
)


@pytest.mark.parametrize("level", [0, 1, 2])
def test_read_level_matches_openslide_and_pads_with_glass(svs_x40, level):
    with open_slide(svs_x40.path) as slide, openslide.OpenSlide(str(svs_x40.path)) as osr:
        w, h = slide.level_dimensions[level]
        d = slide.level_downsamples[level]
        # A rectangle hanging over the top-left and bottom-right corners of the level.
        x, y, rw, rh = w // 2, h // 3, w, h
        got = slide.read_level(level, x, y, rw, rh)
        ref = np.asarray(osr.read_region((int(x * d), int(y * d)), level, (w - x, h - y)))
        assert got.shape == (rh, rw, 3) and got.dtype == np.uint8
        assert np.array_equal(got[: h - y, : w - x], ref[..., :3])
        assert (got[h - y :] == 255).all() and (got[:, w - x :] == 255).all()
        left = slide.read_level(level, -7, -5, 20, 10)
        assert (left[:5] == 255).all() and (left[:, :7] == 255).all()
        corner = np.asarray(osr.read_region((0, 0), level, (13, 5)))[..., :3]
        assert np.array_equal(left[5:, 7:], corner)


def test_read_into_a_view_writes_only_that_view(svs_x40):
    band = np.zeros((50, 80, 3), dtype=np.uint8)
    with open_slide(svs_x40.path) as slide:
        slide.read_level(1, 10, 20, 30, 40, out=band[5:45, 40:70])
        ref = slide.read_level(1, 10, 20, 30, 40)
    assert np.array_equal(band[5:45, 40:70], ref)
    band[5:45, 40:70] = 0
    assert not band.any()


def test_premultiplied_compositing_on_white_matches_straight_alpha():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (64, 64, 3))
    alpha = rng.integers(0, 256, (64, 64))
    alpha[:8] = 255
    alpha[8:16] = 0
    # OpenSlide's native words: premultiplied, bytes B, G, R, A on a little-endian machine.
    premult = (rgb * alpha[..., None] + 127) // 255
    bgra = np.dstack([premult[..., ::-1], alpha]).astype(np.uint8)
    straight = np.dstack([rgb, alpha]).astype(np.uint8)
    fast = np.empty((64, 64, 3), np.uint8)
    slow = np.empty((64, 64, 3), np.uint8)
    _premultiplied_bgra_on_white(bgra, fast)
    _composite_on_white(straight, slow)
    assert np.array_equal(fast[:8], rgb[:8])  # opaque: untouched
    assert (fast[8:16] == 255).all()  # fully transparent: white glass
    assert np.abs(fast.astype(int) - slow).max() <= 1


def test_fast_path_is_in_use_here():
    # The machines this runs on are little-endian with openslide-python 1.x: the direct read
    # must be active, or the read-once figures in benchmarks/ do not describe this build.
    assert _DIRECT_READ is not None
