"""The one error type handlers raise: an HTTP status and a message for the client.

The server turns it into a JSON body ``{"message": ...}``; the message is one
line, fit to show a user as is. ``api_error`` is the one place where the
domain's errors (``AutopgoError``) become statuses: handlers let them rise, and
the server and the validation workers answer with what it gives.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus

from profiling.errors import (
    AutopgoError,
    BlobStoreError,
    PgoUnusableError,
    ProfileError,
    ProfileTooLargeError,
    StagingError,
)

log = logging.getLogger("autopgo.api")


class ApiError(AutopgoError):
    """A request that ends with an error status instead of the handler's answer."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = HTTPStatus(status)
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})

    def __str__(self) -> str:
        return f"{self.status.value} {self.message}"


def bad_request(message: str) -> ApiError:
    """An ``ApiError`` 400 with ``message``."""
    return ApiError(HTTPStatus.BAD_REQUEST, message)


def not_found(message: str) -> ApiError:
    """An ``ApiError`` 404 with ``message``."""
    return ApiError(HTTPStatus.NOT_FOUND, message)


def unavailable(message: str) -> ApiError:
    """An ``ApiError`` 503 with ``message``."""
    return ApiError(HTTPStatus.SERVICE_UNAVAILABLE, message)


def api_error(exc: AutopgoError) -> ApiError:
    """The answer to ``exc`` reaching the edge of a request: its status and a one-line message.

    A profile that is not one is the client's mistake (400, or 413 when too large); a
    store or staging failure is the server's, and passing (503, logged here with the
    store's reason). Anything else from the domain is a bug: 500, logged with its traceback.
    """
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ProfileTooLargeError):
        return ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(exc))
    if isinstance(exc, PgoUnusableError):
        return bad_request(f"profile cannot be used for Go's PGO: {exc}")
    if isinstance(exc, ProfileError):
        return bad_request(f"bad profile: {exc}")
    if isinstance(exc, StagingError):
        return unavailable(str(exc))
    if isinstance(exc, BlobStoreError):
        log.error("blob store failed: %s", exc)
        return unavailable(f"blob store unavailable: {exc}")
    log.error("unexpected %s", type(exc).__name__, exc_info=exc)
    return ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, "internal server error")
