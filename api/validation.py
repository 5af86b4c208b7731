"""Checking an uploaded profile before it is staged, and the form it is stored in.

The engine (``profiling.codec.decode_tables``) decodes and validates it
exactly as google/pprof would; unless any profile type is accepted, it must
also be one Go's PGO can use (``profiling.trim.check_pgo_usable``), so that
whatever is staged can later be merged and trimmed.
"""

from __future__ import annotations

import zlib

from profiling.codec import GZIP_MAGIC, decode_tables
from profiling.errors import ProfileError
from profiling.trim import check_pgo_usable

_STORE_COMPRESSLEVEL = 1


def profile_problem(data: bytes, max_decompressed: int, require_pgo: bool) -> str | None:
    """Why ``data`` is not a profile this server accepts (one line), or None if it is.

    A plain function of plain values, so that it can run in a worker process.
    """
    try:
        tables = decode_tables(data, max_decompressed=max_decompressed)
    except ProfileError as exc:
        return f"bad profile: {exc}"
    if require_pgo:
        try:
            check_pgo_usable(tables)
        except ProfileError as exc:
            return f"profile cannot be used for Go's PGO: {exc}"
    return None


def stored_form(data: bytes) -> bytes:
    """``data`` gzip-compressed, as staged keys (``.pb.gz``) promise; gzip input as it came."""
    if data.startswith(GZIP_MAGIC):
        return data
    deflate = zlib.compressobj(_STORE_COMPRESSLEVEL, zlib.DEFLATED, 31)
    return deflate.compress(data) + deflate.flush()
