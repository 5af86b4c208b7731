"""Choosing a blob store by URL.

``parse_store_url(url, base)`` reads a URL without opening anything (every
place that takes a store URL uses it), and ``open_store(url, base)`` returns
the ``BlobStore`` (see ``blobs.py``) it names:

* ``file:///abs/path``, ``file://localhost/abs/path``, ``file://./rel``,
  ``file://../rel``, ``file://~/path`` or a plain path (relative ones resolve
  against ``base``, by default the current folder): a ``FileStore`` rooted
  there, the embedded default;
* ``s3://bucket/optional/prefix?endpoint=http://host:port&region=...``: an
  ``S3Store``; credentials come from the standard AWS chain (environment,
  shared files, instance roles), never from the URL.

The store modules are imported only when a URL asks for them, so a filesystem
user never pays for importing boto3.

Keys are checked the same way by every store: see ``keys.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlsplit

from ..errors import AutopgoError
from .keys import check_key

if TYPE_CHECKING:
    from .blobs import BlobStore

DEFAULT_BLOB_STORE = "file://./data/blobs"  # relative to the folder of whoever reads it
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_S3_PARAMS = frozenset({"endpoint", "region"})


class StoreURLError(AutopgoError, ValueError):
    """A blob store URL that names no store: ``url`` as given, ``problem`` says why."""

    def __init__(self, url: str, problem: str) -> None:
        super().__init__(url, problem)
        self.url = url
        self.problem = problem

    def __str__(self) -> str:
        return f"invalid blob store URL {self.url!r}: {self.problem}"


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """Where a blob store URL points: a folder (``root``), or an S3 bucket and prefix.

    ``url`` is the canonical form, the same wherever it is read: ``file://``
    and an absolute, percent-encoded path for a folder; an S3 URL as given.
    """

    url: str
    root: Path | None = None
    bucket: str = ""
    prefix: str = ""
    endpoint: str | None = None
    region: str | None = None


def parse_store_url(url: str, base: Path | None = None) -> StoreLocation:
    """Read a blob store URL without opening the store (no I/O, no boto3); StoreURLError if it names none.

    Accepted: ``file:///abs/path``, ``file://localhost/abs/path``,
    ``file://./rel``, ``file://../rel``, ``file://~/path``, a plain path, and
    ``s3://bucket/prefix?endpoint=...&region=...``. A relative location
    resolves against ``base``, which the caller chooses: the configuration
    file's folder for ``blob_store``, the current folder (the default) for
    flags and environment variables.
    """
    if not isinstance(url, str) or not url.strip():
        raise StoreURLError(str(url), "empty")
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else ""
    if not match or (scheme not in ("file", "s3") and "://" not in url):
        # No scheme (or a colon that is just part of a file name): a plain path.
        return _folder(url, url, base)
    if scheme == "file":
        return _file_url(url, base)
    if scheme == "s3":
        return _s3_url(url)
    raise StoreURLError(url, f"unknown scheme {scheme!r} (use file:// or s3://, or a plain path)")


def open_store(url: str, base: Path | None = None) -> BlobStore:
    """The blob store a URL names (see ``parse_store_url``); StoreURLError if it names none.

    Opening does no I/O: use ``store.check()`` to find out whether it works.
    """
    location = parse_store_url(url, base)
    if location.root is not None:
        from .filestore import FileStore

        return FileStore(location.root)
    from .s3store import S3Store

    return S3Store(location.bucket, location.prefix, endpoint_url=location.endpoint, region=location.region)


def _file_url(url: str, base: Path | None) -> StoreLocation:
    if not url[len("file:") :].startswith("//"):
        raise StoreURLError(url, "a file URL looks like file:///absolute/path or file://./relative/path")
    rest = url[len("file://") :]
    if "?" in rest or "#" in rest:
        raise StoreURLError(url, "file URLs take no query parameters or fragment")
    host, slash, after = rest.partition("/")
    if host == "":
        path = rest
    elif host.lower() == "localhost":
        path = slash + after
    elif host in (".", "..") or host.startswith("~"):
        path = rest  # relative to the base, or to a home folder
    else:
        raise StoreURLError(
            url, f"file URLs cannot name a host ({host!r}): write file:///absolute/path or file://./relative/path"
        )
    if not path:
        raise StoreURLError(url, "a file URL needs a path")
    return _folder(unquote(path), url, base)


def _folder(path: str, url: str, base: Path | None) -> StoreLocation:
    """A filesystem store at ``path``; relative to ``base`` (default: the current folder) unless absolute."""
    if "\x00" in path:
        raise StoreURLError(url, "NUL character in path")
    try:
        folder = Path(path).expanduser()
    except RuntimeError:
        raise StoreURLError(url, f"cannot find the home folder of {path.partition('/')[0]!r}") from None
    if not folder.is_absolute():
        folder = ((base if base is not None else Path.cwd()) / folder).resolve()
    return StoreLocation(url=folder.as_uri(), root=folder)


def _s3_url(url: str) -> StoreLocation:
    parts = urlsplit(url)
    if not url.lower().startswith("s3://"):
        raise StoreURLError(url, "an S3 URL looks like s3://bucket/optional/prefix")
    if "@" in parts.netloc:
        raise StoreURLError(url, "credentials do not belong in the URL; use the AWS environment or config files")
    bucket = parts.netloc
    if not bucket:
        raise StoreURLError(url, "missing bucket name")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise StoreURLError(url, f"invalid bucket name {bucket!r}")
    if parts.fragment:
        raise StoreURLError(url, "S3 URLs take no fragment")
    prefix = unquote(parts.path).strip("/")
    if prefix:
        try:
            check_key(prefix)
        except ValueError as exc:
            raise StoreURLError(url, f"bad prefix: {str(exc).partition(': ')[2]}") from None
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise StoreURLError(url, f"malformed query {parts.query!r}") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name not in _S3_PARAMS:
            raise StoreURLError(url, f"unknown query parameter {name!r} (known: {', '.join(sorted(_S3_PARAMS))})")
        if name in params:
            raise StoreURLError(url, f"query parameter {name!r} given twice")
        if not value:
            raise StoreURLError(url, f"query parameter {name!r} is empty")
        params[name] = value
    endpoint = params.get("endpoint")
    if endpoint is not None:
        ep = urlsplit(endpoint)
        if ep.scheme not in ("http", "https") or not ep.hostname or ep.query or ep.fragment:
            raise StoreURLError(url, f"endpoint {endpoint!r} is not an http(s)://host[:port] URL")
        try:
            ep.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise StoreURLError(url, f"endpoint {endpoint!r} has a bad port") from None
    return StoreLocation(url=url, bucket=bucket, prefix=prefix, endpoint=endpoint, region=params.get("region"))
