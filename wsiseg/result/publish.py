"""Results published to a bucket (``s3://``, ``gs://``): made locally, then uploaded.

A bucket has no rename, so a result cannot appear at its address all at once, as a local result
does (written under a temporary name, then renamed). A result for a bucket is therefore made,
whole, in a local staging folder, and uploaded in an order that keeps a reader from taking a
half-uploaded result for a finished one (:func:`publish`):

1. when a result there is replaced (``overwrite``), its root ``zarr.json`` is deleted first,
   then the rest of it: from then on there is no result at the address;
2. every file of the new result but its root ``zarr.json`` is uploaded, and each file's size
   is checked in a fresh listing;
3. the root ``zarr.json`` is uploaded last.

Until step 3 no zarr group exists at the address, so zarr, wsiseg and a viewer find no result
there rather than a whole-looking one with missing chunks; a result is published when its root
``zarr.json`` is. What a bucket cannot give, and wsiseg does not pretend to: while a result is
replaced (steps 1 to 3) neither the old nor the new one is there, and two processes publishing
to the same address at the same time are not kept apart (a batch's claims live in its local
staging folder). A single object (``manifest.csv``, an export) is replaced whole by one upload.

Only a result is ever deleted: an address holding an object, another zarr, or files no result
holds (``--out s3://b/maps`` over a prefix of other results, its ``/`` forgotten) is refused
before the slide is read (:func:`check_replaceable`).

Publishing the same result again is free: when the root ``zarr.json`` in the bucket is byte for
byte the local one and every file is there at its size, nothing is uploaded.

Credentials come from where fsspec's file systems look (``AWS_*`` variables, profiles,
``AWS_ENDPOINT_URL`` for MinIO and other S3-compatible stores); a target URL carrying
credentials or a query string is refused, so that none is ever shown or recorded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from wsiseg.errors import OutputError, SlideError, first_line
from wsiseg.naming import result_name
from wsiseg.result.integrity import is_complete
from wsiseg.slide.dicom_series import slide_stem
from wsiseg.slide.remote import filesystem, has_secrets, is_url, redact, scrub, slide_location

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem  # type: ignore[import-untyped]

logger = logging.getLogger(__name__)

#: The schemes results can be published to (web servers are read, not written).
WRITABLE_SCHEMES = ("s3", "gs", "gcs")
#: The root metadata of a result: uploaded last, deleted first.
ROOT = "zarr.json"


def is_bucket_url(text: str | os.PathLike[str] | None) -> bool:
    """Whether ``text`` (an ``--out``) is a URL, so results go to a bucket."""
    return text is not None and is_url(os.fspath(text))


def target_url(out: str, slide: str | os.PathLike[str]) -> str:
    """Where the result of ``slide`` goes for ``--out out``: ``out`` itself, or the result's
    usual name under ``out`` when it is a prefix (ends in ``/``)."""
    if out.endswith("/"):
        return out + result_name(slide_stem(slide_location(slide)))
    return out


@dataclass
class Target:
    """A writable place in a bucket: the URL as given (never shown), its file system and the
    path in it."""

    url: str
    fs: AbstractFileSystem
    path: str

    @property
    def shown(self) -> str:
        return redact(self.url)

    def child(self, name: str) -> Target:
        """The object ``name`` beside this one (in the same prefix)."""
        parent = self.url.rstrip("/").rsplit("/", 1)[0]
        return Target(f"{parent}/{name}", self.fs, f"{self.path.rstrip('/').rsplit('/', 1)[0]}/{name}")

    def error(self, err: BaseException, doing: str) -> OutputError:
        """``err``, raised while ``doing`` this target, as one line without secrets."""
        if isinstance(err, OutputError):
            return err
        why = scrub(first_line(err), self.url)
        if isinstance(err, PermissionError):
            return OutputError(f"cannot {doing} {self.shown}: access denied ({why}); check the "
                               "credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE, ...) and the "
                               "bucket's policy")
        if isinstance(err, FileNotFoundError):
            return OutputError(f"cannot {doing} {self.shown}: no such bucket ({why}); create it "
                               "or check the URL")
        return OutputError(f"cannot {doing} {self.shown}: {why}; check the URL, the network and "
                           "the credentials")


def bucket_target(url: str) -> Target:
    """``url`` as a place results can be published to; a one-line :class:`OutputError` for a
    URL that cannot be written (a web server, credentials in it, no package for it)."""
    shown = redact(url)
    scheme = urlsplit(url).scheme.lower()
    if scheme not in WRITABLE_SCHEMES:
        raise OutputError(f"{shown}: results cannot be written to {scheme}:// URLs; give a "
                          "local path, or an s3:// or gs:// URL")
    if has_secrets(url):
        raise OutputError(f"{shown}: an output URL with credentials or a query string; give "
                          "the credentials through the environment (AWS_ACCESS_KEY_ID, ...)")
    if not urlsplit(url).path.strip("/"):
        raise OutputError(f"{shown}: names a bucket, not a place in it; add a key, e.g. "
                          f"{shown.rstrip('/')}/maps/")
    try:
        fs, path = filesystem(url)
    except SlideError as err:  # the same one line, about an output
        raise OutputError(str(err)) from err
    return Target(url, fs, path.rstrip("/"))


def check_target(url: str, overwrite: bool) -> Target:
    """The target ``url`` once it can take a result: none there yet unless ``overwrite``, and
    writable (a small object is written and deleted beside it), so that a run that could not
    be published is refused before it starts."""
    target = bucket_target(url)
    if check_replaceable(target) and not overwrite:
        raise OutputError(f"{target.shown} exists already; pass --overwrite to replace it, or "
                          "--out elsewhere")
    check_writable(target)
    return target


def check_replaceable(target: Target) -> bool:
    """Whether a result is published at ``target``; a one-line :class:`OutputError` when
    something else is there (an object, another zarr, files no result holds), which a
    publication would delete: nothing but a result (or an unfinished upload of one) is ever
    replaced."""
    try:
        if target.fs.isfile(target.path):
            raise OutputError(f"{target.shown} is a file, not a wsiseg result, so it is never "
                              f"replaced; {_WAY_OUT}")
        foreign = sorted(name for name in _remote_top(target) if not _result_entry(name))
    except OutputError:
        raise
    except Exception as err:
        raise target.error(err, "look at") from err
    if foreign:
        raise OutputError(f"{target.shown} holds files no wsiseg result holds (e.g. "
                          f"{foreign[0]}), so nothing there is replaced; {_WAY_OUT}")
    if not published(target):
        return False
    if not _root_is_result(target):
        raise OutputError(f"{target.shown} is a zarr that is not a wsiseg result, so it is never "
                          f"replaced; {_WAY_OUT}")
    return True


#: The way out of a target that is no result: where a result may go instead.
_WAY_OUT = ("give the result's own address (NAME.wsiseg.zarr), or a prefix ending in / for "
            "results named after their slides")
#: The most of a root ``zarr.json`` read to tell a result from another zarr.
_ROOT_BYTES = 16 * 1024 * 1024


def _remote_top(target: Target) -> list[str]:
    """The names directly under ``target``, freshly listed (one listing, not a walk)."""
    target.fs.invalidate_cache(target.path)
    try:
        found = target.fs.ls(target.path, detail=False)
    except FileNotFoundError:
        return []
    prefix = target.path.rstrip("/") + "/"
    return [str(name)[len(prefix):].strip("/") for name in found
            if str(name).startswith(prefix)]


def _result_entry(name: str) -> bool:
    """Whether ``name`` (relative to a result) is where a result keeps files: its root
    metadata, the levels of its picture, its labels and its own arrays."""
    first = name.split("/", 1)[0]
    return first in (ROOT, "labels", "wsiseg") or first.isdigit()


def _root_is_result(target: Target) -> bool:
    """Whether the root ``zarr.json`` at ``target`` carries wsiseg's attributes."""
    root = f"{target.path}/{ROOT}"
    try:
        if int(target.fs.size(root) or 0) > _ROOT_BYTES:
            return False
        attrs = json.loads(bytes(target.fs.cat_file(root))).get("attributes")
    except (ValueError, AttributeError):
        return False
    except Exception as err:
        raise target.error(err, "look at") from err
    return isinstance(attrs, dict) and "wsiseg" in attrs


