"""Slides at URLs: read a byte range at a time, as their local copies read, secrets never shown.

A local HTTP server that answers ``Range`` requests (Python's own does not) serves the
slides and counts the bytes it sends.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from wsiseg.cli.main import main
from wsiseg.errors import SlideError
from wsiseg.slide import remote
from wsiseg.slide.reader import open_slide
from wsiseg.testing import synthetic_tissue, write_generic_tiff, write_svs

SECRET_USER, SECRET_PASS, SIGNATURE = "alice", "hunter2pass", "f00dfeedsignature"


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    root: Path
    served: list[int]

    def log_message(self, *args: object) -> None:
        pass

    def _file(self) -> Path | None:
        path = self.root / self.path.split("?", 1)[0].lstrip("/")
        return path if path.is_file() else None

    def do_HEAD(self) -> None:
        f = self._file()
        if f is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(f.stat().st_size))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self) -> None:
        f = self._file()
        if f is None:
            self.send_error(404)
            return
        size = f.stat().st_size
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        start, end = (int(m[1]), min(int(m[2] or size - 1), size - 1)) if m else (0, size - 1)
        with open(f, "rb") as fh:
            fh.seek(start)
            data = fh.read(end - start + 1)
        self.send_response(206 if m else 200)
        if m:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.served.append(len(data))


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    """A folder of slides: a 4-level SVS (x40, x10 at level 1) and generic TIFFs."""
    folder = tmp_path_factory.mktemp("served")
    rgb, _ = synthetic_tissue(2400, 3200, seed=7)
    write_svs(folder / "a.svs", rgb, 0.25, downsamples=(1, 4, 16, 64), tile=256)
    small = rgb[:600, :800]
    write_generic_tiff(folder / "g.tif", small, mpp=0.5, levels=(1, 2, 4), tile=128)
    with tifffile.TiffWriter(folder / "inch.tif") as tif:
        tif.write(small, tile=(128, 128), photometric="rgb", resolution=(25400 / 0.4,) * 2,
                  resolutionunit="INCH", metadata=None, compression="zlib")
    (folder / "b.ndpi").write_bytes(b"II*\0")
    return folder


@pytest.fixture(scope="module")
def server(slides):
    handler = type("Handler", (_RangeHandler,), {"root": slides, "served": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler.served
    httpd.shutdown()
    httpd.server_close()


def test_redact_drops_credentials_and_signature():
    url = f"https://{SECRET_USER}:{SECRET_PASS}@host:8443/x/a.svs?X-Amz-Signature={SIGNATURE}"
    assert remote.redact(url) == "https://host:8443/x/a.svs"
    assert remote.redact("s3://bucket/a.svs") == "s3://bucket/a.svs"
    location = remote.slide_location(url)
    assert (str(location), location.name, location.stem) == ("https://host:8443/x/a.svs",
                                                            "a.svs", "a")
    assert not location.exists() and SIGNATURE not in repr(location)


@pytest.mark.parametrize("name", ["a.svs", "g.tif", "inch.tif"])
def test_remote_slide_reads_as_its_local_copy(slides, server, name):
    base, _ = server
    with open_slide(f"{base}/{name}") as far, open_slide(slides / name) as near:
        assert far.vendor == near.vendor
        assert far.level_dimensions == near.level_dimensions
        assert far.level_downsamples == near.level_downsamples
        assert far.mpp == near.mpp and far.mpp is not None
        assert far.objective_power == near.objective_power
        assert far.size_bytes == near.size_bytes
        assert set(far.info().associated_images) == set(near.info().associated_images)
        for level in range(1, far.level_count):  # every level but level 0, whole
            w, h = far.level_dimensions[level]
            np.testing.assert_array_equal(far.read_level(level, 0, 0, w, h),
                                          near.read_level(level, 0, 0, w, h))
        np.testing.assert_array_equal(far.read_level(0, 700, 500, 300, 200),
                                      near.read_level(0, 700, 500, 300, 200))


def test_info_of_a_url_shows_no_secret(server):
    base, _ = server
    url = base.replace("http://", f"http://{SECRET_USER}:{SECRET_PASS}@")
    result = CliRunner().invoke(main, ["info", f"{url}/a.svs?X-Amz-Signature={SIGNATURE}"])
    assert result.exit_code == 0, result.output
    assert f"file:            {base}/a.svs" in result.output
    assert "levels:          4" in result.output and "0.25 x 0.25 um/px" in result.output
    for secret in (SECRET_USER, SECRET_PASS, SIGNATURE):
        assert secret not in result.output


def _directory_blocks(path: Path) -> int:
    """Bytes of the block-cache blocks that hold the TIFF header and every page's directory
    and tag values (what parsing the directories must fetch)."""
    blocks = {0}
    with tifffile.TiffFile(path) as tif:
        for page in tif.pages:
            spans = [(page.offset, 8 + 20 * len(page.tags) + 8)]
            spans += [(t.valueoffset, t.count * t.dtype_size if hasattr(t, "dtype_size")
                       else len(t.value) if isinstance(t.value, (bytes, str)) else 8 * t.count)
                      for t in page.tags.values()]
            for start, count in spans:
                blocks.update(range(start // remote.BLOCK_SIZE,
                                    (start + max(count, 1) - 1) // remote.BLOCK_SIZE + 1))
    return len(blocks) * remote.BLOCK_SIZE


def test_predict_of_a_url_maps_as_the_local_file_fetching_only_its_level(
        slides, server, pixel_model, tmp_path, monkeypatch):
    base, served = server
    model = str(pixel_model[0])
    local = tmp_path / "local.wsiseg.zarr"
    runner = CliRunner()
    result = runner.invoke(main, ["predict", str(slides / "a.svs"), "--model", model,
                                  "--out", str(local), "--quiet"])
    assert result.exit_code == 0, result.output
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    served.clear()
    url = (base.replace("http://", f"http://{SECRET_USER}:{SECRET_PASS}@")
           + f"/a.svs?X-Amz-Signature={SIGNATURE}&X-Amz-Credential=AKIAEXAMPLE")
    result = runner.invoke(main, ["predict", url, "--model", model, "--quiet"])
    assert result.exit_code == 0, result.output
    out = work / "a.wsiseg.zarr"  # the current folder: nothing can be written beside a URL
    from wsiseg.result.store import open_result

    far_map, far = open_result(out)
    near_map, near = open_result(local)
    assert far.level == near.level == 1
    np.testing.assert_array_equal(np.asarray(far_map[...]), np.asarray(near_map[...]))
    assert str(far.slide.path) == f"{base}/a.svs"
    text = (out / "zarr.json").read_text()
    assert json.loads(text)["attributes"]["wsiseg"]["slide"]["path"] == f"{base}/a.svs"
    for secret in (SECRET_USER, SECRET_PASS, SIGNATURE, "AKIAEXAMPLE"):
        assert secret not in text and secret not in result.output
    # Only level 1's tiles (within 20%: the tissue pass reads a lower level) and the
    # directories, parsed twice: the command opens the slide to refuse a non-slide at once,
    # then to predict it.
    with tifffile.TiffFile(slides / "a.svs") as tif:
        level_bytes = sum([p for p in tif.pages if p.is_tiled][1].databytecounts)
    assert sum(served) <= 1.2 * level_bytes + 2 * _directory_blocks(slides / "a.svs")
    assert sum(served) < (slides / "a.svs").stat().st_size / 4


def test_other_formats_and_web_outputs_are_refused_in_one_line(server, pixel_model):
    base, _ = server
    with pytest.raises(SlideError, match="download it first; remote reading supports SVS"):
        open_slide(f"{base}/b.ndpi")
    with pytest.raises(SlideError, match="ftp:// URLs are not read"):
        open_slide("ftp://host/a.svs")
    with pytest.raises(SlideError, match=r"no such object or page .*check the URL"):
        open_slide(f"{base}/missing.svs?sig={SIGNATURE}")
    result = CliRunner().invoke(main, ["predict", f"{base}/a.svs", "--model",
                                       str(pixel_model[0]), "--out", f"{base}/a.zarr"])
    assert result.exit_code == 2 and "cannot be written to http:// URLs" in result.output


def test_a_missing_package_names_the_extra(monkeypatch):
    import fsspec.core

    def missing(*args, **kwargs):
        raise ImportError("Install s3fs to access S3")

    import wsiseg.slide.remote

    monkeypatch.setattr(fsspec.core, "url_to_fs", missing)
    monkeypatch.setattr(wsiseg.slide.remote, "_filesystems", {})
    with pytest.raises(SlideError, match=r"s3://b/a.svs: reading s3:// URLs needs s3fs; "
                                         r"install it with pip install 'wsiseg\[remote\]'"):
        open_slide("s3://b/a.svs")
