"""A PNG a person can look at: the slide's thumbnail with the class colours over it and a legend.

Each thumbnail pixel takes the class of the map pixel under its centre (level-0 coordinates,
bounds offset applied), so the overlay lands where the map says; background stays unpainted.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from wsiseg.atomic import atomic_write
from wsiseg.errors import ResultError, SlideError
from wsiseg.result.store import open_result, reads_result
from wsiseg.slide.geometry import overview_geometry
from wsiseg.slide.reader import open_slide
from wsiseg.slide.region import read_grid

logger = logging.getLogger(__name__)

DEFAULT_SIZE = 2048
OPACITY = 0.45


def _map_indices(thumb_size: int, step: float, offset: float, scale: float,
                 map_size: int) -> tuple[np.ndarray, np.ndarray]:
    centres = (np.arange(thumb_size) + 0.5) * step  # level 0
    index = np.floor((centres - offset) / scale).astype(np.int64)
    inside = (index >= 0) & (index < map_size)
    return np.clip(index, 0, map_size - 1), inside


@reads_result
def overlay_image(result: str | os.PathLike, size: int = DEFAULT_SIZE,
                  opacity: float = OPACITY) -> Any:
    """The overlay as a PIL image (thumbnail, colours blended, legend below)."""
    from PIL import Image, ImageDraw

    labels, info = open_result(result)
    slide_path = info.slide.path
    try:
        # Damaged tiles show as glass: the picture of the rest is still worth having.
        slide = open_slide(slide_path, skip_damaged=True)
    except SlideError as err:
        raise ResultError(f"the png export needs the slide {slide_path} that {result} was made "
                          f"from, and it cannot be opened ({err}); put it back there") from err
    with slide:
        # Read in bounded blocks: OpenSlide's get_thumbnail decodes all of level 0 at once on
        # a slide without a pyramid.
        geometry = overview_geometry(slide.level_downsamples, slide.dimensions, size)
        thumb = read_grid(slide, geometry)
        if slide.damaged_regions():
            logger.warning("%s: %d damaged region(s) of the slide show as glass in the png",
                           slide_path, len(slide.damaged_regions()))
    th, tw = thumb.shape[:2]
    (sx, sy), (ox, oy) = info.scale_to_level0, info.offset_level0
    rows, rows_in = _map_indices(th, geometry.scale[1], oy, sy, labels.shape[0])
    cols, cols_in = _map_indices(tw, geometry.scale[0], ox, sx, labels.shape[1])
    classes = info.classes
    colours = np.array([c.color for c in classes], dtype=np.float32)
    small = np.asarray(labels.get_orthogonal_selection((rows, cols))
                       if hasattr(labels, "get_orthogonal_selection") else labels[rows][:, cols])
    paint = (small > 0) & rows_in[:, None] & cols_in[None, :]
    out = thumb.astype(np.float32)
    out[paint] = (1 - opacity) * out[paint] + opacity * colours[small[paint]]
    image = Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))

    line = 18
    legend = Image.new("RGB", (tw, line * (len(classes) - 1) + 8), "white")
    draw = ImageDraw.Draw(legend)
    for k, c in enumerate(classes[1:]):
        y = 4 + k * line
        draw.rectangle([6, y, 6 + 14, y + 12], fill=tuple(c.color), outline="black")
        draw.text((26, y), c.name, fill="black")
    canvas = Image.new("RGB", (tw, th + legend.height), "white")
    canvas.paste(image, (0, 0))
    canvas.paste(legend, (0, th))
    return canvas


def write_thumbnail(result: str | os.PathLike, out_dir: Path, stem: str,
                    size: int = DEFAULT_SIZE) -> list[Path]:
    """Write ``STEM.overlay.png`` (longest side of the slide part: ``size`` px)."""
    path = out_dir / f"{stem}.overlay.png"
    image = overlay_image(result, size)
    with atomic_write(path, "wb") as f:
        image.save(f, format="PNG")
    return [path]
