"""Finding the slides of a batch: files, folders, globs and list files; what makes a batch;
one result name per slide."""

from __future__ import annotations

import shutil

import pytest

from wsiseg.batch.discovery import find_slides, is_batch, output_for
from wsiseg.batch.runner import BatchConfig, predict_slides
from wsiseg.errors import ConfigError


def test_find_slides_takes_files_folders_globs_and_lists(slides, tmp_path):
    every = sorted(slides.glob("*.svs"))
    assert find_slides([slides]) == every
    assert find_slides([str(slides / "s*.svs")]) == every[1:]
    listing = tmp_path / "batch.txt"
    listing.write_text(f"# today's slides\n{slides / 's1.svs'}\n\n{slides / 's1.svs'}\nmissing.svs\n")
    found = find_slides([listing, slides / "s0.svs"])
    assert found == [slides / "s1.svs", tmp_path / "missing.svs", slides / "s0.svs"]
    (tmp_path / "empty").mkdir()
    for bad in ([tmp_path / "empty"], [str(tmp_path / "*.svs")], [tmp_path / "nope.svs"]):
        with pytest.raises(ConfigError, match=str(tmp_path)):
            find_slides(bad)


def test_a_folder_a_list_a_pattern_or_several_inputs_make_a_batch(slides, tmp_path):
    listing = tmp_path / "batch.txt"
    listing.write_text(f"{slides / 's0.svs'}\n")
    assert is_batch([slides])
    assert is_batch([str(listing)])
    assert is_batch([str(slides / "s*.svs")])
    assert is_batch([str(slides / "s0.svs"), str(slides / "s1.svs")])
    # One slide file is not a batch, whatever its name, and neither is a missing file.
    assert not is_batch([str(slides / "s0.svs")])
    assert not is_batch([slides / "s0.svs"])
    assert not is_batch([str(tmp_path / "missing.svs")])
    assert not is_batch([str(tmp_path / "missing.txt")])  # a list that is not there
    starred = tmp_path / "scan*1.svs"
    shutil.copy(slides / "s1.svs", starred)
    assert not is_batch([str(starred)])  # a file whose name looks like a pattern


def test_each_slide_has_its_result_named_by_its_stem(tmp_path):
    assert output_for(tmp_path / "a" / "s0.svs", tmp_path / "out") == tmp_path / "out" / "s0.wsiseg.zarr"


def test_two_slides_with_one_name_are_refused_before_any_work(slides, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(slides / "s0.svs", other / "s0.svs")
    config = BatchConfig(out_dir=str(tmp_path / "out"), progress=False)
    with pytest.raises(ConfigError, match="s0.wsiseg.zarr"):
        predict_slides([slides / "s0.svs", other / "s0.svs"], config)
    assert not (tmp_path / "out" / "manifest.csv").exists()
