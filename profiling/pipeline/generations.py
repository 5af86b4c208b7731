"""Generations: the order of deletes against uploads, kept by the store, not by clocks.

Each app has a generation, a number in ``<app>/generation.json`` (no record:
0). A DELETE advances it by one with a conditional write on the version it
read, so deletes on any number of API servers each take effect and none is
lost. Everything stored for the app carries the generation it was made under:
an upload in its staging key (``...-g<n>.pb.gz``), a merge batch in its record,
a merged profile in a pprof comment (``autopgo.generation=<n>``). Only what
carries the current generation counts; anything older is hidden at once (never
merged, never served) and removed later by the delete flow.

An upload reads the generation, stages its key under it, and reads it again
before it is answered (``staging.py``): if a delete advanced it in between, the
staged key is already hidden, so the upload is staged again under the new
generation. So an upload is older than a delete (hidden) when its second read
came before the delete's write, and newer (kept whole) otherwise: the order is
the order in which the store applied writes and reads of one key, whatever the
servers' clocks say.

Stores written before generations: a staging key, a batch record or a merged
profile without a generation is generation 0, unless a tombstone of that time
(``<app>/deleted/<ns time>``) hid it by its time as the former scheme did: such
uploads at or before the newest tombstone, and batches and merged profiles
begun before it, are hidden (``HIDDEN``). Any delete since hides them all.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import BlobNotFoundError, BlobStoreError, PreconditionFailedError
from ..storage import BlobStore
from .layout import generation_key, generation_of, time_of, tombstone_prefix

log = logging.getLogger(__name__)

HIDDEN = -1  # the generation of data from before generations that a tombstone hides: older than any
ADVANCE_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class Generation:
    """The app's generation and the version (etag) of its record; no record: 0 and None."""

    number: int
    etag: str | None = None


def read_generation(store: BlobStore, app: str) -> Generation:
    """The app's generation as the store holds it now."""
    try:
        info, stream = store.open(generation_key(app))
    except BlobNotFoundError:
        return Generation(0)
    with stream:
        data = stream.read()
    try:
        number = int(json.loads(data)["generation"])
    except (ValueError, KeyError, TypeError):
        raise BlobStoreError(f"{generation_key(app)} is not a generation record: {data[:80]!r}") from None
    return Generation(number, info.etag)


def advance_generation(store: BlobStore, app: str) -> int:
    """Advance the app's generation by one, conditionally on the version read; returns the new number.

    If the write loses, another delete advanced the record after this one read
    it: while this delete was under way, so that write hides all this one must
    hide, and this one is done. (On S3 a write can also lose to a conflicting
    request that did not succeed: then the number is unchanged and it tries again.)
    """
    current = read_generation(store, app)
    for _ in range(ADVANCE_ATTEMPTS):
        record = json.dumps({"generation": current.number + 1}).encode()
        try:
            if current.etag is None:
                store.put(generation_key(app), record, if_none_match=True)
            else:
                store.put(generation_key(app), record, if_match=current.etag)
            return current.number + 1
        except PreconditionFailedError:
            seen = read_generation(store, app)
            if seen.number > current.number:
                return seen.number
            current = seen
    raise BlobStoreError(f"could not advance the generation of {app!r}: too many conflicting writes; try again")


def latest_tombstone(store: BlobStore, app: str) -> int:
    """The time of the app's newest tombstone from before generations (ns since the epoch), or 0."""
    return max((time_of(b.key) for b in store.list(tombstone_prefix(app))), default=0)


class AppGeneration:
    """An app's current generation, and the generation each thing stored for it belongs to.

    The tombstones from before generations are listed only when something
    without a generation must be placed, and at most once.
    """

    __slots__ = ("number", "etag", "_tombstone", "_legacy")

    def __init__(self, generation: Generation, tombstone: Callable[[], int]) -> None:
        self.number = generation.number
        self.etag = generation.etag
        self._tombstone = tombstone
        self._legacy: int | None = None

    def legacy_tombstone(self) -> int:
        """The newest tombstone from before generations (0 if none)."""
        if self._legacy is None:
            self._legacy = self._tombstone()
        return self._legacy

    def of_upload(self, key: str) -> int:
        """The generation of a staged or rejected upload."""
        marked = generation_of(key)
        if marked is not None:
            return marked
        if self.number > 0:
            return HIDDEN
        return 0 if time_of(key) > self.legacy_tombstone() else HIDDEN

    def of_labels(self, generation: int | None, since: int) -> int:
        """The generation of a batch record or merged profile labelled ``generation``,
        or, from before generations, ``since`` (the tombstone time when its batch began)."""
        if generation is not None:
            return generation
        if self.number > 0:
            return HIDDEN
        return 0 if since >= self.legacy_tombstone() else HIDDEN

    def hides_upload(self, key: str) -> bool:
        """Whether a delete hides the staged or rejected upload ``key``: it is of an older generation."""
        return self.of_upload(key) < self.number

    def hides_labels(self, generation: int | None, since: int) -> bool:
        """Whether a delete hides the batch record or merged profile so labelled (see ``of_labels``)."""
        return self.of_labels(generation, since) < self.number

    def ever_deleted(self) -> bool:
        """Whether the app was ever deleted: its generation is past 0, or it has a tombstone from before generations."""
        return self.number > 0 or self.legacy_tombstone() > 0


def read_app_generation(store: BlobStore, app: str) -> AppGeneration:
    """The app's generation now (one read; tombstones from before generations are listed if needed)."""
    return AppGeneration(read_generation(store, app), lambda: latest_tombstone(store, app))
