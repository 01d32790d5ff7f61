"""Tissue detection and the choice of mask resolution."""

from __future__ import annotations

import numpy as np
import pytest

from wsiseg.slide.tissue import mask_factor, otsu_threshold, saturation, tissue_mask


def he_image(seed=0, size=(120, 160)):
    """Glass with two pink/purple tissue discs (one with a lumen) and a speck of dust."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.clip(rng.normal(238, 3, (h, w, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:h, :w]
    disc1 = (yy - 50) ** 2 + (xx - 50) ** 2 < 35**2
    lumen = (yy - 50) ** 2 + (xx - 50) ** 2 < 6**2
    disc2 = (yy - 80) ** 2 + (xx - 120) ** 2 < 25**2
    truth = (disc1 | disc2)
    pink = np.array([230, 150, 190]) + rng.normal(0, 8, (h, w, 3))
    purple = np.array([120, 80, 170]) + rng.normal(0, 8, (h, w, 3))
    tissue = np.where((rng.random((h, w)) < 0.3)[..., None], purple, pink)
    img[disc1 & ~lumen] = np.clip(tissue[disc1 & ~lumen], 0, 255)
    img[disc2] = np.clip(tissue[disc2], 0, 255)
    img[5, 150] = (120, 80, 170)  # a single purple speck: not tissue
    return img, truth


def test_finds_tissue_fills_lumen_and_drops_specks():
    img, truth = he_image()
    mask = tissue_mask(img, pixel_um=10.0)
    assert (mask == truth).mean() > 0.98
    assert mask[50, 50]  # the lumen belongs to the tissue
    assert not mask[5, 150]


def test_glass_only_gives_empty_mask():
    rng = np.random.default_rng(1)
    glass = np.clip(rng.normal(240, 4, (100, 100, 3)), 0, 255).astype(np.uint8)
    assert not tissue_mask(glass).any()


def test_all_tissue_is_not_split_in_two():
    img, _ = he_image()
    full = img.copy()
    pink = np.array([225, 160, 200], dtype=np.uint8)
    full[:] = pink
    full[::3, ::3] = (120, 80, 170)
    assert tissue_mask(full).mean() > 0.99


def test_otsu_separates_two_modes():
    values = np.concatenate([np.full(1000, 0.02), np.full(500, 0.4)])
    t = otsu_threshold(values)
    assert 0.02 < t < 0.4
    assert saturation(np.array([[[255, 0, 0], [10, 10, 10]]], dtype=np.uint8)).tolist() == [[1.0, 0.0]]


@pytest.mark.parametrize("patch,stride,mpp,want", [(400, 100, 1.0, 10), (400, 100, 0.5, 20),
                                                   (256, 64, 1.0, 8), (97, 13, 1.0, 10)])
def test_mask_factor_divides_the_grid_when_it_can(patch, stride, mpp, want):
    assert mask_factor(patch, stride, mpp) == want


# --- a slide declaring an absurd size --------------------------------------------------------


def write_declared_tiff(path, width, height, tile=1024, mpp=0.25):
    """A BigTIFF declaring ``width`` x ``height`` RGB pixels in deflate tiles of glass that
    all point at one stored tile: a few MB on disk, any size once decoded."""
    import struct
    import zlib

    data = zlib.compress(np.full((tile, tile, 3), 240, np.uint8).tobytes(), 9)
    tiles = -(-width // tile) * -(-height // tile)
    res = round(1e4 / mpp)  # pixels per cm
    offsets = 16 + 8 + 15 * 20 + 8
    counts, pixels = offsets + 8 * tiles, offsets + 16 * tiles
    short, long8 = "<HHQH6x", "<HHQQ"
    entries = [
        struct.pack(long8, 256, 16, 1, width), struct.pack(long8, 257, 16, 1, height),
        struct.pack("<HHQHHH2x", 258, 3, 3, 8, 8, 8), struct.pack(short, 259, 3, 1, 8),
        struct.pack(short, 262, 3, 1, 2), struct.pack(short, 277, 3, 1, 3),
        struct.pack("<HHQII", 282, 5, 1, res, 1), struct.pack("<HHQII", 283, 5, 1, res, 1),
        struct.pack(short, 284, 3, 1, 1), struct.pack(short, 296, 3, 1, 3),
        struct.pack(short, 322, 3, 1, tile), struct.pack(short, 323, 3, 1, tile),
        struct.pack(long8, 324, 16, tiles, offsets), struct.pack(long8, 325, 16, tiles, counts),
        struct.pack(short, 339, 3, 1, 1),
    ]
    with open(path, "wb") as f:
        f.write(b"II" + struct.pack("<HHHQ", 43, 8, 0, 16) + struct.pack("<Q", len(entries)))
        f.write(b"".join(entries) + struct.pack("<Q", 0))
        np.full(tiles, pixels, "<u8").tofile(f)
        np.full(tiles, len(data), "<u8").tofile(f)
        f.write(data)
    return path


@pytest.fixture(scope="module")
def declared_huge(tmp_path_factory):
    """10^6 x 10^6 pixels at 0.25 um/px and no pyramid, 15 MB."""
    return write_declared_tiff(tmp_path_factory.mktemp("huge") / "huge.tiff", 10**6, 10**6)


def test_a_slide_declaring_a_huge_level_warns_estimates_and_stops_on_ctrl_c(
        declared_huge, monkeypatch, caplog):
    import time

    from wsiseg.slide import tissue
    from wsiseg.slide.geometry import plan_geometry
    from wsiseg.slide.reader import open_slide

    monkeypatch.setattr(tissue, "ESTIMATE_AFTER_SECONDS", 0.5)
    totals = []

    class Bar:  # the progress bar: told the work, then each part done; Ctrl-C once estimated
        def __init__(self, total):
            totals.append(total)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def update(self, n):
            if any("more" in r.getMessage() for r in caplog.records):
                raise KeyboardInterrupt

    with open_slide(declared_huge) as slide, caplog.at_level("WARNING", "wsiseg"):
        analysis = plan_geometry(slide.level_downsamples, slide.bounds, slide.mpp, 1.0)
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            tissue.read_tissue(slide, analysis, 10, threads=2, progress=Bar)
        assert time.monotonic() - started < 10
    first, estimate = [r.getMessage() for r in caplog.records]
    assert first.startswith("huge.tiff: finding the tissue decodes 1000 gigapixels of level 0 "
                            "in ") and "Ctrl-C stops it" in first
    assert "megapixels/s), about " in estimate
    assert totals == [10**12]


def test_ctrl_c_stops_tissue_detection_of_a_huge_slide_from_the_command(declared_huge,
                                                                         pixel_model, tmp_path):
    import signal
    import subprocess
    import sys

    out = tmp_path / "out.wsiseg.zarr"  # SIGINT: the default handler, as ctrl_c sets
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsiseg.cli.main", "predict", str(declared_huge), "--model",
         str(pixel_model[0]), "--out", str(out)], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        warning = proc.stderr.readline()
        assert warning.startswith("wsiseg: warning: huge.tiff: finding the tissue decodes")
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert rest.strip().splitlines() == ["wsiseg: interrupted; no output was left behind"]
    assert list(tmp_path.iterdir()) == []
