"""Multi-file OME-TIFF: binary-only files whose metadata is in a ``.companion.ome`` file."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tifffile

from wsiseg.slide.reader import open_slide
from wsiseg.testing import synthetic_tissue

NS = "http://www.openmicroscopy.org/Schemas/OME/2016-06"


def _binary_only(path, rgb, companion="set.companion.ome"):
    xml = (f'<?xml version="1.0" encoding="UTF-8"?><OME xmlns="{NS}" UUID="urn:uuid:{path.stem}">'
           f'<BinaryOnly MetadataFile="{companion}" UUID="urn:uuid:set"/></OME>')
    with tifffile.TiffWriter(path) as tif:
        tif.write(rgb, tile=(256, 256), photometric="rgb", description=xml, metadata=None,
                  compression="zlib")
    return path


def _image(name, file, size):
    return (f'<Image ID="Image:{name}" Name="{name}"><Pixels ID="Pixels:{name}" '
            f'DimensionOrder="XYCZT" Type="uint8" SizeX="640" SizeY="512" SizeC="3" SizeZ="1" '
            f'SizeT="1" PhysicalSizeX="{size}" PhysicalSizeXUnit="nm" PhysicalSizeY="{size}" '
            f'PhysicalSizeYUnit="nm"><Channel ID="Channel:{name}:0" SamplesPerPixel="3"/>'
            f'<TiffData IFD="0" PlaneCount="1"><UUID FileName="{file}">urn:uuid:{name}</UUID>'
            f'</TiffData></Pixels></Image>')


@pytest.fixture
def pair(tmp_path):
    rgb, _ = synthetic_tissue(512, 640, seed=3)
    first = _binary_only(tmp_path / "a.ome.tif", rgb)
    _binary_only(tmp_path / "b.ome.tif", rgb[::-1].copy())
    (tmp_path / "set.companion.ome").write_text(
        f'<?xml version="1.0" encoding="UTF-8"?><OME xmlns="{NS}">'
        f'{_image("b", "b.ome.tif", 500)}{_image("a", "a.ome.tif", 250)}</OME>')
    return first, rgb


def test_the_resolution_comes_from_the_companion_file(pair):
    path, rgb = pair
    with open_slide(path) as slide:
        assert slide.vendor == "ome-tiff" and slide.mpp == pytest.approx((0.25, 0.25))
        np.testing.assert_array_equal(slide.read_level(0, 0, 0, 640, 512), rgb)
    with open_slide(path.with_name("b.ome.tif")) as other:
        assert other.mpp == pytest.approx((0.5, 0.5))


def test_a_missing_companion_is_named(pair, caplog):
    path, _ = pair
    path.with_name("set.companion.ome").unlink()
    with caplog.at_level(logging.WARNING), open_slide(path) as slide:
        assert slide.mpp is None
    assert "'set.companion.ome', which is not beside it" in caplog.text
