"""DICOM whole-slide images: :func:`write_dicom_wsi` writes a VL Whole Slide Microscopy Image
series, one file (instance) per pyramid level, that OpenSlide opens with vendor ``dicom``.

What OpenSlide's DICOM backend needs of each instance, and what is written here:

- Media Storage SOP Class UID *VL Whole Slide Microscopy Image Storage*; one Series Instance UID
  for the whole slide (OpenSlide opens one file and gathers the other files of its folder with
  the same series UID);
- ImageType ``ORIGINAL\\PRIMARY\\VOLUME\\NONE`` for level 0, ``DERIVED\\PRIMARY\\VOLUME\\RESAMPLED``
  for the others;
- frames laid out TILED_FULL (row-major tiles, the last row and column padded), with
  TotalPixelMatrixColumns/Rows the level's size and Columns/Rows the tile's;
- 8-bit RGB, 3 samples, PlanarConfiguration 0, TotalPixelMatrixFocalPlanes 1;
- transfer syntax Explicit VR Little Endian with uncompressed frames (``"none"``, lossless,
  read back bit-exact) or JPEG baseline (``"jpeg"``, lossy), whose frames and
  PhotometricInterpretation follow ``jpeg_colour`` (:data:`DICOM_JPEG_COLOURS`): YCbCr frames
  (JFIF, 4:2:2) labelled YBR_FULL_422 (``"ycbcr"``, as the standard asks), the same frames
  labelled RGB (``"ycbcr-labelled-rgb"``, what some converters write: OpenSlide then shows
  their Y, Cb and Cr as R, G and B, see :func:`ycbcr_read_as_rgb`), or RGB frames (Adobe
  marker, transform 0, no subsampling) labelled RGB (``"rgb"``);
- PixelSpacing (mm, row then column) in SharedFunctionalGroupsSequence /
  PixelMeasuresSequence, which OpenSlide reports as ``openslide.mpp-y``/``mpp-x``; the imaged
  volume's width and height (mm) are written as well.

``image_type=False`` leaves ImageType out, which the standard requires and OpenSlide needs.

Needs ``pydicom`` (in the ``test`` extras); JPEG frames need Pillow.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from wsiseg.slide.svs_writer import area_downsample, check_downsamples, check_rgb

#: Frame encodings :func:`write_dicom_wsi` writes; only ``"jpeg"`` is lossy.
DICOM_COMPRESSIONS = ("none", "jpeg")
#: The colours of JPEG frames and what PhotometricInterpretation says of them (see above).
DICOM_JPEG_COLOURS = ("ycbcr", "ycbcr-labelled-rgb", "rgb")

_WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"


def write_dicom_wsi(
    folder: str | os.PathLike[str],
    rgb_level0: npt.NDArray[np.uint8],
    mpp: float | None,
    downsamples: Sequence[int] = (1, 4),
    tile: int = 256,
    compression: str = "none",
    quality: int = 90,
    series_uid: str | None = None,
    name: str = "level",
    jpeg_colour: str = "ycbcr",
    image_type: bool = True,
) -> list[Path]:
    """Write ``rgb_level0`` and its area-averaged levels as a DICOM WSI series in ``folder``.

    One file per level, ``NAME-K.dcm`` for level K, all in one series (``series_uid``, or a
    new UID). ``mpp`` is level 0's um/px (None: no PixelSpacing, so no resolution).
    ``jpeg_colour`` (:data:`DICOM_JPEG_COLOURS`) sets the colours of JPEG frames and their
    label; ``image_type=False`` writes no ImageType. Returns the files, level 0 first.
    """
    import pydicom  # noqa: F401  (a clear ImportError before any file is written)
    from pydicom.uid import generate_uid

    rgb = check_rgb(rgb_level0)
    ds = check_downsamples(downsamples)
    if compression not in DICOM_COMPRESSIONS:
        raise ValueError(f"compression {compression!r}: use one of {', '.join(DICOM_COMPRESSIONS)}")
    if jpeg_colour not in DICOM_JPEG_COLOURS:
        raise ValueError(f"jpeg_colour {jpeg_colour!r}: use one of "
                         f"{', '.join(DICOM_JPEG_COLOURS)}")
    if tile < 16 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16, got {tile}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    height, width = rgb.shape[:2]
    study_uid, series_uid = generate_uid(), series_uid or generate_uid()
    frame_uid = generate_uid()
    paths = []
    for k, d in enumerate(ds):
        level = rgb if d == 1 else area_downsample(rgb, d)
        path = folder / f"{name}-{k}.dcm"
        _write_instance(path, level, None if mpp is None else mpp * width / level.shape[1],
                        (width * mpp / 1000, height * mpp / 1000) if mpp else None,
                        k, tile, compression, quality, study_uid, series_uid, frame_uid,
                        jpeg_colour, image_type)
        paths.append(path)
    return paths


def ycbcr_read_as_rgb(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """``rgb`` as a reader shows it that takes YCbCr samples for R, G and B (a DICOM whose
    frames are YCbCr but labelled RGB): the full-range BT.601 conversion of JPEG, its Y, Cb and
    Cr returned as the three channels. White glass turns salmon (255, 128, 128)."""
    x = check_rgb(rgb).astype(np.float64)
    y = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    cb = 128 - 0.168736 * x[..., 0] - 0.331264 * x[..., 1] + 0.5 * x[..., 2]
    cr = 128 + 0.5 * x[..., 0] - 0.418688 * x[..., 1] - 0.081312 * x[..., 2]
    return np.clip(np.rint(np.stack([y, cb, cr], axis=-1)), 0, 255).astype(np.uint8)


def _frames(level: npt.NDArray[np.uint8], tile: int) -> list[npt.NDArray[np.uint8]]:
    """The level's tiles in row-major order, those at the edges padded with white."""
    h, w = level.shape[:2]
    across, down = math.ceil(w / tile), math.ceil(h / tile)
    padded = np.full((down * tile, across * tile, 3), 255, dtype=np.uint8)
    padded[:h, :w] = level
    return [padded[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile]
            for r in range(down) for c in range(across)]


