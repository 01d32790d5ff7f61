"""DICOM slides whose JPEG frames are YCbCr though PhotometricInterpretation says RGB.

DICOM WSI labels YCbCr JPEG frames ``YBR_FULL_422``, but some converters copy YCbCr frames
out of a TIFF and label them ``RGB``. OpenSlide believes the label: it tells libjpeg the frames
are RGB, so libjpeg only upsamples the chroma and hands over Y, Cb and Cr as R, G and B (white
glass turns salmon, tissue green). The frames' own markers tell the truth, the way libjpeg reads
them when nothing overrides it (:func:`jpeg_colour_space`); :func:`ycbcr_labelled_rgb` decides
it for a slide from one instance's header and first frame, and the conversions below turn what
OpenSlide decoded into true colour, before transparent pixels (missing frames) become glass:

- :func:`ycbcr_to_rgb_inplace` converts opaque pixels, libjpeg's own fixed-point arithmetic;
- :func:`ycbcr_premultiplied_bgra_on_white` and :func:`ycbcr_rgba_on_white` convert OpenSlide's
  premultiplied ARGB words or straight RGBA and composite them on white, as the plain readers
  of :mod:`wsiseg.slide.reader` do for true colour.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from wsiseg.slide.dicom_series import WSI_SOP_CLASS, first_fragment, read_header

if TYPE_CHECKING:
    import openslide
    from PIL import Image, ImageCms

logger = logging.getLogger(__name__)

#: Transfer syntax JPEG Baseline (Process 1): 8-bit lossy JPEG frames.
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"

JpegColourSpace = Literal["ycbcr", "rgb"]

_GLASS = 255
# libjpeg's colour conversion (jdcolor.c): 16-bit fixed point, tables over the 256 samples.
_SCALEBITS = 16
_ONE_HALF = 1 << (_SCALEBITS - 1)


def _fix(x: float) -> int:
    return int(x * (1 << _SCALEBITS) + 0.5)


_CENTRED = np.arange(256, dtype=np.int64) - 128
_CR_R = ((_fix(1.40200) * _CENTRED + _ONE_HALF) >> _SCALEBITS).astype(np.int16)
_CB_B = ((_fix(1.77200) * _CENTRED + _ONE_HALF) >> _SCALEBITS).astype(np.int16)
# G's two terms are summed before the shift: one table over (Cb, Cr), 128 KiB.
_CB_CR_G = (((-_fix(0.34414) * _CENTRED[:, None] + _ONE_HALF) - _fix(0.71414) * _CENTRED[None, :])
            >> _SCALEBITS).astype(np.int16).ravel()
#: Pixels converted at a time: the int16 temporaries of a chunk stay in the CPU's caches.
_CHUNK = 1 << 16

# JPEG markers (ITU T.81): start of image, of scan, APP0 (JFIF), APP14 (Adobe), and the
# start-of-frame markers (all but DHT C4, JPG C8 and DAC CC), which carry the component ids.
_SOI, _SOS, _EOI, _APP0, _APP14 = 0xD8, 0xDA, 0xD9, 0xE0, 0xEE
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length


def jpeg_colour_space(frame: bytes) -> JpegColourSpace | None:
    """The colour space of a 3-component JPEG as libjpeg decides it when nothing overrides it
    (``default_decompress_parms`` in ``jdapimin.c``): a JFIF APP0 marker means YCbCr; else an
    Adobe APP14 marker means RGB for transform 0 and YCbCr for any other; else component ids
    'R', 'G', 'B' mean RGB and any others (1, 2, 3 above all) YCbCr. None when ``frame`` is not
    a JPEG of three components whose markers can be read up to its first scan."""
    if frame[:2] != b"\xff\xd8":
        return None
    jfif = False
    adobe: int | None = None
    pos = 2
    while pos + 4 <= len(frame):
        if frame[pos] != 0xFF:
            return None
        marker = frame[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (_SOS, _EOI, _SOI):  # the scan begins before any frame header
            return None
        length = struct.unpack_from(">H", frame, pos + 2)[0]
        body = frame[pos + 4:pos + 2 + length]
        if length < 2 or len(body) != length - 2:
            return None
        if marker == _APP0 and len(body) >= 14 and body[:5] == b"JFIF\0":
            jfif = True
        elif marker == _APP14 and len(body) >= 12 and body[:5] == b"Adobe":
            adobe = body[11]
        elif marker in _SOF:
            if len(body) < 6 or body[5] != 3 or len(body) < 6 + 3 * 3:
                return None
            ids = bytes(body[6 + 3 * i] for i in range(3))
            if jfif:
                return "ycbcr"
            if adobe is not None:
                return "rgb" if adobe == 0 else "ycbcr"
            return "rgb" if ids == b"RGB" else "ycbcr"
        pos += 2 + length
    return None


def ycbcr_labelled_rgb(file: Path) -> bool:
    """Whether the DICOM whole-slide instance ``file`` has JPEG baseline frames that are YCbCr
    by their own markers (:func:`jpeg_colour_space`) while its PhotometricInterpretation says
    RGB: OpenSlide then shows their Y, Cb and Cr as R, G and B.

    Reads the header and the first frame only. The levels of a series come from one converter,
    so the answer for the instance OpenSlide opened holds for the whole slide. Never raises:
    whatever cannot be read or told is False (logged at debug level).
    """
    try:
        header = read_header(file)
        if header is None or header.sop_class != WSI_SOP_CLASS:
            logger.debug("%s: not a DICOM whole-slide image header; colours taken as labelled",
                         file)
            return False
        if header.transfer_syntax != JPEG_BASELINE or header.photometric != "RGB":
            return False
        frame = first_fragment(file)
        space = None if frame is None else jpeg_colour_space(frame)
        if space is None:
            logger.debug("%s: the markers of its first JPEG frame cannot be read; colours taken "
                         "as labelled (RGB)", file)
            return False
        return space == "ycbcr"
    except Exception as err:  # noqa: BLE001 - a guess about colours must never stop a read
        logger.debug("%s: cannot tell the colour space of its JPEG frames (%s); colours taken "
                     "as labelled", file, err)
        return False


def ycbcr_to_rgb_inplace(pixels: npt.NDArray[np.uint8],
                         out: npt.NDArray[np.uint8] | None = None) -> npt.NDArray[np.uint8]:
    """Convert full-range YCbCr (JPEG's BT.601: R = Y + 1.402 (Cr - 128), G = Y - 0.344136
    (Cb - 128) - 0.714136 (Cr - 128), B = Y + 1.772 (Cb - 128), rounded, clipped to 0-255) to
    RGB, in ``pixels`` itself or into ``out`` (both uint8 (h, w, 3), views allowed); returns
    the RGB array. libjpeg's fixed-point tables, so the result is the one libjpeg would have
    decoded from the same upsampled samples, bit for bit."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected uint8 (h, w, 3) pixels, got {pixels.dtype} {pixels.shape}")
    if out is None:
        out = pixels
    elif out.shape != pixels.shape or out.dtype != np.uint8:
        raise ValueError(f"out must be uint8 {pixels.shape}, got {out.dtype} {out.shape}")
    rows = max(1, _CHUNK // max(pixels.shape[1], 1))
    for r0 in range(0, pixels.shape[0], rows):
        src, dst = pixels[r0:r0 + rows], out[r0:r0 + rows]
        y = src[..., 0].astype(np.int16)
        cb, cr = src[..., 1], src[..., 2]
        g = _CB_CR_G[(cb.astype(np.intp) << 8) | cr]
        b = _CB_B[cb]
        r = _CR_R[cr]
        # All three read before ``dst`` (maybe ``src`` itself) is written.
        np.clip(r + y, 0, 255, out=r)
        np.clip(g + y, 0, 255, out=g)
        np.clip(b + y, 0, 255, out=b)
        dst[..., 0], dst[..., 1], dst[..., 2] = r, g, b
    return out


def ycbcr_premultiplied_bgra_on_white(bgra: npt.NDArray[np.uint8],
                                      out: npt.NDArray[np.uint8]) -> None:
    """OpenSlide's premultiplied ARGB words (as little-endian BGRA bytes, (h, w, 4)) holding
    Y, Cb, Cr where R, G, B should be: true RGB on white into ``out`` (uint8 (h, w, 3)).

    Opaque pixels are converted exactly; transparent ones (a missing frame) become white glass,
    as they are no YCbCr; partly transparent ones (only at the edges of missing frames, when
    OpenSlide interpolates) are unpremultiplied, converted and composited on white.
    """
    alpha = bgra[..., 3]
    out[...] = bgra[..., 2::-1]
    if alpha.min() == 255:
        ycbcr_to_rgb_inplace(out)
        return
    a = alpha.astype(np.float32)[..., None]
    partial = (alpha > 0) & (alpha < 255)
    if partial.any():
        straight = out[partial].astype(np.float32) * 255.0 / a[partial]
        out[partial] = np.clip(np.rint(straight), 0, 255).astype(np.uint8)
    _convert_and_composite(out, a)


def ycbcr_rgba_on_white(rgba: npt.NDArray[np.uint8], out: npt.NDArray[np.uint8]) -> None:
    """Straight-alpha RGBA (as ``OpenSlide.read_region`` gives, (h, w, 4)) holding Y, Cb, Cr
    where R, G, B should be: true RGB on white into ``out`` (uint8 (h, w, 3)); transparent
    pixels become white glass."""
    alpha = rgba[..., 3]
    out[...] = rgba[..., :3]
    if alpha.min() == 255:
        ycbcr_to_rgb_inplace(out)
        return
    _convert_and_composite(out, alpha.astype(np.float32)[..., None])


def _convert_and_composite(out: npt.NDArray[np.uint8], a: npt.NDArray[np.float32]) -> None:
    """Convert ``out`` (straight YCbCr) and composite it on white by alpha ``a`` (0-255)."""
    ycbcr_to_rgb_inplace(out)
    out[...] = np.rint(out * (a / 255.0) + _GLASS * (1.0 - a / 255.0)).astype(np.uint8)


def true_colour(osr: openslide.AbstractSlide) -> openslide.AbstractSlide:
    """``osr`` (a DICOM slide whose YCbCr frames are labelled RGB) as a slide whose
    ``read_region`` gives true colours, for readers that take an ``openslide.AbstractSlide``
    (the viewer's Deep Zoom tiles); :class:`~wsiseg.slide.reader.Slide` converts in its own
    read path instead."""
    import openslide

    class TrueColour(openslide.AbstractSlide):
        def __init__(self) -> None:
            self._osr = osr

        @classmethod
        def detect_format(cls, filename: str | bytes | os.PathLike[Any]) -> str | None:
            return openslide.OpenSlide.detect_format(filename)

        @property
        def level_count(self) -> int:
            return osr.level_count

        @property
        def level_dimensions(self) -> tuple[tuple[int, int], ...]:
            return osr.level_dimensions

        @property
        def level_downsamples(self) -> tuple[float, ...]:
            return osr.level_downsamples

        @property
        def properties(self) -> Mapping[str, str]:
            return osr.properties

        @property
        def associated_images(self) -> Mapping[str, Image.Image]:
            return osr.associated_images

        @property
        def color_profile(self) -> ImageCms.ImageCmsProfile | None:
            return osr.color_profile

        def get_best_level_for_downsample(self, downsample: float) -> int:
            return osr.get_best_level_for_downsample(downsample)

        def set_cache(self, cache: openslide.OpenSlideCache) -> None:
            osr.set_cache(cache)

        def read_region(self, location: tuple[int, int], level: int,
                        size: tuple[int, int]) -> Image.Image:
            from PIL import Image as PILImage

            rgba = np.array(osr.read_region(location, level, size))
            # Transparent pixels keep their alpha: whoever composites them sees glass.
            ycbcr_to_rgb_inplace(np.ascontiguousarray(rgba[..., :3]), rgba[..., :3])
            return PILImage.fromarray(rgba, "RGBA")

        def close(self) -> None:
            osr.close()

    return TrueColour()
