"""A slide four times taller costs no more memory: nothing sized by the slide's height (the
tissue mask's summed-area table, the picture of the slide, the map) is held whole while the
windows are predicted.

The figure is the Python-level peak (tracemalloc, which sees every numpy array) of a whole
prediction, in a fresh process under an address-space limit, for two slides of the same
width, one four times taller than the other. Before the tissue fractions were summed in bands
and the picture let go once written, the taller slide peaked about 0.8 bytes per extra
analysis pixel higher with the artefact detection off (13 MB here); now the difference is
under 0.1 (a few hundred KB).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from wsiseg.testing import synthetic_tissue, write_svs

LIMIT = 3 << 30  # bytes of address space: torch and these small predictions fit in it
WIDTH, HEIGHT = 512, 4096  # analysis pixels (the slides are at the model's 1 um/px)
#: Bytes of Python-level peak allowed per analysis pixel the taller slide has in addition.
BYTES_PER_EXTRA_PIXEL = 0.3

_SCRIPT = """
import json, resource, sys, tracemalloc
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
from wsiseg.inference.pipeline import PredictConfig, load_configured_model, predict_slide
model = load_configured_model(PredictConfig(model=sys.argv[1]))
peaks = []
tracemalloc.start()
for slide in sys.argv[2:]:
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    info = predict_slide(slide, PredictConfig(out=slide + ".wsiseg.zarr", progress=False,
                                              stride=400, qc="off"), model=model)
    peaks.append([tracemalloc.get_traced_memory()[1] - base, info.patches_predicted])
print(json.dumps(peaks))
"""


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    """Two slides of tissue along their whole height, one 4 x the other's rows."""
    folder = tmp_path_factory.mktemp("tall")
    rgb, _ = synthetic_tissue(HEIGHT // 4, WIDTH, seed=5, tissue_fraction=0.6)
    half = np.concatenate([rgb, rgb[::-1]])  # mirrored: tissue runs on across the seams
    short = np.concatenate([half, half[::-1]])
    tall = np.concatenate([short, short[::-1], short, short[::-1]])
    return [write_svs(folder / f"{name}.svs", image, mpp=1.0, downsamples=(1, 4))
            for name, image in (("short", short), ("tall", tall))]


def test_a_four_times_taller_slide_peaks_no_higher(slides, pixel_model):
    run = subprocess.run(
        [sys.executable, "-c", _SCRIPT.format(limit=LIMIT), str(pixel_model[0]),
         *map(str, slides)], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    (short, short_windows), (tall, tall_windows) = json.loads(run.stdout.splitlines()[-1])
    assert tall_windows > 3 * short_windows > 0  # windows predicted all the way down
    extra_pixels = 3 * WIDTH * HEIGHT
    assert tall - short < BYTES_PER_EXTRA_PIXEL * extra_pixels, (
        f"peak {short / 2**20:.1f} MB for {HEIGHT} rows, {tall / 2**20:.1f} MB for 4 x as many")
