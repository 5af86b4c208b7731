"""Deleting an app: the tombstone written at request time, and the cascade behind it.

``mark_deleted`` runs in the API's DELETE handler, before it answers: from then
on the newest tombstone hides everything uploaded before it (batches.py never
merges it, the API never serves it). ``delete_app`` runs later, in the delete
flow, and removes what the tombstone hides: staged and rejected uploads, the
merged profile and the batch record. It takes the batch record as a lock so
that no merge commits while it works. The tombstone itself (a few bytes) stays,
so that a merge that was already running can never bring the data back.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field

from .batches import Batch, latest_tombstone, read_merged
from .blobs import BlobStore
from .errors import BlobNotFoundError, PreconditionFailedError
from .names import (
    app_prefix,
    batch_key,
    merged_key,
    rejected_prefix,
    staging_prefix,
    time_of,
    tombstone_key,
    tombstone_prefix,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DeleteReport:
    app: str
    until: int  # the tombstone time everything at or before was removed
    removed: list[str] = field(default_factory=list)


def has_data(store: BlobStore, app: str) -> bool:
    """Whether the app has a merged profile or uploads that no tombstone hides."""
    since = latest_tombstone(store, app)
    for info in store.list(app_prefix(app)):
        if info.key.startswith((staging_prefix(app), rejected_prefix(app))) and time_of(info.key) > since:
            return True
    merged = read_merged(store, app)
    return merged is not None and merged.since >= since and bool(merged.tables.sample_values)


def mark_deleted(store: BlobStore, app: str, now_ns: int | None = None) -> int:
    """Write a tombstone for ``app`` (returns its time): nothing uploaded until now counts any more."""
    when = time.time_ns() if now_ns is None else now_ns
    store.put(tombstone_key(app, when), b"")
    return when


def needs_cleanup(store: BlobStore, app: str) -> bool:
    """Whether a tombstone hides objects that are still stored (the delete flow did not run)."""
    until = latest_tombstone(store, app)
    if not until:
        return False
    for prefix in (staging_prefix(app), rejected_prefix(app)):
        if any(time_of(info.key) <= until for info in store.list(prefix)):
            return True
    merged = read_merged(store, app)
    return merged is not None and merged.since < until


def delete_app(
    store: BlobStore, app: str, *, lock_timeout: float = 120.0, poll: float = 0.5, take_over: bool = True
) -> DeleteReport | None:
    """Remove everything the newest tombstone hides. Safe to run again after a crash.

    Waits up to ``lock_timeout`` for a running merge; then takes the batch
    over, or with ``take_over=False`` gives up and returns None.
    """
    until = latest_tombstone(store, app)
    report = DeleteReport(app, until)
    etag = _lock(store, app, until, lock_timeout, poll, take_over)
    if etag is None:
        return None

    def remove(key: str) -> None:
        if store.delete(key):
            report.removed.append(key)

    for info in list(store.list(staging_prefix(app))):
        if time_of(info.key) <= until:
            remove(info.key)
    for info in list(store.list(rejected_prefix(app))):
        if time_of(info.key) <= until:
            remove(info.key)
    merged = read_merged(store, app)
    if merged is not None and merged.since < until:
        remove(merged_key(app))
    for info in list(store.list(tombstone_prefix(app))):
        if time_of(info.key) < until:
            store.delete(info.key)
    _unlock(store, app, etag)
    log.info("%s: deleted %d objects up to %d", app, len(report.removed), until)
    return report


def _lock(store: BlobStore, app: str, until: int, timeout: float, poll: float, take_over: bool) -> str | None:
    """Own the batch record, waiting for a running merge; take over one that looks dead."""
    deadline = time.monotonic() + timeout
    record = Batch(f"delete-{uuid.uuid4().hex}", until, ())
    while True:
        try:
            info, stream = store.open(batch_key(app))
        except BlobNotFoundError:
            etag = None
        else:
            with stream:
                current = Batch.from_json(stream.read())
            etag = info.etag
            if current.open and time.monotonic() < deadline:
                time.sleep(poll)
                continue
            if current.open and not take_over:
                return None
            if current.open:
                log.warning("%s: batch %s stayed open for %.0fs; taking it over", app, current.id, timeout)
        try:
            if etag is None:
                return store.put(batch_key(app), record.to_json(), if_none_match=True).etag
            return store.put(batch_key(app), record.to_json(), if_match=etag).etag
        except PreconditionFailedError:
            continue


def _unlock(store: BlobStore, app: str, etag: str) -> None:
    """Remove the batch record if it is still the one this delete wrote.

    A merge that was past its last check when the delete took the record finds
    it gone and writes nothing; the next merge starts a fresh record.
    """
    try:
        if store.stat(batch_key(app)).etag == etag:
            store.delete(batch_key(app))
    except BlobNotFoundError:
        pass
