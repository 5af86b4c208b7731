"""The optional bearer token that guards writes (uploads and deletes).

With no token configured every request is let through. With one, a guarded
request needs ``Authorization: Bearer <token>``; the token is compared in
constant time (``hmac.compare_digest``) so its value cannot be probed by timing.
"""

from __future__ import annotations

import hmac
from email.message import Message
from http import HTTPStatus

from .errors import ApiError

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="autopgo"'}


class BearerAuth:
    def __init__(self, token: str | None) -> None:
        if token is not None and not token.strip():
            raise ValueError("the API token must not be empty")
        self._token = token.encode() if token else None

    @property
    def enabled(self) -> bool:
        return self._token is not None

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
