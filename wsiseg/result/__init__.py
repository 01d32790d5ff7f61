"""Stage 3, the result: the zarr store a prediction writes and every later step reads.

- :mod:`~wsiseg.result.store`: writing a store that only ever appears complete, and opening one;
- :mod:`~wsiseg.result.info`: :class:`ResultInfo`, what a result records, typed and validated;
- :mod:`~wsiseg.result.pyramid`: the label pyramid and its OME-Zarr metadata.
"""

from __future__ import annotations
