"""Publishing a finished result to a bucket (a local S3 server): the root zarr.json last."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from wsiseg.cards import ClassInfo
from wsiseg.errors import OutputError
from wsiseg.result.publish import (
    ROOT,
    bucket_target,
    check_target,
    publish,
    published,
    target_url,
)
from wsiseg.result.store import open_result
from wsiseg.testing.result import write_result

CLASSES = tuple(ClassInfo(i, f"c{i}", (60 * i, 0, 0)) for i in range(3))


@pytest.fixture
def maps(s3_env):
    """A fresh bucket's prefix (``s3://NAME/maps/``)."""
    import boto3

    name = f"maps-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket=name)
    return f"s3://{name}/maps/"


def _result(path, seed):
    labels = np.random.default_rng(seed).integers(0, 3, (150, 130), dtype=np.uint8)
    return write_result(path, labels, CLASSES, chunk=64), labels


def test_the_root_goes_last_and_a_reader_sees_no_result_before_it(maps, tmp_path, monkeypatch):
    local, labels = _result(tmp_path / "a.wsiseg.zarr", 1)
    target = check_target(maps + "a.wsiseg.zarr", overwrite=False)
    fs = target.fs
    seen = {}
    real_put_file = fs.put_file

    def put_file(lpath, rpath, *args, **kwargs):
        if rpath.endswith(f"/a.wsiseg.zarr/{ROOT}"):
            # Everything else is there, and still no result is.
            seen["published_before_root"] = published(target)
            seen["files_before_root"] = len(fs.find(target.path))
        return real_put_file(lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(fs, "put_file", put_file)
    assert publish(local, target, overwrite=False) is True
    files = [p for p in local.rglob("*") if p.is_file()]
    assert seen == {"published_before_root": False, "files_before_root": len(files) - 1}
    assert published(target)
    down = tmp_path / "down.wsiseg.zarr"
    fs.get(target.path, str(down), recursive=True)
    array, info = open_result(down)
    np.testing.assert_array_equal(np.asarray(array[...]), labels)
    assert info.classes == CLASSES

    # The same result again: nothing is uploaded.
    monkeypatch.setattr(fs, "put", lambda *a, **k: pytest.fail("uploaded again"))
    assert publish(local, target, overwrite=False) is False


def test_another_result_is_replaced_only_when_asked_and_the_old_root_goes_first(
        maps, tmp_path, monkeypatch):
    first, _ = _result(tmp_path / "one" / "x.wsiseg.zarr", 2)
    second, labels = _result(tmp_path / "two" / "x.wsiseg.zarr", 3)
    target = bucket_target(maps + "x.wsiseg.zarr")
    publish(first, target, overwrite=False)
    with pytest.raises(OutputError, match=r"maps/x.wsiseg.zarr exists already; pass --overwrite"):
        check_target(target.url, overwrite=False)
    with pytest.raises(OutputError, match="holds another result; pass --overwrite"):
        publish(second, target, overwrite=False)
    removed = []
    real_rm_file = target.fs.rm_file

    def rm_file(path, *args, **kwargs):
        removed.append((path, target.fs.exists(path.rsplit("/", 1)[0] + "/labels/zarr.json")))
        return real_rm_file(path, *args, **kwargs)

    monkeypatch.setattr(target.fs, "rm_file", rm_file)
    assert publish(second, target, overwrite=True)
    # The old root was deleted while the rest of the old result was still there.
    assert removed[0] == (f"{target.path}/{ROOT}", True)
    down = tmp_path / "down.wsiseg.zarr"
    target.fs.get(target.path, str(down), recursive=True)
    np.testing.assert_array_equal(np.asarray(open_result(down)[0][...]), labels)


def test_an_upload_that_breaks_leaves_no_result_and_a_second_one_finishes(
        maps, tmp_path, monkeypatch):
    local, labels = _result(tmp_path / "b.wsiseg.zarr", 4)
    target = bucket_target(maps + "b.wsiseg.zarr")
    real_put = target.fs.put

    def half(lpaths, rpaths, *args, **kwargs):
        real_put(lpaths[: len(lpaths) // 2], rpaths[: len(rpaths) // 2])
        raise ConnectionError("connection reset by peer")

    monkeypatch.setattr(target.fs, "put", half)
    with pytest.raises(OutputError) as caught:
        publish(local, target, overwrite=False)
    assert "\n" not in str(caught.value) and "connection reset" in str(caught.value)
    assert target.fs.find(target.path) and not published(target)
    monkeypatch.setattr(target.fs, "put", real_put)
    assert publish(local, target, overwrite=False)
    down = tmp_path / "down.wsiseg.zarr"
    target.fs.get(target.path, str(down), recursive=True)
    np.testing.assert_array_equal(np.asarray(open_result(down)[0][...]), labels)


def test_unfinished_results_and_unwritable_targets_are_refused_in_one_line(maps, tmp_path):
    local, _ = _result(tmp_path / "c.wsiseg.zarr", 5)
    unfinished = tmp_path / "u.wsiseg.zarr"
    local.rename(unfinished)
    (unfinished / ROOT).unlink()
    with pytest.raises(OutputError, match="is not a finished wsiseg result"):
        publish(unfinished, bucket_target(maps + "u.wsiseg.zarr"), overwrite=False)
    for url, why in (("https://host/maps/a.zarr", "cannot be written to https:// URLs"),
                     ("s3://b/a.zarr?X-Amz-Signature=secretsig", "credentials or a query"),
                     ("s3://user:pw@b/a.zarr", "credentials or a query"),
                     ("s3://bucket/", "names a bucket, not a place in it")):
        with pytest.raises(OutputError, match=why) as caught:
            bucket_target(url)
        assert "secretsig" not in str(caught.value) and "pw" not in str(caught.value)
    with pytest.raises(OutputError, match=r"s3://no-such-bucket-x/a.zarr: .*no such bucket"):
        check_target("s3://no-such-bucket-x/a.zarr", overwrite=False)


def test_a_prefix_names_the_result_after_its_slide():
    assert target_url("s3://b/maps/", "/data/case 1.svs") == "s3://b/maps/case 1.wsiseg.zarr"
    assert target_url("s3://b/maps/", "s3://slides/a.b.tiff") == "s3://b/maps/a.b.wsiseg.zarr"
    assert target_url("s3://b/x.zarr", "/data/a.svs") == "s3://b/x.zarr"


def test_credentials_are_never_recorded(maps, tmp_path):
    local, _ = _result(tmp_path / "d.wsiseg.zarr", 6)
    target = bucket_target(maps + "d.wsiseg.zarr")
    publish(local, target, overwrite=False)
    for name in target.fs.find(target.path):
        if name.endswith(".json"):
            assert "testing" not in json.dumps(json.loads(target.fs.cat_file(name)))
