"""A blob store in an S3 bucket (AWS S3 or any S3-compatible server), with boto3.

Keys live under an optional prefix in the bucket (``s3://bucket/prefix``); the
prefix is added on the way in and removed again in every ``BlobInfo``.

Conditional writes map onto S3's conditional PUT: create-only sends
``If-None-Match: *`` and replace-if-unchanged sends ``If-Match: "<etag>"``.
Servers answer a failed condition with 412 PreconditionFailed, with 409
ConditionalRequestConflict when another conditional write to the key is in
flight (AWS), or with 404 NoSuchKey for If-Match on a missing key (AWS); all of
them become PreconditionFailedError. ETags are stored and compared without
their quotes. Note that S3 ETags are content hashes: replacing an object with
identical bytes keeps its etag (harmless for compare-and-swap: the state is
the same).

Everything else that goes wrong (connection refused, timeouts, access denied,
a missing bucket) becomes a BlobStoreError with a one-line message. Requests
are retried by botocore's "standard" retry mode with short timeouts. A
conditional PUT whose response is lost and which botocore then retries can
report PreconditionFailedError although the first attempt won; callers that
care re-read the object.

Listing order is the server's: AWS S3 returns keys in UTF-8 byte order.
SeaweedFS returns them in directory-walk order instead, which differs only
where a key continues with a character below ``/`` right where a sibling key
has a ``/`` (``p/a/b`` comes before ``p/a-c`` there). The key layout in
``names.py`` never depends on that case.

The boto3 client is made in ``__init__`` (no network traffic there), never at
import time, and boto3 is imported only by this module.
"""

from __future__ import annotations

import io
import logging
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..errors import BlobNotFoundError, BlobStoreError, PreconditionFailedError
from .blobs import BlobInfo
from .keys import check_key, check_prefix

log = logging.getLogger(__name__)

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_SPOOL_MAX = 8 << 20  # non-seekable uploads up to this size are buffered in memory


