"""Synthetic whole-slide images for tests and benchmarks.

Like :mod:`numpy.testing`, this package is public so that the test suite, the benchmarks and
users' own tests can make slides with known content and known metadata:

- :func:`synthetic_tissue` paints an H&E-looking image (pink stroma, purple nuclei, white
  glass) and returns the ground-truth tissue mask with it;
- :func:`write_svs` writes an in-memory image as an Aperio SVS that OpenSlide opens with
  vendor ``aperio``; :func:`write_generic_tiff` writes a tiled TIFF that it opens as
  ``generic-tiff``; :func:`write_scn` writes a Leica SCN that it opens as ``leica``, with the
  image placed in a larger scan, so that OpenSlide reports ``openslide.bounds-*``;
- :func:`write_dicom_wsi` writes a DICOM whole-slide image series (one ``.dcm`` file per
  level, in a folder) that OpenSlide opens with vendor ``dicom``; it needs ``pydicom``;
  :func:`ycbcr_read_as_rgb` gives an image the colours of YCbCr frames taken for RGB;
- :func:`write_ome_tiff` writes an OME-TIFF as Bio-Formats does (levels as SubIFDs, the
  resolution in the OME-XML, either byte order); :func:`write_ome_zarr` an OME-Zarr as
  bioformats2raw does (NGFF 0.4, zarr v2) or an NGFF 0.5 image on zarr v3;
- :func:`write_large_svs` writes a gigapixel SVS tile by tile, in memory that does not grow
  with the slide, for benchmarks;
- :func:`write_annotated_folder` writes small H&E-like PNGs with gland masks and grades, for
  training;
- :func:`write_result` writes a finished result store holding a given map, for testing what
  reads results;
- :func:`wsiseg.testing.cli.error_line` checks that a failed command said one line.

Every pyramid level written here is the area average of level 0 (the mean over ``d x d``
blocks, rounded to the nearest integer, blocks cut by the image edge averaging the pixels they
hold; see :func:`area_downsample`), of size ``ceil(W / d) x ceil(H / d)``. OpenSlide derives a
level's downsample from the level sizes, so it is exactly ``d`` when ``W`` and ``H`` are
multiples of ``d``, and a little less otherwise.

Compressions OpenSlide 4.0 reads in an Aperio SVS (checked by ``tests/testing/test_aperio.py``):
``"jpeg"`` (what scanners write; 4:2:0 YCbCr, lossy) and the lossless ``"none"``,
``"deflate"``, ``"lzw"`` and ``"zstd"``, which read back bit-exact through
``OpenSlide.read_region`` at every level. WebP, PNG and JPEG XL tiles are refused by OpenSlide
("Unsupported TIFF compression"), so they are not offered.

The modules:

- :mod:`~wsiseg.testing.tissue`: the painting and :func:`area_downsample` (no I/O);
- :mod:`~wsiseg.testing.common`: :data:`COMPRESSIONS` and what the writers share;
- :mod:`~wsiseg.testing.aperio`, :mod:`~wsiseg.testing.generic`, :mod:`~wsiseg.testing.leica`,
  :mod:`~wsiseg.testing.dicom`, :mod:`~wsiseg.testing.ome`: one slide format each;
- :mod:`~wsiseg.testing.annotated`: image folders with masks, for training;
- :mod:`~wsiseg.testing.result`: result stores with a known map.
"""

from __future__ import annotations

from wsiseg.slide.svs_writer import COMPRESSIONS, area_downsample
from wsiseg.testing.annotated import write_annotated_folder
from wsiseg.testing.aperio import write_large_svs, write_svs
from wsiseg.testing.dicom import DICOM_COMPRESSIONS, write_dicom_wsi, ycbcr_read_as_rgb
from wsiseg.testing.generic import write_generic_tiff
from wsiseg.testing.leica import write_scn
from wsiseg.testing.ome import OME_TIFF_COMPRESSIONS, write_ome_tiff, write_ome_zarr
from wsiseg.testing.result import write_result
from wsiseg.testing.tissue import synthetic_tissue

__all__ = [
    "COMPRESSIONS",
    "DICOM_COMPRESSIONS",
    "OME_TIFF_COMPRESSIONS",
    "area_downsample",
    "synthetic_tissue",
    "write_annotated_folder",
    "write_dicom_wsi",
    "write_generic_tiff",
    "write_large_svs",
    "write_ome_tiff",
    "write_ome_zarr",
    "write_result",
    "write_scn",
    "write_svs",
    "ycbcr_read_as_rgb",
]
