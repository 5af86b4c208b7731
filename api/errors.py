"""The one error type handlers raise: an HTTP status and a message for the client.

The server turns it into a JSON body ``{"message": ...}``; the message is one
line, fit to show a user as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

from profiling.errors import AutopgoError


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