def check_writable(target: Target) -> None:
    """Write and delete a small object beside ``target``; a one-line error if that fails."""
    probe = target.child(f".wsiseg-write-check-{uuid.uuid4().hex[:12]}")
    try:
        probe.fs.pipe_file(probe.path, b"")
    except Exception as err:
        raise target.error(err, "write to") from err
    with contextlib.suppress(Exception):
        probe.fs.rm_file(probe.path)


def published(target: Target) -> bool:
    """Whether a result is published at ``target`` (its root ``zarr.json`` is there)."""
    try:
        target.fs.invalidate_cache(target.path)
        return bool(target.fs.exists(f"{target.path}/{ROOT}"))
    except Exception as err:
        raise target.error(err, "look at") from err


def _local_files(result: Path) -> dict[str, Path]:
    """The files of the local result, by their path relative to it."""
    files = {}
    for path in sorted(result.rglob("*")):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise OutputError(f"{path}: not a regular file; a result to publish holds only "
                              "files and folders")
        if path.is_file():
            files[path.relative_to(result).as_posix()] = path
    return files


def _remote_sizes(target: Target) -> dict[str, int]:
    """The files under ``target`` and their sizes, freshly listed."""
    target.fs.invalidate_cache(target.path)
    try:
        found = target.fs.find(target.path, detail=True)
    except FileNotFoundError:
        return {}
    prefix = target.path.rstrip("/") + "/"
    return {str(name)[len(prefix):]: int(info.get("size") or 0)
            for name, info in found.items() if str(name).startswith(prefix)}


