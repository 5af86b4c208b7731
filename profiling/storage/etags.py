"""Entity tags of profiles: a hash of their bytes.

The API sends it as the ETag of a download, and the client computes it for the
file it is about to replace and sends it as ``If-None-Match``: the file
usually has no other trace of where it came from (a ``default.pgo`` committed
to a repository has a fresh mtime and no side files), so only its content can
say whether the server's copy differs. Both sides use this module, so they agree.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

_HEX_DIGITS = 32  # 128 bits of SHA-256: a short tag, still far from any collision


def content_etag(data: bytes) -> str:
    """The quoted entity tag of ``data``: ``"<first 32 hex digits of its SHA-256>"``."""
    return _tag(hashlib.sha256(data))


def file_etag(path: str | os.PathLike[str]) -> str:
    """``content_etag`` of the file at ``path``, read in chunks; OSError if it cannot be read."""
    with open(path, "rb") as f:
        return _tag(hashlib.file_digest(f, "sha256"))


def _tag(digest: Any) -> str:
    return f'"{digest.hexdigest()[:_HEX_DIGITS]}"'