def _write_instance(path: Path, level: npt.NDArray[np.uint8], pixel_um: float | None,
                    volume_mm: tuple[float, float] | None, index: int, tile: int,
                    compression: str, quality: int, study_uid: str, series_uid: str,
                    frame_uid: str, jpeg_colour: str, image_type: bool) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import UID, ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

    h, w = level.shape[:2]
    frames = _frames(level, tile)
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(_WSI_SOP_CLASS)
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = JPEGBaseline8Bit if compression == "jpeg" else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = _WSI_SOP_CLASS
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.Modality = "SM"
    ds.PatientName = "Synthetic^Slide"
    ds.PatientID = "WSISEG-SYNTHETIC"
    ds.SeriesNumber = 1
    ds.InstanceNumber = index + 1
    if image_type:
        ds.ImageType = (["ORIGINAL", "PRIMARY", "VOLUME", "NONE"] if index == 0
                        else ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"])
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.TotalPixelMatrixColumns = w
    ds.TotalPixelMatrixRows = h
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.NumberOfFrames = len(frames)
    ds.Columns = tile
    ds.Rows = tile
    ds.SamplesPerPixel = 3
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if volume_mm is not None:
        ds.ImagedVolumeWidth = volume_mm[0]
        ds.ImagedVolumeHeight = volume_mm[1]
    if pixel_um is not None:
        measures = Dataset()
        spacing = pixel_um / 1000
        measures.PixelSpacing = [spacing, spacing]
        measures.SliceThickness = 0.001
        shared = Dataset()
        shared.PixelMeasuresSequence = DicomSequence([measures])
        ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    if compression == "jpeg":
        from PIL import Image

        ds.PhotometricInterpretation = "YBR_FULL_422" if jpeg_colour == "ycbcr" else "RGB"
        ds.LossyImageCompression = "01"
        # keep_rgb: libjpeg writes the RGB samples as they are, with an Adobe marker saying so.
        options = ({"keep_rgb": True, "subsampling": 0} if jpeg_colour == "rgb"
                   else {"subsampling": 1})
        encoded = []
        for frame in frames:
            buf = io.BytesIO()
            Image.fromarray(frame).save(buf, format="JPEG", quality=quality, **options)
            encoded.append(buf.getvalue())
        ds.PixelData = encapsulate(encoded)
        ds["PixelData"].VR = "OB"
    else:
        ds.PhotometricInterpretation = "RGB"
        ds.PixelData = np.stack(frames).tobytes()
        ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
