"""The key rules every blob store enforces, so code that works against one store works against the others.

A key is a relative ``/``-separated path; ``check_key`` says what that allows and why.
"""

from __future__ import annotations

MAX_KEY_BYTES = 1024  # the S3 limit, applied everywhere for parity
# Segments starting with this are the stores' own (temporary and lock files).
RESERVED_SEGMENT_PREFIX = ".autopgo-"


def segment_problem(segment: str) -> str | None:
    """Why ``segment`` cannot be one ``/``-separated part of a key, or None."""
    if segment == "":
        return "empty path segment"
    if segment in (".", ".."):
        return f"{segment!r} path segment"
    if segment.startswith(RESERVED_SEGMENT_PREFIX):
        return f"segment starting with {RESERVED_SEGMENT_PREFIX!r} is reserved"
    return None


def char_problem(text: str) -> str | None:
    """Why ``text`` cannot be (part of) a key, for its characters or its length, or None."""
    if "\x00" in text:
        return "NUL character"
    if "\\" in text:
        return "backslash"
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return "not valid Unicode text"
    if size > MAX_KEY_BYTES:
        return f"longer than {MAX_KEY_BYTES} bytes"
    return None


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid blob key, else raise ValueError saying why.

    A key is a relative ``/``-separated path: not empty, no leading or trailing
    ``/``, no empty, ``.`` or ``..`` segments, no NUL or backslash, at most
    1024 UTF-8 bytes, and no segment starting with ``.autopgo-`` (reserved for
    the stores' temporary and lock files). These rules keep a key from ever
    naming something outside a FileStore's root, and S3 keys the same shape.
    """
    if not isinstance(key, str):
        raise ValueError(f"invalid key {key!r}: not a string")
    if key == "":
        raise ValueError("invalid key '': empty")
    problem = char_problem(key)
    if problem is None and key.startswith("/"):
        problem = "absolute path"
    if problem is None and key.endswith("/"):
        problem = "ends with '/'"
    if problem is None:
        problem = next(filter(None, map(segment_problem, key.split("/"))), None)
    if problem is not None:
        raise ValueError(f"invalid key {key!r}: {problem}")
    return key


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if some valid key could start with it, else raise ValueError.

    Every complete segment (before the last ``/``) must be a valid key segment;
    the trailing partial segment may be anything without NUL or backslash.
    """
    if not isinstance(prefix, str):
        raise ValueError(f"invalid prefix {prefix!r}: not a string")
    if prefix == "":
        return prefix
    problem = char_problem(prefix)
    if problem is None and prefix.startswith("/"):
        problem = "absolute path"
    if problem is None:
        problem = next(filter(None, map(segment_problem, prefix.split("/")[:-1])), None)
    if problem is not None:
        raise ValueError(f"invalid prefix {prefix!r}: {problem}")
    return prefix