def _unquote(etag: str) -> str:
    return etag.strip().strip('"')


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _BodyReader(io.RawIOBase):
    """A botocore StreamingBody as a raw binary stream whose read errors are BlobStoreErrors."""

    def __init__(self, body: Any, describe: str) -> None:
        super().__init__()
        self._body = body
        self._describe = describe

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            chunk = self._body.read(len(view))
        except (BotoCoreError, OSError) as exc:
            raise BlobStoreError(f"{self._describe}: read failed: {_one_line(str(exc))}") from None
        view[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3Store:
    """A ``BlobStore`` in ``bucket`` under ``prefix``; thread-safe (one boto3 client, shared)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        page_size: int = 1000,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 3,
        max_pool_connections: int = 32,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        session: boto3.session.Session | None = None,
    ) -> None:
        """``page_size`` is the listing page size (at most 1000 on AWS; small in tests).

        Credentials default to the standard AWS chain; pass them only to override
        it. ``session`` lends an existing boto3 session (whose loaded service
        models make the client quicker to build); otherwise the store makes its
        own, since boto3's default session is shared global state.
        """
        if not bucket:
            raise ValueError("S3Store needs a bucket name")
        if page_size < 1:
            raise ValueError(f"page_size must be positive, not {page_size}")
        prefix = prefix.strip("/")
        if prefix:
            check_key(prefix)
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.endpoint_url = endpoint_url
        self.page_size = page_size
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": max_attempts},
            max_pool_connections=max_pool_connections,
            # Path-style requests: S3-compatible servers rarely resolve bucket subdomains.
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        if session is None:
            session = boto3.session.Session()
        self._client = session.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
            config=config,
        )
        self.region = self._client.meta.region_name

    def __repr__(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"S3Store('s3://{self.bucket}/{self.prefix}'{where})"

    # -- helpers -------------------------------------------------------------------

    def _full(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def _error(self, action: str, key: str, exc: Exception) -> BlobStoreError:
        """A one-line BlobStoreError for a failed request."""
        where = self._where(key)
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
            code = error.get("Code", "?")
            message = error.get("Message") or ""
            detail = f"{code} (HTTP {status})" + (f": {message}" if message and message != code else "")
            return BlobStoreError(_one_line(f"cannot {action} {where}: {detail}"))
        return BlobStoreError(_one_line(f"cannot {action} {where}: {exc}"))

    @staticmethod
    def _status(exc: ClientError) -> tuple[str, int]:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return code, status

    def _not_found(self, exc: ClientError) -> bool:
        code, status = self._status(exc)
        return code in _NOT_FOUND_CODES or (status == 404 and code != "NoSuchBucket")

    def _info(self, key: str, size: int, last_modified: datetime, etag: str) -> BlobInfo:
        return BlobInfo(key=key, size=int(size), last_modified=_utc(last_modified), etag=_unquote(etag))

    @staticmethod
    def _body(data: bytes | BinaryIO) -> tuple[Any, int]:
        """What to send as the PUT body, and its length.

        Bytes go as they are. A seekable file object is streamed from its
        current position (botocore needs the length, so it must be seekable);
        anything else is spooled first (to memory, then to a temporary file).
        """
        if isinstance(data, (bytes, bytearray, memoryview)):
            return bytes(data), len(data)
        if not hasattr(data, "read"):
            raise TypeError(f"data must be bytes or a binary file object, not {type(data).__name__}")
        try:
            if data.seekable():
                start = data.tell()
                end = data.seek(0, io.SEEK_END)
                data.seek(start)
                return data, end - start
        except (AttributeError, OSError):
            pass
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MAX)  # noqa: SIM115 - closed by put
        while chunk := data.read(1 << 20):
            spool.write(chunk)
        size = spool.tell()
        spool.seek(0)
        return spool, size

    # -- the BlobStore protocol ----------------------------------------------------

    def put(
        self, key: str, data: bytes | BinaryIO, *, if_match: str | None = None, if_none_match: bool = False
    ) -> BlobInfo:
        """Store ``data`` under ``key`` (one PUT; atomic on S3); conditions as in ``blobs.py``.

        The returned ``last_modified`` is the server's Date header of the PUT
        response (S3 does not return LastModified from PutObject), which is
        the object's time to within the request's duration.
        """
        full = self._full(key)
        if if_match is not None and if_none_match:
            raise ValueError("put: give if_match or if_none_match, not both")
        body, size = self._body(data)
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": full, "Body": body}
        if if_none_match:
            params["IfNoneMatch"] = "*"
        if if_match is not None:
            params["IfMatch"] = f'"{_unquote(if_match)}"'
        try:
            response = self._client.put_object(**params)
        except ClientError as exc:
            code, status = self._status(exc)
            conditional = if_none_match or if_match is not None
            if conditional and (status in (409, 412) or (if_match is not None and self._not_found(exc))):
                log.debug("conditional put of %s failed: %s (HTTP %s)", full, code, status)
                raise PreconditionFailedError(key) from None
            raise self._error("store", key, exc) from None
        except BotoCoreError as exc:
            raise self._error("store", key, exc) from None
        finally:
            if isinstance(body, tempfile.SpooledTemporaryFile):
                body.close()
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        try:
            when = parsedate_to_datetime(headers["date"])
        except (KeyError, TypeError, ValueError):
            when = datetime.now(UTC)
        return self._info(key, size, when, response.get("ETag", ""))

    def get(self, key: str) -> bytes:
        """The whole object; BlobNotFoundError if there is none."""
        _, stream = self.open(key)
        with stream:
            return stream.read()

    def open(self, key: str) -> tuple[BlobInfo, BinaryIO]:
        """The object's info and a buffered stream of its body (read as you go)."""
        info, response = self._object("read", key, self._client.get_object)
        stream = io.BufferedReader(_BodyReader(response["Body"], self._where(key)), buffer_size=1 << 16)
        return info, stream  # type: ignore[return-value]  # BufferedReader is a BinaryIO

    def stat(self, key: str) -> BlobInfo:
        """The object's info (a HEAD request); BlobNotFoundError if there is none."""
        info, _ = self._object("stat", key, self._client.head_object)
        return info

    def _object(self, action: str, key: str, request: Callable[..., dict[str, Any]]) -> tuple[BlobInfo, dict[str, Any]]:
        """A GET or HEAD of ``key``: the object's info and the response; BlobNotFoundError if
        there is no object, BlobStoreError if the request fails."""
        try:
            response = request(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if self._not_found(exc):
                raise BlobNotFoundError(key) from None
            raise self._error(action, key, exc) from None
        except BotoCoreError as exc:
            raise self._error(action, key, exc) from None
        return self._info(key, response["ContentLength"], response["LastModified"], response["ETag"]), response

    def delete(self, key: str) -> bool:
        """Remove the object; False if there was none.

        S3's DELETE succeeds whether or not the object exists, so a HEAD comes
        first; two concurrent deletes of one object may therefore both say True.
        """
        try:
            self.stat(key)
        except BlobNotFoundError:
            return False
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._full(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._error("delete", key, exc) from None
        return True

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        """Objects whose key starts with ``prefix``, page by page (``page_size`` keys per request)."""
        check_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[BlobInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix, PaginationConfig={"PageSize": self.page_size}
        )
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    full: str = item["Key"]
                    key = full[len(self.prefix) :]
                    try:
                        check_key(key)
                    except ValueError:
                        log.debug("list: skipping %r, not a valid key", full)
                        continue
                    yield self._info(key, item["Size"], item["LastModified"], item["ETag"])
        except (ClientError, BotoCoreError) as exc:
            raise self._error("list", prefix, exc) from None

    def check(self) -> None:
        """Raise BlobStoreError unless the bucket answers a HEAD request (cheap; no listing)."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code, status = self._status(exc)
            if status == 404 or code in ("NoSuchBucket", "NotFound"):
                raise BlobStoreError(f"S3 bucket {self.bucket!r} does not exist") from None
            raise self._error("reach bucket", "", exc) from None
        except BotoCoreError as exc:
            raise self._error("reach bucket", "", exc) from None

    def close(self) -> None:
        """Close the client's connection pool."""
        self._client.close()
