"""A client for the autopgo HTTP API: upload profiles, fetch merged ones, list and delete.

The API (served by ``autopgo server``)::

    POST   /api/profile/{app}   body: a pprof profile  -> 201 {"key": "<staged key>"}
    GET    /api/profile/{app}   the merged profile (?trim=pgo: trimmed for Go's PGO)
    GET    /api/profile         {"profiles": [{"key", "size", "lastModified"}]}
    DELETE /api/profile/{app}   -> 202, the app's profiles are deleted asynchronously

Errors come back as ``{"message": "..."}``. A server with a token wants
``Authorization: Bearer <token>`` on writes; the client sends the token, when it
has one, on every request.

Every failure, whether the server said no, the network failed, the reply made no
sense or a local file could not be read or written, raises ``ClientError`` with a
one-line message fit to show a user as is. Nothing else escapes, so callers need
only one ``except``.

Example::

    with Client("http://pgo.internal:8080", token=token) as api:
        api.upload("checkout", open("cpu.pb.gz", "rb"))
        api.download_to("checkout", "default.pgo", trim=True)
"""

from __future__ import annotations

import email.utils
import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from .atomicfile import atomic_writer
from .errors import AutopgoError
from .names import MAX_APP_NAME, is_valid_app_name
from .storage import file_etag

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_TIMEOUT", "AsyncClient", "Client", "ClientError", "Download", "ProfileInfo", "Saved"]

DEFAULT_BASE_URL = "http://localhost:8080"
DEFAULT_TIMEOUT = 30.0
# Uploads and downloads move through memory this many bytes at a time.
CHUNK_SIZE = 64 << 10
# Longest server message quoted in an error, so that one odd reply cannot flood a terminal.
_MAX_MESSAGE = 300


class ClientError(AutopgoError):
    """A request to the API failed; the message is one line that says which and why.

    ``status`` is the HTTP status when the server answered (e.g. 404 for an app
    without profiles), else None: the server could not be reached, the
    connection broke, or the failure was local.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Download:
    """A merged profile as served, with what is needed to fetch it again only if it changed.

    ``not_modified`` is True, and ``content`` empty, when the caller passed the
    current ETag as ``if_none_match``: the copy it has is still current.
    """

    content: bytes
    etag: str | None
    last_modified: datetime | None
    not_modified: bool = False


@dataclass(frozen=True, slots=True)
class Saved:
    """What ``download_to`` did: ``changed`` is False when the file already held the
    server's profile and was left as it was; ``size`` is the file's size in bytes."""

    path: Path
    size: int
    changed: bool
    etag: str | None


@dataclass(frozen=True, slots=True)
class ProfileInfo:
    """One app's merged profile in the store."""

    app: str
    size: int
    last_modified: datetime  # timezone-aware


