"""Stage 3, the result: the zarr store a prediction writes and every later step reads.

- :mod:`~wsiseg.result.store`: writing a store that only ever appears complete, and opening one;
- :mod:`~wsiseg.result.info`: :class:`ResultInfo`, what a result records, typed and validated;
- :mod:`~wsiseg.result.pyramid`: the pyramids, where each layout keeps its arrays, and their
  OME-Zarr (NGFF 0.5) metadata.
"""

from __future__ import annotations
