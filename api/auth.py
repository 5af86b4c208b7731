"""The optional bearer token that guards writes (uploads and deletes), and reads on request.

With no token configured every request is let through. With one, a guarded
request needs ``Authorization: Bearer <token>``; the token is compared in
constant time (``hmac.compare_digest``) so its value cannot be probed by timing.
Writes are always guarded. With ``protect_reads`` every other endpoint is too,
except the probes (``/api/health``, ``/api/ready``), which orchestrators call
without credentials: profiles can carry pprof labels with request data.
"""

from __future__ import annotations

import hmac
from email.message import Message
from http import HTTPStatus

from .errors import ApiError

WRITE_METHODS = frozenset({"POST", "DELETE", "PUT", "PATCH"})
OPEN_PATHS = frozenset({"/api/health", "/api/ready"})
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="autopgo"'}


class BearerAuth:
    """Which requests need the bearer token, and whether a request carries it; with no token, none do."""

    def __init__(self, token: str | None, *, protect_reads: bool = False) -> None:
        if token is not None and not token.strip():
            raise ValueError("the API token must not be empty")
        if protect_reads and not token:
            raise ValueError("protecting reads needs an API token")
        self._token = token.encode() if token else None
        self.protect_reads = protect_reads

    @property
    def enabled(self) -> bool:
        """Whether a token is configured (without one every request is let through)."""
        return self._token is not None

    def guards(self, method: str, path: str) -> bool:
        """Whether a request for ``path`` with ``method`` needs the token."""
        if self._token is None:
            return False
        if method in WRITE_METHODS:
            return True
        return self.protect_reads and path not in OPEN_PATHS

    def require(self, headers: Message) -> None:
        """Return if the request may go on; ApiError 401 if it lacks the right token."""
        if self._token is None:
            return
        header = headers.get("Authorization")
        if header is None:
            raise ApiError(HTTPStatus.UNAUTHORIZED, "missing bearer token", _CHALLENGE)
        scheme, _, presented = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), self._token):
            raise ApiError(HTTPStatus.UNAUTHORIZED, "invalid bearer token", _CHALLENGE)
