"""Where the time of a prediction went, from what its result records (``ResultInfo.timings``).

The stages are the network (``predict``: the batches' forward passes as the main thread waits
for them), waiting for the slide's pixels (the part of the window loop that is neither the
network nor blending: reads not hidden behind the network), blending and writing the map
(``stitch_write``), finding the tissue and artefacts (``tissue``) and the rest: opening the
slide, loading the network, the pyramid and the review written at the end. On a CPU the network
should take nearly all of it; when another stage takes more than the network, :func:`time_hint`
says what to try.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["STAGES", "time_hint", "time_line", "time_stages"]

#: The stages, in the order a run goes through them, with the names a summary gives them.
STAGES = {
    "tissue": "tissue",
    "network": "network",
    "reading": "waiting for reads",
    "blending": "blending and writing",
    "rest": "start and finish",
}

_HINTS = {
    "reading": "reading the slide takes longer than the network: give more reader threads "
               "(--threads), or copy a slide on a network share or a bucket to a local disk first",
    "blending": "blending and writing take longer than the network: write --out to a local "
                "disk, and leave out --probabilities if it is not needed",
    "tissue": "tissue and artefact detection take longer than the network: --qc off leaves "
              "artefacts out where they are not needed",
    "rest": "the start and finish (opening the slide, loading the network, the pyramid and "
            "review of the map) take longer than the network: small slides do best in a "
            "batch, which loads the network once",
}


def time_stages(timings: Mapping[str, float], seconds: float) -> dict[str, float]:
    """Seconds of each of :data:`STAGES` in a run of ``seconds`` whose result recorded
    ``timings``; stages a result did not record count as 0."""
    loop = float(timings.get("loop", 0.0))
    network = float(timings.get("predict", 0.0))
    blending = float(timings.get("stitch_write", 0.0))
    tissue = float(timings.get("tissue", 0.0))
    return {
        "tissue": tissue,
        "network": network,
        "reading": max(0.0, loop - network - blending),
        "blending": blending,
        "rest": max(0.0, seconds - tissue - loop),
    }


def time_line(timings: Mapping[str, float], seconds: float) -> str:
    """One line: each stage's seconds and share of the run, the largest first."""
    stages = time_stages(timings, seconds)
    total = sum(stages.values()) or 1.0
    parts = [f"{STAGES[name]} {value:.1f} s ({100 * value / total:.0f}%)"
             for name, value in sorted(stages.items(), key=lambda item: -item[1])]
    return "time: " + ", ".join(parts)


def time_hint(timings: Mapping[str, float], seconds: float, min_seconds: float = 5.0
              ) -> str | None:
    """What to try when a stage other than the network took longest (and longer than the
    network) in a run of at least ``min_seconds``; None when the network did, as it should."""
    stages = time_stages(timings, seconds)
    largest = max(stages, key=lambda name: stages[name])
    if largest == "network" or seconds < min_seconds:
        return None
    return f"hint: {_HINTS[largest]}"