class Client:
    """A connection pool to one autopgo API server; use it as a context manager or close() it.

    ``timeout`` (seconds, None for none) bounds each step of a request:
    connecting, each write and each read, not the whole transfer, so a large
    profile on a slow link is not cut off while data still moves.
    ``transport`` replaces the network (e.g. ``httpx.MockTransport`` in tests).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        token: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url = _parse_base_url(base_url)
        self._timeout = timeout
        self._http = httpx.Client(base_url=url, headers=_headers(token), timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def upload(self, app: str, data: bytes | BinaryIO, *, workload: str = "") -> str:
        """Send a pprof profile (gzip or raw) for ``app`` (and ``workload``, if given) to be
        merged; return its staged key.

        A file object is sent from its current position in chunks, not read into
        memory, when its size can be known (a regular file, ``io.BytesIO``).
        The server needs the length before the body, so a pipe such as standard
        input is read whole first. The server checks the profile, not the client.
        """
        path = _app_path(app)
        body: bytes | Iterator[bytes]
        if isinstance(data, (bytes, bytearray, memoryview)):
            body = bytes(data)
            length = len(data)
        else:
            body, length = _file_body(data)
        request = self._http.build_request(
            "POST",
            path,
            params=_workload(workload),
            content=body,
            headers={"Content-Length": str(length), "Content-Type": "application/octet-stream"},
        )
        with self._send(request) as response:
            response.read()
            return _staged_key(request, response)

    def download(self, app: str, *, trim: bool = False, if_none_match: str | None = None) -> Download:
        """The merged profile of ``app``, in memory; ClientError with status 404 if it has none.

        ``trim`` asks for the form trimmed to what Go's PGO reads (smaller, same
        build result). With ``if_none_match`` set to an ETag from an earlier
        download, an unchanged profile is not sent again (``not_modified``).
        Use ``download_to`` for a file: it streams.
        """
        headers = {"If-None-Match": if_none_match} if if_none_match else {}
        request = self._http.build_request("GET", _app_path(app), params=_trim(trim), headers=headers)
        with self._send(request, ok=(304,)) as response:
            if response.status_code == 304:
                return Download(b"", _etag(response), _last_modified(response), not_modified=True)
            content = response.read()
        return Download(content, _etag(response), _last_modified(response))

    def download_to(self, app: str, path: str | os.PathLike[str], *, trim: bool = False) -> Saved:
        """Stream the merged profile of ``app`` into ``path``, unless ``path`` already holds it.

        The ETag of a download is a hash of its bytes (``profiling.storage.etags``), so
        the tag of the file at ``path``, if there is one, goes out as
        ``If-None-Match``; if the server answers 304 the file is left untouched
        (not rewritten: its mtime stays) and ``Saved.changed`` is False.
        Otherwise the bytes go to a temporary file next to ``path`` that
        replaces it only once complete and synced, so a failed or interrupted
        download leaves ``path`` as it was (or absent) and no temporary file
        behind. A replaced file keeps its permissions; a new one gets the usual ones.
        """
        target = Path(path)
        if target.is_dir():
            raise ClientError(f"cannot write {target}: is a directory")
        have = _file_etag(target)
        headers = {"If-None-Match": have} if have else {}
        request = self._http.build_request("GET", _app_path(app), params=_trim(trim), headers=headers)
        written = 0
        with self._send(request, ok=(304,)) as response:
            if response.status_code == 304:
                return Saved(target, _size(target), changed=False, etag=_etag(response))
            try:
                with atomic_writer(target) as f:
                    for chunk in response.iter_bytes(CHUNK_SIZE):
                        f.write(chunk)
                        written += len(chunk)
            except OSError as exc:
                raise ClientError(f"cannot write {target}: {_strerror(exc)}") from exc
        return Saved(target, written, changed=True, etag=_etag(response))

    def delete(self, app: str) -> None:
        """Ask the server to delete everything stored for ``app``; ClientError 404 if nothing is.

        The server accepts the request (202) and deletes in the background, so
        the app may still be listed for a moment.
        """
        request = self._http.build_request("DELETE", _app_path(app))
        with self._send(request) as response:
            response.read()

    def list(self) -> list[ProfileInfo]:
        """The merged profiles in the store, one per app, in the server's order.

        An upload that is not merged yet does not appear.
        """
        request = self._http.build_request("GET", "/api/profile")
        with self._send(request) as response:
            reply = _json(request, response)
        entries = reply.get("profiles") if isinstance(reply, dict) else None
        if not isinstance(entries, list):
            raise _unexpected(request, 'no "profiles" list in the reply')
        return [_profile_info(request, entry) for entry in entries]

    @contextmanager
    def _send(self, request: httpx.Request, ok: tuple[int, ...] = ()) -> Iterator[httpx.Response]:
        """Send ``request`` and yield the response, its body not read yet.

        Turns an error status, and any transport failure before or while the
        body is read inside the ``with`` block, into ClientError.
        """
        try:
            response = self._http.send(request, stream=True)
        except _BodyReadError as exc:
            raise ClientError(f"cannot read the upload: {exc}") from exc.__cause__
        except httpx.HTTPError as exc:
            raise _transport_error(request, exc, self._timeout) from exc
        try:
            if not (response.is_success or response.status_code in ok):
                response.read()
                raise _status_error(request, response, has_token="Authorization" in request.headers)
            yield response
        except httpx.HTTPError as exc:
            raise _transport_error(request, exc, self._timeout) from exc
        finally:
            response.close()


class AsyncClient:
    """Uploads from an event loop, for scrapes that keep many requests open at once.

    Sends what ``Client.upload`` sends and fails the same way (ClientError,
    one line); only uploads of bytes are needed there.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        token: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_connections: int = 64,
    ) -> None:
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=_parse_base_url(base_url),
            headers=_headers(token),
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections),
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client's connections; ``async with`` does this on leaving."""
        await self._http.aclose()

    async def upload(self, app: str, data: bytes, *, workload: str = "") -> str:
        """Send a pprof profile for ``app`` (and ``workload``, if given) to be merged; return its staged key."""
        request = self._http.build_request(
            "POST",
            _app_path(app),
            params=_workload(workload),
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        try:
            response = await self._http.send(request)
        except httpx.HTTPError as exc:
            raise _transport_error(request, exc, self._timeout) from exc
        if not response.is_success:
            raise _status_error(request, response, has_token="Authorization" in request.headers)
        return _staged_key(request, response)


def _transport_error(request: httpx.Request, exc: httpx.HTTPError, timeout: float | None) -> ClientError:
    url = _display_url(request.url)
    after = f" after {timeout:g}s" if timeout is not None else ""
    if isinstance(exc, httpx.ConnectTimeout):
        return ClientError(f"cannot reach {url}: no connection{after}")
    if isinstance(exc, httpx.WriteTimeout):
        return ClientError(f"cannot reach {url}: sending the request timed out{after}")
    if isinstance(exc, httpx.TimeoutException):
        return ClientError(f"cannot reach {url}: no response{after}")
    if isinstance(exc, (httpx.ConnectError, httpx.UnsupportedProtocol)):
        return ClientError(f"cannot reach {url}: {_detail(exc)}")
    return ClientError(f"connection to {url} failed: {_detail(exc)}")


class _BodyReadError(Exception):
    """Reading the caller's file failed while the upload was being sent."""


def _headers(token: str | None) -> dict[str, str]:
    headers = {"User-Agent": "autopgo-client"}
    if token:
        if not token.isascii() or not token.isprintable() or " " in token:
            raise ClientError("invalid API token: use printable ASCII without spaces")
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _staged_key(request: httpx.Request, response: httpx.Response) -> str:
    reply = _json(request, response)
    key = reply.get("key") if isinstance(reply, dict) else None
    if not isinstance(key, str) or not key:
        raise _unexpected(request, 'no "key" in the reply')
    return key


def _parse_base_url(base_url: str) -> httpx.URL:
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ClientError(f"invalid API URL {base_url!r}: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ClientError(f"invalid API URL {base_url!r}: use http://HOST[:PORT]")
    return url


def _app_path(app: str) -> str:
    if not is_valid_app_name(app):
        raise ClientError(f"invalid app name {app!r}: use 1 to {MAX_APP_NAME} characters of a-z, 0-9 and '-'")
    return f"/api/profile/{app}"


def _workload(workload: str) -> dict[str, str]:
    return {"workload": workload} if workload else {}


def _trim(trim: bool) -> dict[str, str]:
    return {"trim": "pgo"} if trim else {}


def _file_body(f: BinaryIO) -> tuple[bytes | Iterator[bytes], int]:
    """The body and its length: chunks of a file of known size, else all its bytes."""
    length = _remaining(f)
    if length is None:
        try:
            data = f.read()
        except OSError as exc:
            raise ClientError(f"cannot read the upload: {_strerror(exc)}") from exc
        return data, len(data)
    return _chunks(f, length), length


def _remaining(f: BinaryIO) -> int | None:
    """Bytes left in ``f`` from its position, or None if that cannot be known without reading."""
    try:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            return None
        return max(info.st_size - f.tell(), 0)
    except (AttributeError, OSError):
        pass
    try:
        if not f.seekable():
            return None
        here = f.tell()
        end = f.seek(0, os.SEEK_END)
        f.seek(here)
        return max(end - here, 0)
    except (AttributeError, OSError):
        return None


def _chunks(f: BinaryIO, length: int) -> Iterator[bytes]:
    """``length`` bytes of ``f``; fewer if the file shrank, which the connection then reports."""
    left = length
    while left > 0:
        try:
            chunk = f.read(min(CHUNK_SIZE, left))
        except OSError as exc:
            raise _BodyReadError(_strerror(exc)) from exc
        if not chunk:
            return
        left -= len(chunk)
        yield chunk


def _status_error(request: httpx.Request, response: httpx.Response, *, has_token: bool) -> ClientError:
    status = response.status_code
    reason = response.reason_phrase or _phrase(status)
    text = f"{request.method} {_display_url(request.url)}: {status} {reason}".rstrip()
    message = _server_message(response)
    if message and message.lower() != reason.lower():
        text += f": {message}"
    if status == 401 and not has_token:
        text += " (no API token was given)"
    return ClientError(text, status=status)


def _server_message(response: httpx.Response) -> str | None:
    """The ``message`` of a JSON error body, on one line and not too long; None if there is none."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    message = body.get("message") if isinstance(body, dict) else None
    if message is None or isinstance(message, (dict, list)):
        return None
    return _clip(" ".join(str(message).split())) or None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _json(request: httpx.Request, response: httpx.Response) -> Any:
    try:
        return json.loads(response.read())
    except ValueError:
        raise _unexpected(request, "the reply is not JSON") from None


def _profile_info(request: httpx.Request, entry: object) -> ProfileInfo:
    if isinstance(entry, dict):
        app, size, stamp = entry.get("key"), entry.get("size"), entry.get("lastModified")
        if isinstance(app, str) and isinstance(size, int) and not isinstance(size, bool) and isinstance(stamp, str):
            try:
                when = datetime.fromisoformat(stamp)
            except ValueError:
                pass
            else:
                if when.tzinfo is not None:
                    return ProfileInfo(app, size, when)
    raise _unexpected(request, f"bad profile entry {_clip(json.dumps(entry))}")


def _unexpected(request: httpx.Request, why: str) -> ClientError:
    return ClientError(f"unexpected reply to {request.method} {_display_url(request.url)}: {why}")


def _file_etag(path: Path) -> str | None:
    """The entity tag of the regular file at ``path``; None if there is none, or it cannot be read
    (then the download simply replaces it, or says why it cannot)."""
    try:
        return file_etag(path) if path.is_file() else None
    except OSError:
        return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {_strerror(exc)}") from exc


def _etag(response: httpx.Response) -> str | None:
    return response.headers.get("ETag")


def _last_modified(response: httpx.Response) -> datetime | None:
    value = response.headers.get("Last-Modified")
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def _display_url(url: httpx.URL) -> str:
    """``url`` without any user name or password in it."""
    return str(url.copy_with(username=None, password=None)) if url.userinfo else str(url)


def _detail(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if text.startswith("[Errno ") and "] " in text:
        text = text.split("] ", 1)[1]  # "[Errno 111] Connection refused" -> "Connection refused"
    return _clip(text) or type(exc).__name__


def _strerror(exc: OSError) -> str:
    return exc.strerror or _detail(exc)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."
