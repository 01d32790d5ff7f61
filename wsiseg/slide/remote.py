"""Slides in buckets and on web servers: ``s3://``, ``gs://``, ``http(s)://`` URLs.

A remote slide is read through fsspec (``s3fs`` for S3 and S3-compatible stores such as MinIO,
``gcsfs`` for Google Cloud Storage, ``aiohttp`` for HTTP(S): the ``remote`` extra), one byte
range at a time, never as a whole file. Two kinds of reads are made:

- the TIFF directories (IFDs, tile tables, descriptions), parsed by tifffile from a file object
  with a bounded block cache (:data:`BLOCK_SIZE` x :data:`MAX_BLOCKS`): the small, scattered
  reads of the parse are served from a few blocks;
- the tiles themselves, each fetched as exactly its own byte range
  (:meth:`RemoteSource.read_range`), from any thread; decoded tiles are cached by the backend
  (:class:`~wsiseg.slide.backends.base.ChunkedSlide`), so a block cache would only fetch the
  bytes of neighbouring tiles that the read does not need.

Credentials come from where the libraries look for them (``AWS_ACCESS_KEY_ID`` ...,
``AWS_ENDPOINT_URL``, profiles, fsspec's configuration), read by each process itself. A URL
may carry them too (``https://user:pass@host/...``, a presigned URL's query string): such a
URL is used to read the slide but shown, logged and recorded only as :func:`redact` gives it,
without its user information and query string. :class:`SlideUrl` is a URL that stands where
the rest of wsiseg expects a ``Path``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from pathlib import Path, PosixPath
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from wsiseg.errors import ConfigError, SlideError, first_line

if TYPE_CHECKING:
    from typing import Self

    from fsspec import AbstractFileSystem  # type: ignore[import-untyped]

logger = logging.getLogger(__name__)

#: The URL schemes read, and the package fsspec needs for each.
SCHEMES = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "http": "aiohttp", "https": "aiohttp"}
#: How the packages for remote slides are installed.
INSTALL = "pip install 'wsiseg[remote]'"
#: The file name endings read from a URL: SVS, generic tiled TIFF and OME-TIFF.
REMOTE_SUFFIXES = (".svs", ".tif", ".tiff")
#: What a URL of another format is told.
DOWNLOAD_FIRST = ("download it first; remote reading supports SVS, generic TIFF and OME-TIFF")
#: The block cache that serves tifffile's parse of the directories: bytes per block, blocks
#: kept (so at most BLOCK_SIZE * MAX_BLOCKS bytes held per open slide).
BLOCK_SIZE = 16 * 1024
MAX_BLOCKS = 128

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(item: object) -> bool:
    """Whether ``item`` is a URL (``scheme://...``) rather than a local path."""
    if isinstance(item, SlideUrl):
        return True
    return isinstance(item, str) and _URL.match(item) is not None


def redact(url: str) -> str:
    """``url`` as it may be shown, logged and recorded: without user name, password, query
    string (a presigned URL's signature) or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    elif parts.netloc.endswith(":"):
        host += ":"
    return urlunsplit((parts.scheme, host if "@" in parts.netloc else parts.netloc,
                       parts.path, "", ""))


def has_secrets(url: str) -> bool:
    """Whether ``url`` carries user information or a query string that :func:`redact` drops."""
    return redact(url) != url


def scrub(text: str, url: str) -> str:
    """``text`` (e.g. a library's error message) without the secrets ``url`` carries."""
    parts = urlsplit(url)
    values = [v for _, v in parse_qsl(parts.query) if len(v) >= 6]
    for secret in (url, parts.query, parts.password or "", parts.username or "", *values):
        if secret:
            text = text.replace(secret, redact(url) if secret == url else "***")
    return text


class SlideUrl(PosixPath):
    """A slide's URL where a ``Path`` is expected.

    ``str()`` is the URL without secrets (:func:`redact`); ``name``, ``stem`` and ``suffix``
    are those of the URL's path; it never exists as a local file. :attr:`url` is the URL as
    given, to read the slide with: never show it.
    """

    _url: str
    _shown: str

    def __new__(cls, url: str) -> Self:
        self = super().__new__(cls, urlsplit(url).path or "/")
        self._url, self._shown = url, redact(url)
        return self

    if sys.version_info >= (3, 12):  # pragma: no cover - the path is set in __init__ there
        def __init__(self, url: str) -> None:
            super().__init__(urlsplit(url).path or "/")

        def with_segments(self, *segments: str | os.PathLike[str]) -> Path:
            return Path(*segments)

    @property
    def url(self) -> str:
        """The URL as given, credentials and signature included."""
        return getattr(self, "_url", "") or super().__str__()

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme.lower()

    def __str__(self) -> str:
        return getattr(self, "_shown", "") or super().__str__()

    def __fspath__(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"SlideUrl({str(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (SlideUrl, (self.url,))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SlideUrl):
            return self.url == other.url
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.url)

    def __lt__(self, other: object) -> bool:
        return str(self) < str(other)

    def exists(self, *args: Any, **kwargs: Any) -> bool:  # never a local file
        return False

    def is_file(self, *args: Any, **kwargs: Any) -> bool:
        return False

    def is_dir(self, *args: Any, **kwargs: Any) -> bool:
        return False

    def resolve(self, strict: bool = False) -> Self:
        return self

    def expanduser(self) -> Self:
        return self


def slide_location(item: str | os.PathLike[str]) -> Path:
    """``item`` as the slide's ``Path``: a :class:`SlideUrl` for a URL, else a local path."""
    if isinstance(item, SlideUrl):
        return item
    text = os.fspath(item)
    return SlideUrl(text) if is_url(text) else Path(text)


def check_url(url: str) -> str:
    """The scheme of ``url``, once it is one wsiseg reads and names a file of a format read
    remotely; a one-line :class:`SlideError` otherwise."""
    shown = redact(url)
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise SlideError(f"{shown}: {scheme}:// URLs are not read; give an s3://, gs://, "
                         "http:// or https:// URL, or a local path")
    name = urlsplit(url).path.rsplit("/", 1)[-1].lower()
    if not name.endswith(REMOTE_SUFFIXES):
        raise SlideError(f"{shown}: {DOWNLOAD_FIRST}")
    return scheme


#: Environment variables that decide which endpoint and credentials a file system uses.
_ENV_PREFIXES = ("AWS_", "GOOGLE_", "GCSFS_", "FSSPEC_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
_filesystems: dict[tuple[Any, ...], AbstractFileSystem] = {}
_filesystems_lock = threading.Lock()


def _settings_now(scheme: str) -> tuple[Any, ...]:
    """What a file system for ``scheme`` made now depends on: the scheme, the process (file
    systems do not cross a fork) and the environment that names endpoint and credentials."""
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(_ENV_PREFIXES)))
    return scheme, os.getpid(), env


def filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """fsspec's file system for ``url`` and the path in it; a one-line :class:`SlideError`
    naming the ``remote`` extra when the package it needs is not installed.

    One file system is kept per scheme, process and environment (the variables that name the
    endpoint and credentials), since making one costs a second or so on its first request;
    a changed environment gets a new one.
    """
    scheme = urlsplit(url).scheme.lower()
    package = SCHEMES.get(scheme, "fsspec")
    try:
        import fsspec.core  # type: ignore[import-untyped]

        options = fsspec.get_filesystem_class(scheme)._get_kwargs_from_urls(url)
        key = (*_settings_now(scheme), repr(sorted(options.items())))
        with _filesystems_lock:
            fs = _filesystems.get(key)
        if fs is None:
            # Not fsspec's own instance cache: it would not see a changed environment.
            fs, path = fsspec.core.url_to_fs(url, skip_instance_cache=True)
            with _filesystems_lock:
                _filesystems[key] = fs
        else:
            path = fs._strip_protocol(url)
    except ImportError as err:
        raise SlideError(f"{redact(url)}: reading {scheme}:// URLs needs {package}; install "
                         f"it with {INSTALL}") from err
    except (ValueError, OSError) as err:
        raise SlideError(f"{redact(url)}: not a URL that can be read "
                         f"({scrub(first_line(err), url)})") from err
    return fs, path


class RemoteSource:
    """An open remote slide file: :attr:`file` for tifffile's parse (block cache), and
    :meth:`read_range` for the tiles (exact ranges, thread-safe)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = redact(url)
        self.scheme = check_url(url)
        self.fs, self.path = filesystem(url)
        self.fetched = 0  # bytes fetched for tiles (the parse's are the file's ``cache``'s)
        self._count_lock = threading.Lock()
        try:
            self.file: IO[bytes] = self.fs.open(
                self.path, "rb", block_size=BLOCK_SIZE, cache_type="blockcache",
                cache_options={"maxblocks": MAX_BLOCKS})
            self.size: int = int(self.file.size)
        except Exception as err:
            raise self.error(err) from err

    def error(self, err: BaseException) -> SlideError:
        """``err`` (raised reading the URL) as a one-line :class:`SlideError` without secrets."""
        if isinstance(err, SlideError):
            return err
        why = scrub(first_line(err), self.url)
        if isinstance(err, FileNotFoundError):
            return SlideError(f"{self.name}: no such object or page ({why}); check the URL")
        if isinstance(err, PermissionError):
            return SlideError(f"{self.name}: access denied ({why}); check the credentials "
                              "(AWS_ACCESS_KEY_ID, AWS_PROFILE, ...) or the URL's signature")
        return SlideError(f"{self.name}: cannot be read ({why}); check the URL, the network "
                          "and the credentials")

    def read_range(self, offset: int, count: int) -> bytes:
        """``count`` bytes from ``offset``, fetched as one range request."""
        if count <= 0:
            return b""
        try:
            data = bytes(self.fs.cat_file(self.path, start=offset, end=offset + count))
        except Exception as err:
            raise self.error(err) from err
        if len(data) > count:  # a server that ignored the range sent the whole file
            raise SlideError(f"{self.name}: the server does not answer byte-range requests; "
                             "download the slide first")
        with self._count_lock:
            self.fetched += len(data)
        return data

    def close(self) -> None:
        try:
            self.file.close()
        except Exception:  # noqa: BLE001, S110 - closing a read-only remote file cannot lose data
            pass


def list_slides(prefix: str, suffixes: tuple[str, ...]) -> list[str]:
    """The URLs of the objects under ``prefix`` (a URL ending in ``/``) whose names end in one
    of ``suffixes``, sorted; not recursive (as a local folder is searched)."""
    shown = redact(prefix)
    if has_secrets(prefix):
        raise ConfigError(f"{shown}: a prefix URL with credentials or a query string; give the "
                          "credentials through the environment (AWS_ACCESS_KEY_ID, ...)")
    scheme = urlsplit(prefix).scheme.lower()
    if scheme not in SCHEMES or scheme in ("http", "https"):
        raise ConfigError(f"{shown}: only s3:// and gs:// prefixes can be listed; give the "
                          "slides' URLs one by one, or in a list file")
    fs, path = filesystem(prefix)
    try:
        entries = fs.ls(path.rstrip("/"), detail=True)
    except FileNotFoundError:
        entries = []
    except Exception as err:
        raise ConfigError(f"{shown}: cannot be listed ({scrub(first_line(err), prefix)}); "
                          "check the URL and the credentials") from err
    urls = []
    for entry in entries:
        name = str(entry.get("name", "")).rstrip("/").rsplit("/", 1)[-1]
        if entry.get("type") == "file" and name.lower().endswith(suffixes):
            urls.append(prefix + name)
    if not urls:
        raise ConfigError(f"{shown}: holds no slide ({', '.join(suffixes)}); check the prefix")
    return sorted(urls)
