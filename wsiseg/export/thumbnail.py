"""A PNG a person can look at: the slide's thumbnail with the class colours over it, and below
it a title, a legend, a scale bar and the model's intended use.

The thumbnail part is ``size`` pixels on its longest side (the slide's own size when that is
smaller) and sits at the top left, so the image's first rows are the slide itself. Each
thumbnail pixel takes the class of the map pixel under its centre (level-0 coordinates, bounds
offset applied), so the overlay lands where the map says; background stays unpainted. Text and
swatches scale with the thumbnail (a scalable font when Pillow has one), so the legend reads at
a glance whether the PNG is 512 or 4096 pixels wide. The scale bar is a round length
(1, 2 or 5 times a power of ten um) of about a fifth of the width. The title, the scale bar's
length and the intended use are also in the PNG's text chunks.

A result with artefact labels (``labels/qc``, on the tissue mask's coarser grid) has each
artefact region outlined, 1 pixel wide (2 from a 1536-pixel thumbnail up), in the artefact's
colour from the label image's metadata, over the classes' colours, which stay visible inside;
each artefact drawn is in the legend with a hollow swatch. A thumbnail pixel belongs to an
artefact when the qc pixel under its centre, or any whose centre lies in it, holds that artefact,
so an artefact smaller than a thumbnail pixel still shows. A result without artefact labels, or
with none found, gives the same picture as before there were any.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from wsiseg.atomic import atomic_write
from wsiseg.cards import ClassInfo
from wsiseg.errors import ResultError, SlideError
from wsiseg.export.artefacts import MAX_ARTEFACTS, Artefact, artefact_labels
from wsiseg.export.report import LabelMap, intended_use
from wsiseg.result.info import ResultInfo
from wsiseg.result.reading import reads_result
from wsiseg.result.store import open_result, open_result_group, qc_array
from wsiseg.slide.geometry import overview_geometry
from wsiseg.slide.reader import open_slide
from wsiseg.slide.region import read_grid

if TYPE_CHECKING:
    from PIL import Image, ImageDraw, ImageFont

logger = logging.getLogger(__name__)

DEFAULT_SIZE = 2048
OPACITY = 0.45
#: Thumbnail rows whose artefacts are worked out at a time (bounds the qc pixels held).
ARTEFACT_ROWS = 256


def _map_indices(thumb_size: int, step: float, offset: float, scale: float,
                 map_size: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    centres = (np.arange(thumb_size) + 0.5) * step  # level 0
    index = np.floor((centres - offset) / scale).astype(np.int64)
    inside = (index >= 0) & (index < map_size)
    return np.clip(index, 0, map_size - 1), inside


def _qc_extent(thumb_size: int, step: float, offset: float, scale: float, qc_size: int
               ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """First and last + 1 qc pixel of each thumbnail pixel: those whose centres lie in it and
    the one under its centre (empty where none is on the qc grid)."""
    edges = np.arange(thumb_size + 1) * step  # level 0
    first = np.ceil((edges - offset) / scale - 0.5).astype(np.int64)
    centre = np.floor(((np.arange(thumb_size) + 0.5) * step - offset) / scale).astype(np.int64)
    lo = np.clip(np.minimum(first[:-1], centre), 0, qc_size)
    hi = np.clip(np.maximum(first[1:], centre + 1), 0, qc_size)
    return lo, np.maximum(hi, lo)


def _spread(bits: npt.NDArray[np.uint32], lo: npt.NDArray[np.int64],
            hi: npt.NDArray[np.int64], axis: int) -> npt.NDArray[np.uint32]:
    """The bitwise or of ``bits`` over ``lo[i]:hi[i]`` along ``axis``, for each ``i``."""
    out = np.zeros((len(lo), bits.shape[1]) if axis == 0 else (bits.shape[0], len(lo)),
                   dtype=np.uint32)
    # Empty ranges (lo == hi, possibly past the end) read any pixel; they are cleared below.
    last = np.clip(hi - 1, 0, bits.shape[axis] - 1)
    for d in range(int((hi - lo).max(initial=0))):
        index = np.minimum(lo + d, last)
        out |= bits[index] if axis == 0 else bits[:, index]
    empty = hi <= lo
    if axis == 0:
        out[empty] = 0
    else:
        out[:, empty] = 0
    return out


def artefact_pixels(qc: LabelMap, info: ResultInfo, artefacts: tuple[Artefact, ...],
                    shape: tuple[int, int], inside: npt.NDArray[np.bool_]
                    ) -> npt.NDArray[np.uint32]:
    """Per pixel of a thumbnail of ``shape`` (height, width) of the slide's level 0, bit ``k``
    set where artefact ``artefacts[k]`` lies (see the module); only where ``inside``.

    ``qc`` (the result's artefact labels, a zarr array) is read a band of thumbnail rows at a
    time."""
    th, tw = shape
    w0, h0 = info.slide.dimensions
    (sx, sy), (ox, oy) = info.tissue.scale_to_level0, info.tissue.offset_level0
    qh, qw = qc.shape[:2]
    row_lo, row_hi = _qc_extent(th, h0 / th, oy, sy, qh)
    col_lo, col_hi = _qc_extent(tw, w0 / tw, ox, sx, qw)
    bit = np.zeros(256, dtype=np.uint32)
    for k, artefact in enumerate(artefacts[:MAX_ARTEFACTS]):
        bit[artefact.value] = np.uint32(1) << np.uint32(k)
    out = np.zeros((th, tw), dtype=np.uint32)
    for t0 in range(0, th, ARTEFACT_ROWS):
        t1 = min(th, t0 + ARTEFACT_ROWS)
        lo, hi = row_lo[t0:t1], row_hi[t0:t1]
        q0, q1 = int(lo.min()), int(hi.max())
        if q1 <= q0:
            continue
        band = bit[np.asarray(qc[q0:q1])]
        rows = _spread(band, lo - q0, hi - q0, axis=0)
        out[t0:t1] = _spread(rows, col_lo, col_hi, axis=1)
    out[~inside] = 0
    return out


def outline_width(thumb_size: tuple[int, int]) -> int:
    """Pixels across an artefact's outline: 1, or 2 on thumbnails from 1536 pixels up."""
    return 2 if max(thumb_size) >= 1536 else 1


def draw_outlines(image: npt.NDArray[np.uint8], bits: npt.NDArray[np.uint32],
                  artefacts: tuple[Artefact, ...], width: int) -> list[Artefact]:
    """Draw the inner outline, ``width`` pixels, of each artefact's pixels (``bits``) onto
    ``image`` in its colour; the artefacts drawn, in order."""
    from scipy import ndimage

    drawn = []
    for k, artefact in enumerate(artefacts[:MAX_ARTEFACTS]):
        mask = (bits >> np.uint32(k)) & np.uint32(1) == 1
        if not mask.any():
            continue
        inner = ndimage.binary_erosion(mask, iterations=width, border_value=0)
        image[mask & ~inner] = artefact.color
        drawn.append(artefact)
    return drawn


def thumbnail_shape(dimensions: tuple[int, int], size: int) -> tuple[int, int]:
    """(width, height) of the thumbnail part: ``size`` on the longest side, never enlarged."""
    w0, h0 = dimensions
    f = max(1.0, max(w0, h0) / size)
    return max(1, round(w0 / f)), max(1, round(h0 / f))


def scale_bar_um(um_per_px: float, width_px: int) -> float:
    """The longest round length (1, 2 or 5 x 10^k um) no longer than a fifth of ``width_px``."""
    most = max(um_per_px, width_px * um_per_px / 5)
    power = 10.0 ** math.floor(math.log10(most))
    return max(m * power for m in (1, 2, 5) if m * power <= most * (1 + 1e-9))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: scalable
    except (TypeError, AttributeError, OSError, ImportError):
        pass
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        logger.info("no scalable font: the png's text is in Pillow's small bitmap font")
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str,
          font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> list[str]:
    """``text`` in lines no wider than ``width`` (a single long word gets a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _line_height(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> int:
    """The height of a line of ``font``, spacing included."""
    size: float = getattr(font, "size", 11)  # Pillow's bitmap font has no size: 11 px
    return round(size * 1.3)


def _um(value: float) -> str:
    return f"{value:g} um" if value < 1000 else f"{value / 1000:g} mm"


@reads_result
def overlay_image(result: str | os.PathLike[str], size: int = DEFAULT_SIZE,
                  opacity: float = OPACITY) -> Image.Image:
    """The overlay as a PIL image: thumbnail with the colours blended, the caption below it."""
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
        w0, h0 = slide.dimensions
    tw, th = thumbnail_shape((w0, h0), size)
    if thumb.shape[:2] != (th, tw):  # a pyramid level read as it is: near the size, not on it
        thumb = np.asarray(Image.fromarray(thumb).resize((tw, th), Image.Resampling.BOX))
    step_x, step_y = w0 / tw, h0 / th
    (sx, sy), (ox, oy) = info.scale_to_level0, info.offset_level0
    rows, rows_in = _map_indices(th, step_y, oy, sy, labels.shape[0])
    cols, cols_in = _map_indices(tw, step_x, ox, sx, labels.shape[1])
    classes = info.classes
    # One colour per value a map pixel can hold; a value that is no class is left unpainted.
    colours = np.zeros((256, 3), dtype=np.float32)
    known = np.zeros(256, dtype=bool)
    for c in classes:
        colours[c.index], known[c.index] = c.color, c.index > 0
    small = np.asarray(labels.get_orthogonal_selection((rows, cols))
                       if hasattr(labels, "get_orthogonal_selection")
                       else np.asarray(labels[rows])[:, cols])
    paint = known[small] & rows_in[:, None] & cols_in[None, :]
    out = thumb.astype(np.float32)
    out[paint] = (1 - opacity) * out[paint] + opacity * colours[small[paint]]
    painted = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    drawn: list[Artefact] = []
    group = open_result_group(result)
    qc = qc_array(group, info)
    if qc is not None:
        artefacts = artefact_labels(group)
        bits = artefact_pixels(qc, info, artefacts, (th, tw), rows_in[:, None] & cols_in[None, :])
        drawn = draw_outlines(painted, bits, artefacts, outline_width((tw, th)))
    image = Image.fromarray(painted)

    # The caption: sizes in units of the text height, which follows the thumbnail's size.
    unit = max(12, round(max(tw, th) / 64))
    pad = max(4, unit // 2)
    font, title_font, small_font = _font(unit), _font(round(unit * 1.25)), _font(
        max(10, round(unit * 0.8)))
    um_per_px = step_x * float(info.slide.mpp[0])
    bar_um = scale_bar_um(um_per_px, tw)
    bar_px = max(1, round(bar_um / um_per_px))
    title = f"{Path(str(slide_path)).name} · model {info.model.name}"
    use = f"Intended use: {intended_use(info.model.card)}"
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title_lines = _wrap(measure, title, title_font, tw - 2 * pad)
    use_lines = _wrap(measure, use, small_font, tw - 2 * pad)
    # Legend items flow left to right and wrap at the image's width: the classes, then the
    # artefacts outlined (a hollow swatch, as they are drawn).
    entries: list[ClassInfo | Artefact] = [*classes[1:], *drawn]
    items: list[tuple[int, int, ClassInfo | Artefact]] = []
    x, y = pad, 0
    for entry in entries:
        item_width = unit + pad + round(measure.textlength(entry.name, font=font))
        if x > pad and x + item_width > tw - pad:
            x, y = pad, y + _line_height(font)
        items.append((x, y, entry))
        x += item_width + 2 * unit
    legend_height = y + _line_height(font)
    bar_height = max(2, unit // 4)
    height = (pad + _line_height(title_font) * len(title_lines) + pad + legend_height + pad
              + _line_height(font) + bar_height + pad + _line_height(small_font) * len(use_lines) + pad)
    canvas = Image.new("RGB", (tw, th + height), "white")
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = th + pad
    for text in title_lines:
        draw.text((pad, y), text, fill="black", font=title_font,
                  stroke_width=max(0, unit // 24), stroke_fill="black")
        y += _line_height(title_font)
    y += pad
    for x, dy, entry in items:
        top = y + dy + (_line_height(font) - unit) // 2
        if isinstance(entry, Artefact):
            draw.rectangle([x, top, x + unit - 1, top + unit - 1], fill="white",
                           outline=tuple(entry.color), width=max(2, unit // 5))
        else:
            draw.rectangle([x, top, x + unit - 1, top + unit - 1], fill=tuple(entry.color),
                           outline="black", width=max(1, unit // 16))
        draw.text((x + unit + pad, y + dy), entry.name, fill="black", font=font)
    y += legend_height + pad
    draw.text((pad, y), _um(bar_um), fill="black", font=font)
    y += _line_height(font)
    draw.rectangle([pad, y, pad + bar_px - 1, y + bar_height - 1], fill="black")
    y += bar_height + pad
    for text in use_lines:
        draw.text((pad, y), text, fill=(60, 60, 60), font=small_font)
        y += _line_height(small_font)
    canvas.info.update({"Title": title, "Description": use,
                        "wsiseg scale bar": f"{bar_um:g} um = {bar_px} px",
                        "wsiseg thumbnail": f"{tw} x {th} px, {um_per_px:.6g} um/px"})
    if drawn:
        canvas.info["wsiseg artefacts"] = ", ".join(a.name for a in drawn)
    return canvas


def write_thumbnail(result: str | os.PathLike[str], out_dir: Path, stem: str,
                    size: int = DEFAULT_SIZE) -> list[Path]:
    """Write ``STEM.overlay.png`` (longest side of the thumbnail part: ``size`` px)."""
    from PIL import PngImagePlugin

    path = out_dir / f"{stem}.overlay.png"
    image = overlay_image(result, size)
    text = PngImagePlugin.PngInfo()
    for key, value in image.info.items():
        if isinstance(key, str) and isinstance(value, str):
            text.add_itxt(key, value)
    with atomic_write(path, "wb") as f:
        image.save(f, format="PNG", pnginfo=text)
    return [path]
