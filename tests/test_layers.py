"""Reading, exporting and viewing a result, and refusing a slide, never load torch.

The layers themselves are checked by import-linter (``.ci/checks``); these tests check what a
user pays for: each runs in a fresh interpreter and looks at ``sys.modules`` afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from wsiseg.cards import ClassInfo
from wsiseg.testing.result import write_result

CLASSES = (ClassInfo(0, "background", (255, 255, 255)), ClassInfo(1, "tumour", (200, 0, 0)))

# Runs the command line in this interpreter, then says whether torch was loaded.
RUN_CLI = """
import json, sys
from wsiseg.cli.main import main
try:
    main(sys.argv[1:], prog_name="wsiseg")
except SystemExit as done:
    code = done.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


def _fresh(code: str, *args: str, cwd: Path | None = None) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_result_export_and_view_layers_leaves_torch_unloaded():
    loaded = _fresh(
        "import json, sys\n"
        "import wsiseg, wsiseg.cards, wsiseg.result, wsiseg.result.store, wsiseg.result.writer\n"
        "import wsiseg.result.info, wsiseg.export, wsiseg.export.report, wsiseg.export.tiff\n"
        "import wsiseg.export.geojson, wsiseg.export.thumbnail, wsiseg.view, wsiseg.cli.main\n"
        "import wsiseg.batch.manifest, wsiseg.batch.claims, wsiseg.batch.discovery\n"
        "print(json.dumps({'torch': 'torch' in sys.modules}))"
    )
    assert loaded == {"torch": False}


def test_a_report_export_runs_without_torch(tmp_path):
    labels = np.zeros((40, 60), dtype=np.uint8)
    labels[10:30, 20:50] = 1
    result = write_result(tmp_path / "slide.wsiseg.zarr", labels, CLASSES)
    ran = _fresh(RUN_CLI, "export", str(result), "--to", "report", "--out", str(tmp_path))
    assert ran == {"code": 0, "torch": False}
    assert (tmp_path / "slide.report.json").is_file()



def test_a_refused_slide_is_refused_before_torch_is_loaded(tmp_path):
    slide = tmp_path / "notes.svs"
    slide.write_text("not a slide")
    ran = _fresh(RUN_CLI, "predict", str(slide), "--quiet")
    assert ran == {"code": 1, "torch": False}


def test_a_slide_without_a_resolution_is_refused_before_torch_is_loaded(tmp_path):
    from wsiseg.testing import synthetic_tissue, write_generic_tiff

    rgb, _ = synthetic_tissue(256, 256, seed=3)
    slide = write_generic_tiff(tmp_path / "no-mpp.tif", rgb, mpp=None)
    ran = _fresh(RUN_CLI, "predict", str(slide), "--quiet")
    assert ran == {"code": 1, "torch": False}