def _same_result(target: Target, files: dict[str, Path]) -> bool:
    """Whether ``target`` holds this very result already, whole."""
    try:
        root = bytes(target.fs.cat_file(f"{target.path}/{ROOT}"))
    except FileNotFoundError:
        return False
    if root != files[ROOT].read_bytes():
        return False
    sizes = _remote_sizes(target)
    return all(sizes.get(name) == path.stat().st_size for name, path in files.items())


def publish(result: Path, target: Target, *, overwrite: bool) -> bool:
    """Upload the finished local ``result`` to ``target`` in the order the module describes;
    False when it was there already (nothing uploaded). Refuses an unfinished result, and one
    published there already unless ``overwrite``."""
    if not is_complete(result):
        raise OutputError(f"{result} is not a finished wsiseg result; predict it again before "
                          "publishing it")
    files = _local_files(result)
    try:
        if _same_result(target, files):
            return False
        if check_replaceable(target):
            if not overwrite:
                raise OutputError(f"{target.shown} holds another result; pass --overwrite to "
                                  "replace it, or --out elsewhere")
            target.fs.rm_file(f"{target.path}/{ROOT}")  # from now on, no result there
        target.fs.invalidate_cache(target.path)
        if target.fs.exists(target.path):
            target.fs.rm(target.path, recursive=True)  # what an earlier upload left
        body = [name for name in files if name != ROOT]
        target.fs.put([str(files[n]) for n in body], [f"{target.path}/{n}" for n in body])
        sizes = _remote_sizes(target)
        short = [n for n in body if sizes.get(n) != files[n].stat().st_size]
        if short:
            raise OutputError(f"{target.shown}: {len(short)} files did not arrive whole (e.g. "
                              f"{short[0]}); the result is not published, publish it again")
        target.fs.put_file(str(files[ROOT]), f"{target.path}/{ROOT}")
    except OutputError:
        raise
    except Exception as err:
        raise target.error(err, "upload to") from err
    logger.info("%s: published (%d files)", target.shown, len(files))
    return True


def upload_file(path: Path, target: Target) -> None:
    """Upload one file (an export, the manifest) to ``target``: replaced whole."""
    try:
        target.fs.put_file(str(path), target.path)
    except Exception as err:
        raise target.error(err, "upload to") from err


def publish_with_exports(result: Path, target: Target, exports: Sequence[Path], *,
                         overwrite: bool) -> bool:
    """:func:`publish` ``result``, then upload each file of ``exports`` beside it."""
    uploaded = publish(result, target, overwrite=overwrite)
    for path in exports:
        upload_file(path, target.child(path.name))
    return uploaded


def staging_error(err: OutputError, staged: Path, target: Target) -> OutputError:
    """``err`` (a failed upload) with where the finished result is kept and how to publish it."""
    return OutputError(f"{err}; the finished result is kept in {staged}: publish it with "
                       f"`wsiseg publish {staged} {target.shown}`")


@contextlib.contextmanager
def staging_folder(where: str | os.PathLike[str] | None) -> Iterator[Path]:
    """A fresh local folder to make a result in before it is published, in ``where`` (default:
    the system's temporary folder, ``TMPDIR``). Removed afterwards unless the block raises
    an :class:`OutputError` that names it (a failed upload keeps the finished result)."""
    import shutil
    import tempfile

    base = Path(where) if where is not None else Path(tempfile.gettempdir())
    try:
        base.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="wsiseg-staging-", dir=base))
    except OSError as err:
        raise OutputError(f"cannot create a staging folder in {base} ({err.strerror or err}); "
                          "choose another with --staging") from err
    keep = False
    try:
        yield folder
    except OutputError as err:
        keep = str(folder) in str(err)
        raise
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)

