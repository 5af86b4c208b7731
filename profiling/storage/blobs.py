"""The blob store protocol: where uploads are staged and merged profiles kept.

Two implementations share it, chosen by URL with ``open_store``: the local
filesystem (``file:///abs/path`` or a plain path; the embedded default) and
S3 or any S3-compatible server (``s3://bucket/prefix?endpoint=...&region=...``).

Keys are ``/``-separated relative paths (see ``names.py`` for the layout).
Conditional writes let concurrent writers detect that they lost a race:
``put(..., if_none_match=True)`` creates only, ``put(..., if_match=etag)``
replaces only what was read; either raises ``PreconditionFailedError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """What a store says of one object: its key, size, when it was last written, and its version (etag)."""

    key: str
    size: int
    last_modified: datetime  # timezone-aware, UTC
    etag: str  # changes whenever the content is replaced


class BlobStore(Protocol):
    """Where uploads, merged profiles and the pipeline's records are kept: a folder or an S3 bucket."""

    def put(
        self, key: str, data: bytes | BinaryIO, *, if_match: str | None = None, if_none_match: bool = False
    ) -> BlobInfo:
        """Store ``data`` under ``key`` atomically (readers never see part of it).

        ``if_none_match``: only if no object exists. ``if_match``: only if the
        current object has this etag. Otherwise PreconditionFailedError.
        """
        ...

    def get(self, key: str) -> bytes:
        """The whole object; BlobNotFoundError if there is none."""
        ...

    def open(self, key: str) -> tuple[BlobInfo, BinaryIO]:
        """A stream of the object and what it is; BlobNotFoundError if there is none."""
        ...

    def stat(self, key: str) -> BlobInfo:
        """BlobNotFoundError if there is no object."""
        ...

    def delete(self, key: str) -> bool:
        """Remove the object; False if there was none."""
        ...

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        """Objects whose key starts with ``prefix``.

        In key order, except that some S3-compatible servers list a key whose
        next character sorts before '/' out of place; callers that need a
        strict order sort.
        """
        ...

    def check(self) -> None:
        """Raise BlobStoreError if the store cannot be used (for health checks)."""
        ...

    def close(self) -> None:
        """Release what the store holds, such as its connections."""
        ...
