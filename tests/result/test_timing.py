"""Where a prediction's time went, told from the timings its result records."""

from __future__ import annotations

import pytest

from wsiseg.result.timing import STAGES, time_hint, time_line, time_stages

# As a CPU run records them: the network nearly all of the window loop.
CPU_RUN = {"tissue": 0.6, "loop": 34.3, "predict": 29.4, "stitch_write": 4.4, "read": 24.9,
           "focus": 2.5}


def test_the_stages_add_up_to_the_run_and_the_reads_are_what_the_loop_waited():
    stages = time_stages(CPU_RUN, 39.5)
    assert set(stages) == set(STAGES)
    assert sum(stages.values()) == pytest.approx(39.5)
    assert stages["reading"] == pytest.approx(34.3 - 29.4 - 4.4)  # not the reads' own time
    assert stages["rest"] == pytest.approx(39.5 - 0.6 - 34.3)


def test_the_line_gives_each_stage_largest_first_and_a_network_bound_run_gets_no_hint():
    line = time_line(CPU_RUN, 39.5)
    assert line.startswith("time: network 29.4 s (74%), start and finish 4.6 s (12%)")
    assert line.count("%") == len(STAGES)
    assert time_hint(CPU_RUN, 39.5) is None


@pytest.mark.parametrize("stage,timings,seconds,said", [
    ("reading", {"tissue": 0.5, "loop": 6.0, "predict": 1.4, "stitch_write": 0.6}, 7.5,
     "--threads"),
    ("blending", {"tissue": 0.5, "loop": 6.0, "predict": 1.4, "stitch_write": 4.0}, 7.5,
     "local disk"),
    ("tissue", {"tissue": 9.0, "loop": 6.0, "predict": 5.0, "stitch_write": 0.6}, 16.0,
     "--qc off"),
    ("rest", {"tissue": 0.5, "loop": 3.0, "predict": 2.0, "stitch_write": 0.6}, 16.0, "batch"),
])
def test_a_stage_slower_than_the_network_gets_a_hint(stage, timings, seconds, said):
    assert max(time_stages(timings, seconds).items(), key=lambda kv: kv[1])[0] == stage
    hint = time_hint(timings, seconds)
    assert hint is not None and hint.startswith("hint: ") and said in hint
    assert time_hint(timings, 4.0, min_seconds=5.0) is None  # a short run is left alone


def test_a_result_recorded_without_some_timings_still_gets_a_line():
    assert time_line({}, 2.0) == ("time: start and finish 2.0 s (100%), tissue 0.0 s (0%), "
                                  "network 0.0 s (0%), waiting for reads 0.0 s (0%), "
                                  "blending and writing 0.0 s (0%)")
