"""Deleting an app: the generation advanced at request time, and the cascade behind it.

``mark_deleted`` runs in the API's DELETE handler, before it answers: it
advances the app's generation (see generations.py), and from then on
everything stored under an older one is hidden (batches.py never merges it,
the API never serves it). ``delete_app`` runs later, in the delete flow, and
removes what is hidden: staged and rejected uploads, the merged profile, the
parts it was derived from (apps with a window, builds or workloads) and the
batch record. It takes the batch record as a lock so that no merge commits
while it works. The generation record itself (a few bytes) stays, so that a
merge that was already running can never bring the data back.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field

from ..errors import BlobNotFoundError, PreconditionFailedError
from ..storage import BlobStore
from .batches import Batch, read_merged, read_parts
from .generations import advance_generation, read_app_generation
from .layout import (
    app_prefix,
    batch_key,
    merged_key,
    parts_key,
    rejected_prefix,
    staging_prefix,
    time_of,
    tombstone_prefix,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DeleteReport:
    """What one delete of an app removed: every key of a generation older than ``generation``."""

    app: str
    generation: int  # everything of an older generation was removed
    removed: list[str] = field(default_factory=list)


def has_data(store: BlobStore, app: str) -> bool:
    """Whether the app has a merged profile or uploads that no delete hides."""
    current = read_app_generation(store, app)
    for info in store.list(app_prefix(app)):
        if info.key.startswith((staging_prefix(app), rejected_prefix(app))) and not current.hides_upload(info.key):
            return True
    merged = read_merged(store, app)
    if merged is not None and not merged.labels.hidden_in(current) and bool(merged.tables.sample_values):
        return True
    parts = read_parts(store, app)
    return parts is not None and parts.record.generation >= current.number and bool(parts.record.parts)


def mark_deleted(store: BlobStore, app: str) -> int:
    """Advance the app's generation (returns the new one): nothing stored until now counts any more."""
    return advance_generation(store, app)


def needs_cleanup(store: BlobStore, app: str) -> bool:
    """Whether a delete hides objects that are still stored (the delete flow did not run)."""
    current = read_app_generation(store, app)
    if not current.ever_deleted():
        return False
    for prefix in (staging_prefix(app), rejected_prefix(app)):
        if any(current.hides_upload(info.key) for info in store.list(prefix)):
            return True
    merged = read_merged(store, app)
    if merged is not None and merged.labels.hidden_in(current):
        return True
    parts = read_parts(store, app)
    return parts is not None and parts.record.generation < current.number


def delete_app(
    store: BlobStore, app: str, *, lock_timeout: float = 120.0, poll: float = 0.5, take_over: bool = True
) -> DeleteReport | None:
    """Remove everything a delete hides. Safe to run again after a crash.

    Waits up to ``lock_timeout`` for a running merge; then takes the batch
    over, or with ``take_over=False`` gives up and returns None.
    """
    current = read_app_generation(store, app)
    report = DeleteReport(app, current.number)
    etag = _lock(store, app, current.number, lock_timeout, poll, take_over)
    if etag is None:
        return None

    def remove(key: str) -> None:
        if store.delete(key):
            report.removed.append(key)

    for prefix in (staging_prefix(app), rejected_prefix(app)):
        for info in list(store.list(prefix)):
            if current.hides_upload(info.key):
                remove(info.key)
    merged = read_merged(store, app)
    if merged is not None and merged.labels.hidden_in(current):
        remove(merged_key(app))
    parts = read_parts(store, app)
    if parts is not None and parts.record.generation < current.number:
        remove(parts_key(app))
    # Tombstones from before generations: the newest still places what has no
    # generation, until a delete since hides all of that.
    newest = current.legacy_tombstone() if current.number == 0 else None
    for info in list(store.list(tombstone_prefix(app))):
        if newest is None or time_of(info.key) < newest:
            store.delete(info.key)
    _unlock(store, app, etag)
    log.info("%s: deleted %d objects older than generation %d", app, len(report.removed), current.number)
    return report


def _lock(store: BlobStore, app: str, generation: int, timeout: float, poll: float, take_over: bool) -> str | None:
    """Own the batch record, waiting for a running merge; take over one that looks dead."""
    deadline = time.monotonic() + timeout
    record = Batch(f"delete-{uuid.uuid4().hex}", generation, ())
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
                _settle(store, app, current)
        try:
            if etag is None:
                return store.put(batch_key(app), record.to_json(), if_none_match=True).etag
            return store.put(batch_key(app), record.to_json(), if_match=etag).etag
        except PreconditionFailedError:
            continue


def _settle(store: BlobStore, app: str, batch: Batch) -> None:
    """Remove the uploads of a batch taken over if the merged profile (or the parts) holds them already.

    Its run wrote the profile (or the parts) and died before removing them; once the record
    is replaced, no merge would know they were merged, and would merge them again.
    """
    merged = read_merged(store, app)
    parts = read_parts(store, app)
    if (merged is not None and merged.batch == batch.id) or (parts is not None and parts.record.batch == batch.id):
        for key in batch.keys:
            store.delete(key)


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
