"""Application names and the blob key layout built from them."""

from __future__ import annotations

import re
from typing import TypeGuard

MAX_APP_NAME = 63
_APP_NAME = re.compile(r"[a-z0-9-]{1,%d}" % MAX_APP_NAME)


def is_valid_app_name(app: object) -> TypeGuard[str]:
    """1 to 63 characters, each a lower-case letter, a digit or '-'."""
    return isinstance(app, str) and _APP_NAME.fullmatch(app) is not None


def check_app_name(app: str) -> str:
    """Return ``app`` if valid, else raise ValueError saying why."""
    if not is_valid_app_name(app):
        raise ValueError(
            f"invalid app name {app!r}: use 1 to {MAX_APP_NAME} characters of a-z, 0-9 and '-'"
        )
    return app


# Key layout in the blob store, per app:
#   <app>/default.pgo                                   the merged profile
#   <app>/staging/<20-digit ns time>-<16 hex>.pb.gz     uploads waiting to be merged
#   <app>/rejected/<staged name>[.reason]               uploads that could not be merged, and why
#   <app>/batch.json                                    the merge batch under way (see batches.py)
#   <app>/deleted/<20-digit ns time>                    when the app was deleted (tombstones)
MERGED_NAME = "default.pgo"
STAGING = "staging"
REJECTED = "rejected"
BATCH_NAME = "batch.json"
DELETED = "deleted"


def app_prefix(app: str) -> str:
    return f"{check_app_name(app)}/"


def merged_key(app: str) -> str:
    return f"{check_app_name(app)}/{MERGED_NAME}"


def staging_prefix(app: str) -> str:
    return f"{check_app_name(app)}/{STAGING}/"


def rejected_prefix(app: str) -> str:
    return f"{check_app_name(app)}/{REJECTED}/"


def batch_key(app: str) -> str:
    return f"{check_app_name(app)}/{BATCH_NAME}"


def tombstone_prefix(app: str) -> str:
    return f"{check_app_name(app)}/{DELETED}/"


def tombstone_key(app: str, when_ns: int) -> str:
    return f"{tombstone_prefix(app)}{when_ns:020d}"


def time_of(key: str) -> int:
    """The nanosecond time in a staging or tombstone key (0 if it has none)."""
    stamp = key.rsplit("/", 1)[-1][:20]
    return int(stamp) if stamp.isdigit() else 0


def new_staging_key(app: str, now_ns: int | None = None) -> str:
    """A fresh staging key; keys sort by upload time and never collide.

    The random suffix keeps keys unique even for uploads in the same nanosecond.
    """
    import secrets
    import time

    stamp = time.time_ns() if now_ns is None else now_ns
    return f"{staging_prefix(app)}{stamp:020d}-{secrets.token_hex(8)}.pb.gz"


def app_of(key: str) -> str | None:
    """The app a key belongs to, or None if the key is not in the layout."""
    app, sep, _ = key.partition("/")
    return app if sep and is_valid_app_name(app) else None


def is_merged_key(key: str) -> bool:
    app = app_of(key)
    return app is not None and key == f"{app}/{MERGED_NAME}"
