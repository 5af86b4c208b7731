"""Checking an uploaded profile before it is staged, and the form it is stored in.

The engine (``profiling.codec.decode_tables``) decodes and validates it
exactly as google/pprof would; unless any profile type is accepted, it must
also be one Go's PGO can use, so that whatever is staged can later be merged
and trimmed: ``check_pgo_usable`` refuses precisely the profiles for which
``profiling.trim.pgo_edges`` (the compiler's own reading) raises. It works on
the decoded columns rather than calling ``pgo_edges``, because building the
row objects and the edge map costs a third of an upload's CPU time, and only
the verdict is needed here.
"""

from __future__ import annotations

import zlib

from profiling.codec import GZIP_MAGIC, decode_tables
from profiling.errors import ProfileError
from profiling.model import Profile
from profiling.tables import ProfileTables
from profiling.trim import pgo_value_index

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


def check_pgo_usable(t: ProfileTables) -> None:
    """Raise ProfileError where ``pgo_edges`` would: Go's PGO cannot use this profile.

    The compiler weighs each sample by its first ``samples/count`` or
    ``cpu/nanoseconds`` value, refuses negative weights, and looks at the leaf
    location and its caller of every sample with a non-zero weight; at least
    one function among those must have a ``start_line``.
    """
    index = pgo_value_index(Profile(sample_types=list(t.header.sample_types)))
    function_start = dict(zip(t.function_ids, t.function_start_lines))
    starts, line_functions = t.line_starts, t.line_function_ids
    has_start_line = {
        location_id
        for location_id, a, b in zip(t.location_ids, starts, starts[1:])
        if any(function_start[f] for f in line_functions[a:b])
    }
    live = witnessed = False
    for ids, values in zip(t.sample_location_ids, t.sample_values):
        weight = values[index]
        if weight <= 0 or not ids:
            if weight < 0:
                raise ProfileError("cannot trim a profile with negative sample values for PGO")
            continue
        live = True
        witnessed = witnessed or ids[0] in has_start_line or (len(ids) > 1 and ids[1] in has_start_line)
    if live and not witnessed:
        raise ProfileError(
            "profile has no Function.start_line data, which Go's PGO needs "
            "(was the program built with Go older than 1.20?)"
        )


def stored_form(data: bytes) -> bytes:
    """``data`` gzip-compressed, as staged keys (``.pb.gz``) promise; gzip input as it came."""
    if data.startswith(GZIP_MAGIC):
        return data
    deflate = zlib.compressobj(_STORE_COMPRESSLEVEL, zlib.DEFLATED, 31)
    return deflate.compress(data) + deflate.flush()
