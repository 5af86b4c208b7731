"""Which merged profiles the API may serve: none that a deletion hides.

Deleting an app writes a tombstone (``profiling.deletion.mark_deleted``) and
leaves the removal to a flow; from the tombstone on, a merged profile whose
``autopgo.since`` time is older than the app's newest tombstone must not be
served, nor listed (``profiling/batches.py`` explains the times). Reading that
time means parsing the profile, so it is remembered per version (etag) of each
app's merged profile; apps never deleted have no tombstone and cost one
listing of an empty prefix.
"""

from __future__ import annotations

from collections.abc import Callable

from profiling.batches import latest_tombstone, since_of
from profiling.blobs import BlobInfo, BlobStore
from profiling.errors import ProfileError

from .versions import PerVersion


class Visibility:
    def __init__(self, store: BlobStore, max_decompressed: int, max_apps: int = 1024) -> None:
        self._store = store
        self._max_decompressed = max_decompressed
        self._since: PerVersion[int] = PerVersion(max_apps)

    def tombstone(self, app: str) -> int:
        """When ``app`` was last deleted (ns since the epoch), or 0."""
        return latest_tombstone(self._store, app)

    def hidden(
        self, app: str, info: BlobInfo, tombstone: int, load: Callable[[], bytes] | None = None
    ) -> bool:
        """Whether the merged profile ``info`` is hidden by ``tombstone``.

        ``load`` gives its bytes if its time is not known yet (by default they
        are read from the store). A profile whose time cannot be read counts
        as older than any tombstone.
        """
        if not tombstone:
            return False
        return self._since_of(app, info, load) < tombstone

    def _since_of(self, app: str, info: BlobInfo, load: Callable[[], bytes] | None) -> int:
        known = self._since.get(app, info.etag)
        if known is not None:
            return known
        etag = info.etag
        if load is not None:
            data = load()
        else:
            read_info, stream = self._store.open(info.key)
            with stream:
                data = stream.read()
            etag = read_info.etag
        try:
            since = since_of(data, self._max_decompressed)
        except ProfileError:
            since = 0
        return self._since.put(app, etag, since)
