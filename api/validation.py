"""Checking an uploaded profile before it is staged, and the form it is stored in.

The engine (``profiling.pprof.validate``, in ``precheck.py``) accepts exactly what its decoder accepts,
as google/pprof would; unless any profile type is accepted, the profile must
also be one Go's PGO can use, so that whatever is staged can later be merged
and trimmed.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

from profiling.errors import ProfileError
from profiling.pprof import GZIP_MAGIC, compress, validate

from .errors import ApiError, api_error


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an upload is refused: the HTTP status to answer with and a one-line message."""

    status: HTTPStatus
    message: str

    def error(self) -> ApiError:
        """The refusal as the ``ApiError`` to raise."""
        return ApiError(self.status, self.message)


def profile_problem(data: bytes, max_decompressed: int, require_pgo: bool) -> Refusal | None:
    """Why ``data`` is not a profile this server accepts, or None if it is: 413 when it is
    larger than ``max_decompressed`` once decompressed, 400 for anything else.

    A plain function of plain values, so that it can run in a worker process.
    """
    try:
        validate(data, max_decompressed=max_decompressed, require_pgo=require_pgo)
    except ProfileError as exc:
        refused = api_error(exc)
        return Refusal(refused.status, refused.message)
    return None


def stored_form(data: bytes) -> bytes:
    """``data`` gzip-compressed, as staged keys (``.pb.gz``) promise; gzip input as it came."""
    if data.startswith(GZIP_MAGIC):
        return data
    return compress(data)
