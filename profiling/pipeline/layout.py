"""The blob key layout of an app: its merged profile, staged uploads, batch record and generation."""

from __future__ import annotations

import re

from ..names import WORKLOAD_PATTERN, check_app_name, check_workload, is_valid_app_name

# Key layout in the blob store, per app:
#   <app>/default.pgo                                   the merged profile
#   <app>/staging/<20-digit ns time>-<16 hex>-g<n>.pb.gz
#                                                       uploads waiting to be merged, staged under generation n
#   <app>/rejected/<staged name>[.reason]               uploads that could not be merged, and why
#   <app>/batch.json                                    the merge batch under way (see batches.py)
#   <app>/generation.json                               the app's generation (see generations.py)
#   <app>/deleted/<20-digit ns time>                    tombstones of deletes from before generations
#   <app>/parts.bin                                     partial merges by time, build and workload (parts.py),
#                                                       only for apps with a window, builds or workloads
# Keys written before generations have no "-g<n>" (see generations.py for how they count).
# An upload that names a workload has it before the generation: <ns time>-<16 hex>-w<workload>-g<n>.pb.gz.
MERGED_NAME = "default.pgo"
STAGING = "staging"
REJECTED = "rejected"
BATCH_NAME = "batch.json"
GENERATION_NAME = "generation.json"
TOMBSTONES = "deleted"
PARTS_NAME = "parts.bin"
_GENERATION_IN_NAME = re.compile(r"-g(\d+)\.pb\.gz")
_WORKLOAD_IN_NAME = re.compile(r"^\d{20}-[0-9a-f]{16}-w(%s)-g\d+\.pb\.gz$" % WORKLOAD_PATTERN)


def app_prefix(app: str) -> str:
    """``<app>/``, which every key of the app starts with; ValueError for an invalid app name."""
    return f"{check_app_name(app)}/"


def merged_key(app: str) -> str:
    """The key of the app's merged profile; ValueError for an invalid app name."""
    return f"{check_app_name(app)}/{MERGED_NAME}"


def staging_prefix(app: str) -> str:
    """Where the app's uploads wait to be merged; ValueError for an invalid app name."""
    return f"{check_app_name(app)}/{STAGING}/"


def rejected_prefix(app: str) -> str:
    """Where the app's uploads that could not be merged are kept; ValueError for an invalid app name."""
    return f"{check_app_name(app)}/{REJECTED}/"


def batch_key(app: str) -> str:
    """The key of the app's batch record; ValueError for an invalid app name."""
    return f"{check_app_name(app)}/{BATCH_NAME}"


def generation_key(app: str) -> str:
    """The key of the app's generation record; ValueError for an invalid app name."""
    return f"{check_app_name(app)}/{GENERATION_NAME}"


def parts_key(app: str) -> str:
    """The key of the app's parts (parts.py); ValueError for an invalid app name."""
    return f"{check_app_name(app)}/{PARTS_NAME}"


def workload_of(key: str) -> str:
    """The workload a staging (or rejected) key was uploaded for; "" when it names none."""
    found = _WORKLOAD_IN_NAME.match(key.rsplit("/", 1)[-1])
    return found.group(1) if found else ""


def tombstone_prefix(app: str) -> str:
    """Where deletes from before generations left the app's tombstones; ValueError for an invalid app name."""
    return f"{check_app_name(app)}/{TOMBSTONES}/"


def tombstone_key(app: str, when_ns: int) -> str:
    """A tombstone as deletes wrote them before generations (tests make such stores with it)."""
    return f"{tombstone_prefix(app)}{when_ns:020d}"


def time_of(key: str) -> int:
    """The nanosecond time in a staging or tombstone key (0 if it has none)."""
    stamp = key.rsplit("/", 1)[-1][:20]
    return int(stamp) if stamp.isdigit() else 0


def generation_of(key: str) -> int | None:
    """The generation a staging (or rejected) key was staged under; None for keys from before generations."""
    found = _GENERATION_IN_NAME.search(key.rsplit("/", 1)[-1])
    return int(found.group(1)) if found else None


def new_staging_key(app: str, now_ns: int | None = None, generation: int = 0, workload: str = "") -> str:
    """A fresh staging key under ``generation``, naming ``workload`` if one is given; keys never collide.

    The time (``now_ns``, by default this machine's clock) roughly orders uploads
    and is their upload time (parts.py); the generation decides which delete hides
    them. The random suffix keeps keys unique even for uploads in the same nanosecond.
    """
    import secrets
    import time

    if generation < 0:
        raise ValueError(f"a generation is never negative, not {generation}")
    stamp = time.time_ns() if now_ns is None else now_ns
    named = f"-w{check_workload(workload)}" if workload else ""
    return f"{staging_prefix(app)}{stamp:020d}-{secrets.token_hex(8)}{named}-g{generation}.pb.gz"


def app_of(key: str) -> str | None:
    """The app a key belongs to, or None if the key is not in the layout."""
    app, sep, _ = key.partition("/")
    return app if sep and is_valid_app_name(app) else None


def is_merged_key(key: str) -> bool:
    """Whether ``key`` is an app's merged profile (``<app>/default.pgo``)."""
    app = app_of(key)
    return app is not None and key == f"{app}/{MERGED_NAME}"
