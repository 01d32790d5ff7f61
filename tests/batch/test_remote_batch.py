"""Batches of slides in a bucket (a local S3 server): from a list of URLs and from a prefix."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from click.testing import CliRunner

from wsiseg.batch.discovery import discover, is_batch
from wsiseg.cli.main import main
from wsiseg.errors import ConfigError
from wsiseg.testing import synthetic_tissue, write_svs


@pytest.fixture
def bucket(s3_env, tmp_path_factory):
    """Bucket ``slides`` holding two small SVS files (and a note) under ``scans/``; the
    local copies' folder."""
    import boto3

    s3_server = s3_env
    folder = tmp_path_factory.mktemp("bucket")
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket="slides")
    for n in range(2):
        rgb, _ = synthetic_tissue(800, 1000, seed=20 + n)
        path = write_svs(folder / f"s{n}.svs", rgb, 0.5, downsamples=(1, 2, 4), tile=128)
        client.upload_file(str(path), "slides", f"scans/s{n}.svs")
    client.put_object(Bucket="slides", Key="scans/notes.txt", Body=b"not a slide")
    return folder


def test_a_prefix_and_a_list_of_urls_make_batches(bucket, pixel_model, tmp_path):
    assert is_batch(["s3://slides/scans/"]) and not is_batch(["s3://slides/scans/s0.svs"])
    found = discover(["s3://slides/scans/"])
    assert [str(p) for p in found.paths] == ["s3://slides/scans/s0.svs", "s3://slides/scans/s1.svs"]
    listed = tmp_path / "list.csv"
    with open(listed, "w", newline="") as f:
        csv.writer(f).writerows([["slide", "mpp"], ["s3://slides/scans/s1.svs", ""]])
    runner = CliRunner()
    for name, source in (("prefix", "s3://slides/scans/"), ("list", str(listed))):
        out = tmp_path / name
        result = runner.invoke(main, ["predict", source, "--model", str(pixel_model[0]),
                                      "--out", str(out), "--quiet"])
        assert result.exit_code == 0, result.output
        rows = list(csv.DictReader((out / "manifest.csv").read_text().splitlines()))
        assert {r["status"] for r in rows} == {"done"}
        assert "s3://slides/scans/s1.svs" in {r["slide"] for r in rows}
        # Run again: the finished results are kept, as for local slides.
        again = runner.invoke(main, ["predict", source, "--model", str(pixel_model[0]),
                                     "--out", str(out), "--quiet"])
        assert again.exit_code == 0, again.output
        rows = list(csv.DictReader((out / "manifest.csv").read_text().splitlines()))
        assert {r["status"] for r in rows} == {"skipped"}, rows
    from wsiseg.result.store import open_result

    local = tmp_path / "local.wsiseg.zarr"
    result = runner.invoke(main, ["predict", str(bucket / "s1.svs"), "--model",
                                  str(pixel_model[0]), "--out", str(local), "--quiet"])
    assert result.exit_code == 0, result.output
    far, info = open_result(tmp_path / "list" / "s1.wsiseg.zarr")
    near, _ = open_result(local)
    np.testing.assert_array_equal(np.asarray(far[...]), np.asarray(near[...]))
    assert str(info.slide.path) == "s3://slides/scans/s1.svs"


def test_a_batch_refuses_urls_that_carry_secrets(tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text("https://host/a.svs?X-Amz-Signature=f00dfeedsignature\n")
    with pytest.raises(ConfigError) as caught:
        discover([listed])
    assert "f00dfeed" not in str(caught.value) and "environment" in str(caught.value)


def test_a_batch_into_a_bucket_publishes_each_result_and_its_manifest(bucket, pixel_model,
                                                                      tmp_path):
    import fsspec.core

    fs = fsspec.core.url_to_fs("s3://slides", skip_instance_cache=True)[0]
    staging = tmp_path / "staging"
    args = ["predict", "s3://slides/scans/", "--model", str(pixel_model[0]), "--out",
            "s3://slides/maps/run1", "--staging", str(staging), "--export", "report", "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(fs.cat_file("slides/maps/run1/manifest.csv").decode().splitlines()))
    assert [(r["status"], r["output"]) for r in rows] == [
        ("done", f"s3://slides/maps/run1/s{n}.wsiseg.zarr") for n in range(2)]
    for n in range(2):
        assert fs.exists(f"slides/maps/run1/s{n}.wsiseg.zarr/zarr.json")
        assert fs.exists(f"slides/maps/run1/s{n}.report.json")
    # The staging folder keeps the batch: a rerun keeps both results and publishes again only
    # what is missing from the bucket.
    fs.rm("slides/maps/run1/s1.wsiseg.zarr", recursive=True)
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    rows = list(csv.DictReader(fs.cat_file("slides/maps/run1/manifest.csv").decode().splitlines()))
    assert {r["status"] for r in rows} == {"skipped"}
    fs.invalidate_cache()
    assert fs.exists("slides/maps/run1/s1.wsiseg.zarr/zarr.json")
    down = tmp_path / "s1.wsiseg.zarr"
    fs.get("slides/maps/run1/s1.wsiseg.zarr", str(down), recursive=True)
    from wsiseg.result.store import open_result

    np.testing.assert_array_equal(np.asarray(open_result(down)[0][...]),
                                  np.asarray(open_result(staging / "s1.wsiseg.zarr")[0][...]))
