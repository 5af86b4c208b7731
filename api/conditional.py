"""Validators for downloads: ETags, dates, ``If-None-Match`` and ``If-Modified-Since``.

A profile's entity tag is a hash of the bytes served (``profiling.storage.etags``), so
the trimmed form has a tag of its own, and a client can compute the tag of a
file it already has. ``If-None-Match`` is compared weakly, as RFC 9110 says
for GET and HEAD; ``If-Modified-Since`` is evaluated only without it (§13.2.2).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.message import Message
from email.utils import format_datetime, parsedate_to_datetime

_ENTITY_TAG = re.compile(r'\s*(\*|(?:W/)?"[^"]*")\s*(?:,|$)')


def not_modified(method: str, headers: Message, etag: str, last_modified: datetime) -> bool:
    """Whether a GET or HEAD may be answered 304, by RFC 9110 §13.2.2 steps 3 and 4.

    ``If-None-Match``, when present, decides alone: 304 if it names ``etag``
    (or is ``*``). Otherwise a valid ``If-Modified-Since`` gives 304 if
    ``last_modified``, to the second as ``Last-Modified`` sends it, is not later.
    """
    if method not in ("GET", "HEAD"):
        return False
    if_none_match = headers.get_all("If-None-Match")
    if if_none_match:
        return _names(if_none_match, etag)
    since = _if_modified_since(headers)
    return since is not None and last_modified.replace(microsecond=0) <= since


def is_conditional(headers: Message) -> bool:
    """Whether a request carries a validator that ``not_modified`` reads."""
    return "If-None-Match" in headers or "If-Modified-Since" in headers


def _names(values: list[str], etag: str) -> bool:
    for value in values:
        for match in _ENTITY_TAG.finditer(value):
            tag = match.group(1)
            if tag == "*" or tag.removeprefix("W/") == etag:
                return True
    return False


def _if_modified_since(headers: Message) -> datetime | None:
    """The date of ``If-Modified-Since``; None when absent, repeated or not an HTTP-date (§13.1.3)."""
    values = headers.get_all("If-Modified-Since") or []
    if len(values) != 1:
        return None
    try:
        when = parsedate_to_datetime(values[0])
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)  # the obsolete asctime form, which names no zone
    # HTTP-dates are in GMT; a date with a numeric zone is an email date, not one of them.
    return when if values[0].rstrip().endswith(" GMT") else None


def http_date(when: datetime) -> str:
    """``Last-Modified`` form: ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    return format_datetime(when.astimezone(UTC).replace(microsecond=0), usegmt=True)


def rfc3339(when: datetime) -> str:
    """``2025-01-01T12:00:00.123Z``: UTC, milliseconds."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
