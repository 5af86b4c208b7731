"""Validators for downloads: ETags, dates, and ``If-None-Match``.

A store's etag becomes an HTTP entity tag by quoting it (``"abc"``); the
trimmed form of the same object gets its own tag (``"abc-pgo"``), since its
bytes differ. ``If-None-Match`` is compared weakly, as RFC 9110 says for GET
and HEAD.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.message import Message
from email.utils import format_datetime

_ENTITY_TAG = re.compile(r'\s*(\*|(?:W/)?"[^"]*")\s*(?:,|$)')
_NOT_ETAGC = re.compile(r'[^\x21\x23-\x7e]')


def http_etag(store_etag: str, variant: str | None = None) -> str:
    opaque = store_etag.strip()
    if opaque.startswith("W/"):
        opaque = opaque[2:]
    opaque = _NOT_ETAGC.sub("", opaque.strip('"'))
    if variant:
        opaque = f"{opaque}-{variant}"
    return f'"{opaque}"'


def not_modified(headers: Message, etag: str) -> bool:
    """True if the request's ``If-None-Match`` names ``etag`` (or is ``*``)."""
    for value in headers.get_all("If-None-Match") or []:
        for match in _ENTITY_TAG.finditer(value):
            tag = match.group(1)
            if tag == "*" or tag.removeprefix("W/") == etag:
                return True
    return False


def http_date(when: datetime) -> str:
    """``Last-Modified`` form: ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    return format_datetime(when.astimezone(UTC).replace(microsecond=0), usegmt=True)


def rfc3339(when: datetime) -> str:
    """``2025-01-01T12:00:00.123Z``: UTC, milliseconds."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
