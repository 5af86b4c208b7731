"""The request body: its size limits, and reading it within them.

A body comes with ``Content-Length`` or ``Transfer-Encoding: chunked``; the
same limit holds for both. A declared length over the limit is refused (413)
before a byte of the body is read; a chunked body as soon as it grows past
the limit. Without either header an upload is refused with 411. The server
closes a connection whose body was not read to the end, since the next
request on it would start somewhere in that body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from http import HTTPStatus
from io import BufferedIOBase
from typing import BinaryIO

from profiling.pprof import DEFAULT_MAX_DECOMPRESSED

from .errors import ApiError, bad_request

DEFAULT_MAX_BODY = 64 << 20
_MAX_LINE = 4096  # a chunk-size or trailer line
_MAX_TRAILERS = 100
_DIGITS = re.compile(r"[0-9]+")
_HEX = re.compile(rb"[0-9a-fA-F]+")


@dataclass(frozen=True, slots=True)
class Limits:
    """How large an upload may be: its body as sent, and the profile once decompressed (ValueError unless positive)."""

    max_body: int = DEFAULT_MAX_BODY  # bytes of request body, as sent
    max_decompressed: int = DEFAULT_MAX_DECOMPRESSED  # bytes of an uploaded profile once gunzipped

    def __post_init__(self) -> None:
        if self.max_body <= 0 or self.max_decompressed <= 0:
            raise ValueError("size limits must be positive")


def too_large(limit: int, size: int | None = None) -> ApiError:
    """An ``ApiError`` 413 for a body over ``limit`` bytes (of ``size`` bytes, if known)."""
    what = f"request body of {size} bytes" if size is not None else "request body"
    return ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"{what} is larger than the limit of {limit} bytes")


class BodyReader:
    """Reads one request's body from the connection, at most once."""

    def __init__(self, rfile: BinaryIO | BufferedIOBase, headers: Message, limit: int) -> None:
        self._rfile = rfile
        self._limit = limit
        self.chunked, self.length = _framing(headers)
        # a request without a body leaves nothing on the connection to skip
        self.consumed = not self.chunked and not self.length
        self._read = False

    @property
    def declared(self) -> bool:
        """Whether the headers frame a body, by ``Content-Length`` or chunked; ``read`` refuses (411) one without."""
        return self.chunked or self.length is not None

    def check_declared(self) -> None:
        """Refuse early (411, 413) what ``read`` would refuse, without reading anything."""
        if not self.declared:
            raise ApiError(HTTPStatus.LENGTH_REQUIRED, "Content-Length or Transfer-Encoding: chunked required")
        if self.length is not None and self.length > self._limit:
            raise too_large(self._limit, self.length)

    def read(self) -> bytes:
        """The whole body; ApiError 400, 411 or 413 if it is missing, malformed or too large."""
        if self._read:
            raise RuntimeError("the request body was already read")
        self._read = True
        self.check_declared()
        data = self._read_chunked() if self.chunked else self._read_exactly(self.length or 0)
        self.consumed = True
        return data

    def _read_exactly(self, n: int) -> bytes:
        data = self._rfile.read(n)
        if len(data) != n:
            raise bad_request(f"request body ended after {len(data)} of {n} bytes")
        return data

    def _read_chunked(self) -> bytes:
        out = bytearray()
        while True:
            line = self._line("chunk size")
            size_text = line.split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size_text):
                raise bad_request("bad chunk size in chunked request body")
            size = int(size_text, 16)
            if size == 0:
                break
            if len(out) + size > self._limit:
                raise too_large(self._limit)
            out += self._read_exactly(size)
            if self._rfile.read(2) != b"\r\n":
                raise bad_request("chunk data not followed by CRLF in chunked request body")
        for _ in range(_MAX_TRAILERS):
            if self._line("trailer").strip() == b"":
                return bytes(out)
        raise bad_request("too many trailer fields in chunked request body")

    def _line(self, what: str) -> bytes:
        line = self._rfile.readline(_MAX_LINE + 1)
        if not line.endswith(b"\n"):
            raise bad_request(f"bad {what} line in chunked request body")
        return line


def _framing(headers: Message) -> tuple[bool, int | None]:
    """(chunked, length) as the headers declare them; ApiError for what cannot be read safely."""
    encodings = headers.get_all("Transfer-Encoding") or []
    lengths = headers.get_all("Content-Length") or []
    if encodings:
        codings = [c.strip().lower() for e in encodings for c in e.split(",") if c.strip()]
        if codings != ["chunked"]:
            raise ApiError(HTTPStatus.NOT_IMPLEMENTED, f"unsupported Transfer-Encoding {', '.join(codings)!r}")
        if lengths:
            raise bad_request("Content-Length and Transfer-Encoding must not both be sent")
        return True, None
    if not lengths:
        return False, None
    values = {v.strip() for v in ",".join(lengths).split(",")}
    if len(values) != 1 or not _DIGITS.fullmatch(next(iter(values))):
        raise bad_request(f"bad Content-Length {', '.join(lengths)!r}")
    return False, int(values.pop())
