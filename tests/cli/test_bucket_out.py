"""``wsiseg predict --out s3://...`` and ``wsiseg publish``: results made locally, then published."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from click.testing import CliRunner

from wsiseg.cli.main import main
from wsiseg.errors import OutputError
from wsiseg.result.store import open_result
from wsiseg.testing import synthetic_tissue, write_svs


@pytest.fixture
def maps(s3_env):
    import boto3

    name = f"maps-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    rgb, _ = synthetic_tissue(600, 700, seed=31)
    return write_svs(tmp_path_factory.mktemp("slide") / "case 7.svs", rgb, 0.5, tile=128)


def _fs():
    import fsspec.core

    return fsspec.core.url_to_fs("s3://x", skip_instance_cache=True)[0]


def test_one_slide_is_published_with_its_exports_and_nothing_stays_behind(
        maps, slide, pixel_model, tmp_path):
    staging = tmp_path / "staging"
    args = ["predict", str(slide), "--model", str(pixel_model[0]), "--out", f"s3://{maps}/maps/",
            "--staging", str(staging), "--export", "report"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"s3://{maps}/maps/case 7.wsiseg.zarr: " in result.output
    assert f"s3://{maps}/maps/case 7.report.json" in result.output
    assert list(staging.iterdir()) == []  # the staged result is gone once published
    fs = _fs()
    down = tmp_path / "down.wsiseg.zarr"
    fs.get(f"{maps}/maps/case 7.wsiseg.zarr", str(down), recursive=True)
    labels, _ = open_result(down)
    local = tmp_path / "local.wsiseg.zarr"
    again = CliRunner().invoke(main, ["predict", str(slide), "--model", str(pixel_model[0]),
                                      "--out", str(local), "--quiet"])
    assert again.exit_code == 0, again.output
    np.testing.assert_array_equal(np.asarray(labels[...]), np.asarray(open_result(local)[0][...]))
    report = json.loads(fs.cat_file(f"{maps}/maps/case 7.report.json"))
    assert report["slide"].endswith("case 7.svs")

    # There already: refused before any work; --overwrite replaces it.
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 1 and refused.output.count("\n") == 1
    assert "exists already; pass --overwrite" in refused.output
    replaced = CliRunner().invoke(main, [*args, "--overwrite", "--quiet"])
    assert replaced.exit_code == 0, replaced.output


def test_a_failed_upload_keeps_the_result_and_says_how_to_publish_it(
        maps, slide, pixel_model, tmp_path, monkeypatch):
    from wsiseg.result import publish

    real = publish.publish

    def broken(result, target, *, overwrite):
        raise OutputError(f"cannot upload to {target.shown}: connection reset by peer; check "
                          "the network")

    monkeypatch.setattr(publish, "publish", broken)
    url = f"s3://{maps}/maps/one.wsiseg.zarr"
    result = CliRunner().invoke(main, ["predict", str(slide), "--model", str(pixel_model[0]),
                                       "--out", url, "--staging", str(tmp_path / "st"), "--quiet"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "connection reset by peer" in result.output and "wsiseg publish" in result.output
    staged = next((tmp_path / "st").iterdir()) / "one.wsiseg.zarr"
    assert str(staged) in result.output
    open_result(staged)  # whole
    monkeypatch.setattr(publish, "publish", real)
    done = CliRunner().invoke(main, ["publish", str(staged), url])
    assert done.exit_code == 0, done.output
    assert done.output.strip() == url
    twice = CliRunner().invoke(main, ["publish", str(staged), url])
    assert twice.output.strip() == f"{url} (there already)"


def test_outputs_that_cannot_be_written_are_usage_errors(slide, pixel_model, tmp_path):
    for out, why in (("https://host/maps/a.zarr", "cannot be written to https:// URLs"),
                     ("s3://b/a.zarr?sig=verysecretvalue", "credentials or a query string")):
        result = CliRunner().invoke(main, ["predict", str(slide), "--model",
                                           str(pixel_model[0]), "--out", out])
        assert result.exit_code == 2 and why in result.output, result.output
        assert "verysecretvalue" not in result.output
    result = CliRunner().invoke(main, ["predict", str(slide), "--staging", str(tmp_path)])
    assert result.exit_code == 2 and "is for results published to a bucket" in result.output


def test_nothing_but_a_result_is_replaced_in_a_bucket(maps, slide, pixel_model, tmp_path):
    fs = _fs()
    kept = {f"{maps}/2024/a.wsiseg.zarr/zarr.json": b"{}", f"{maps}/notes.csv": b"precious",
            f"{maps}/scan.ome.zarr/zarr.json": json.dumps(
                {"zarr_format": 3, "node_type": "group", "attributes": {"ome": {}}}).encode(),
            f"{maps}/scan.ome.zarr/0/zarr.json": b"{}"}
    for key, data in kept.items():
        fs.pipe_file(key, data)
    forgotten = "holds files no wsiseg result holds (e.g. a.wsiseg.zarr), so nothing there"
    for out, why in ((f"s3://{maps}/2024", forgotten),  # a prefix of results, its / forgotten
                     (f"s3://{maps}/notes.csv", "is a file, not a wsiseg result, so it is never"),
                     (f"s3://{maps}/scan.ome.zarr", "is a zarr that is not a wsiseg result, so")):
        for extra in ((), ("--overwrite",)):
            refused = CliRunner().invoke(main, ["predict", str(slide), "--model",
                                                str(pixel_model[0]), "--out", out, *extra])
            assert refused.exit_code == 1 and refused.output.count("\n") == 1, refused.output
            assert why in refused.output, refused.output
    fs.invalidate_cache()
    assert {key: fs.cat_file(key) for key in kept} == kept
