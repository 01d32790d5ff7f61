"""Results to edit or damage in the tests of :mod:`wsiseg.result`: one published as ``wsiseg
predict`` publishes one (the real writer: chunks with checksums, pyramids, the picture of the
slide, the record of chunk files), of a real slide file; and the helpers that edit them and
check what reading them says."""

from __future__ import annotations

import dataclasses
import json
import resource
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from wsiseg.cards import ClassInfo
from wsiseg.result.rows import FinishedRows
from wsiseg.result.store import open_result
from wsiseg.result.writer import OutputWriter
from wsiseg.testing.result import write_result

CLASSES = (ClassInfo(0, "background", (255, 255, 255)), ClassInfo(1, "tissue", (0, 128, 0)),
           ClassInfo(2, "tumour", (200, 0, 0)))
SCALE = 2  # level-0 pixels per map pixel
TISSUE_FACTOR = 4  # map pixels per tissue mask pixel


def publish(out: Path, slide: Path, labels: np.ndarray, dimensions: tuple[int, int],
            chunk: int = 64, probabilities: bool = False) -> Path:
    """``labels`` published at ``out`` through an :class:`OutputWriter`, as the map of
    ``slide`` (level 0 ``dimensions``, 0.5 um/px) at :data:`SCALE` level-0 pixels a pixel."""
    described = write_result(out.with_name(out.name + ".described"), labels, CLASSES,
                             scale=(SCALE, SCALE), slide_mpp=(0.5, 0.5), dimensions=dimensions)
    info = open_result(described)[1]
    shutil.rmtree(described)
    info = dataclasses.replace(
        info, slide=dataclasses.replace(info.slide, path=slide.resolve()),
        tissue=dataclasses.replace(info.tissue, factor=TISSUE_FACTOR))
    h, w = labels.shape
    writer = OutputWriter(out, h, w, len(CLASSES), probabilities=probabilities, chunk=chunk)
    mask = (labels[::TISSUE_FACTOR, ::TISSUE_FACTOR] > 0).astype(np.uint8)
    writer.write_tissue(mask)
    writer.write_image(np.full((*mask.shape, 3), 230, np.uint8))
    probs = None
    if probabilities:
        probs = np.stack([(labels == c).astype(np.uint8) * 255 for c in range(len(CLASSES))])
    writer.write_rows(FinishedRows(y=0, labels=labels, probabilities=probs))
    return writer.publish(info, overwrite=False)


def edit_json(path: Path, edit) -> None:
    """Rewrite the JSON file ``path`` with ``edit(document)`` applied (JSON's NaN and Infinity
    allowed, as a hand-edited file may hold them)."""
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


def one_line(message: str, *words: str) -> None:
    """``message`` is one line holding each of ``words``."""
    assert "\n" not in message and "Traceback" not in message, message
    for word in words:
        assert word in message, (word, message)


MEMORY_LIMIT = 1536 * 2**20  # address space of a process that reads a hostile result


def run_limited(script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``script`` run by Python in a process of its own, under :data:`MEMORY_LIMIT`, so that
    a regression fails fast instead of eating the machine."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limit, check=False)
