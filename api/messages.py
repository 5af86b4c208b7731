"""What a handler takes (``Request``) and gives back (``Response``).

Handlers never touch sockets: the server builds a ``Request`` from the parsed
request line and headers, and writes the ``Response``. That keeps handlers
plain functions of their input, and the socket code in one place.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, BinaryIO

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class Request:
    """One request as a handler sees it: method, path, query, headers, the route's app, and its body on demand."""

    method: str
    path: str  # as sent, without the query
    query: Mapping[str, list[str]]
    headers: Message
    app: str | None  # the percent-decoded, validated {app} of the route, if it has one
    read_body: Callable[[], bytes]  # the body, within the size limit (ApiError otherwise)

    def query_value(self, name: str) -> str | None:
        """The last value of a query parameter, or None if absent."""
        values = self.query.get(name)
        return values[-1] if values else None


@dataclass(slots=True)
class Response:
    """A status, headers and a body: bytes, or a stream of ``Content-Length`` bytes.

    For HEAD the server sends the headers only; a handler may answer HEAD and
    GET alike.
    """

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stream: BinaryIO | None = None

    def close(self) -> None:
        """Close the body stream, if any; the server calls it once the response is sent (or sending failed)."""
        if self.stream is not None:
            self.stream.close()


def json_response(status: int, data: Any, headers: Mapping[str, str] | None = None) -> Response:
    """A ``Response`` with ``data`` as a compact JSON body (and a newline), plus any ``headers``."""
    body = json.dumps(data, separators=(",", ":")).encode() + b"\n"
    return Response(status, body, {"Content-Type": JSON, **(headers or {})})
