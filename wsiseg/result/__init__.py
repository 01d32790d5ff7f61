"""Stage 3, the result: the zarr store a prediction writes and every later step reads.

- :mod:`~wsiseg.result.writer`: writing a store that only ever appears complete;
- :mod:`~wsiseg.result.store`: opening one, the one way to read a result;
- :mod:`~wsiseg.result.files`: the zarr store every read of a result goes through (plain files
  inside it only, of bounded size, each chunk checked before it is decompressed);
- :mod:`~wsiseg.result.integrity` and :mod:`~wsiseg.result.reading`: damage found, on opening
  and on reading, and told in one line;
- :mod:`~wsiseg.result.rows`: the finished rows a prediction hands to the writer;
- :mod:`~wsiseg.result.info`: :class:`ResultInfo`, what a result records, typed and validated;
- :mod:`~wsiseg.result.pyramid`: the pyramids, where each layout keeps its arrays, and their
  OME-Zarr (NGFF 0.5) metadata.
"""

from __future__ import annotations
