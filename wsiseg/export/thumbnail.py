"""A PNG a person can look at: the slide's thumbnail with the class colours over it and a legend.

Each thumbnail pixel takes the class of the map pixel under its centre (level-0 coordinates,
bounds offset applied), so the overlay lands where the map says; background stays unpainted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from wsiseg.atomic import atomic_write
from wsiseg.errors import ResultError
from wsiseg.result.store import open_result

DEFAULT_SIZE = 2048
OPACITY = 0.45


def _map_indices(thumb_size: int, level0_size: int, offset: float, scale: float,
                 map_size: int) -> tuple[np.ndarray, np.ndarray]:
    centres = (np.arange(thumb_size) + 0.5) * level0_size / thumb_size
    index = np.floor((centres - offset) / scale).astype(np.int64)
    inside = (index >= 0) & (index < map_size)
    return np.clip(index, 0, map_size - 1), inside


def overlay_image(result: str | os.PathLike, size: int = DEFAULT_SIZE,
                  opacity: float = OPACITY) -> Any:
    """The overlay as a PIL image (thumbnail, colours blended, legend below)."""
    import openslide
    from PIL import Image, ImageDraw

    labels, info = open_result(result)
    slide_path = info.slide.path
    try:
        slide = openslide.OpenSlide(str(slide_path))
    except (openslide.OpenSlideError, FileNotFoundError, TypeError) as err:
        raise ResultError(f"the png export needs the slide {slide_path} that {result} was made "
                          f"from, and it cannot be opened ({err}); put it back there") from err
    with slide:
        w0, h0 = slide.dimensions
        thumb = np.asarray(slide.get_thumbnail((size, size)).convert("RGB"))
    th, tw = thumb.shape[:2]
    (sx, sy), (ox, oy) = info.scale_to_level0, info.offset_level0
    rows, rows_in = _map_indices(th, h0, oy, sy, labels.shape[0])
    cols, cols_in = _map_indices(tw, w0, ox, sx, labels.shape[1])
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
