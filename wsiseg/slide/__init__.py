"""Stage 1, the slide: open it, plan the analysis resolution, read regions, find the tissue.

- :mod:`~wsiseg.slide.reader`: :func:`open_slide`, a :class:`Slide` over OpenSlide;
- :mod:`~wsiseg.slide.tiff_tiles`: the tiles of SVS and generic TIFF slides decoded with
  tifffile, in parallel (``reader="tifffile"`` or ``"auto"``);
- :mod:`~wsiseg.slide.geometry`: which level to read and how it maps to level 0 (pure);
- :mod:`~wsiseg.slide.resample`: exact area resampling (pure);
- :mod:`~wsiseg.slide.region`: regions of the analysis image, read once;
- :mod:`~wsiseg.slide.tissue`: the tissue mask and the tissue filter.
"""

from __future__ import annotations

from wsiseg.slide.reader import Slide, SlideInfo, open_slide

__all__ = ["Slide", "SlideInfo", "open_slide"]
