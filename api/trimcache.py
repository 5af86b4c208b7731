"""PGO-trimmed downloads, computed once per version of a merged profile.

Trimming means decoding the merged profile, computing its call edges and
encoding the result: tens of milliseconds for a large profile, while builds
download the same version over and over. The cache keeps the latest trimmed
form per app, keyed by the merged profile's etag, so a new merge makes the old
entry unreachable and the next download computes afresh. Concurrent first
downloads of one version compute it once: the others wait for that result.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from .versions import PerVersion

_STRIPES = 32


@dataclass(frozen=True, slots=True)
class Trimmed:
    """The PGO-trimmed form of one version of an app's merged profile, as downloads serve it."""

    source_etag: str  # the etag of the merged profile it was made from
    last_modified: datetime  # that of the merged profile
    data: bytes  # the trimmed profile, gzip-compressed
    etag: str  # the HTTP entity tag of ``data`` (profiling.storage.etags.content_etag)


@dataclass(slots=True)
class CacheStats:
    """How often the cache had a trimmed form ready (``hits``), and how often it made one (``computed``)."""

    hits: int = 0
    computed: int = 0


class TrimCache:
    """The latest trimmed profile of each app (at most ``max_apps``), computed once per merged profile version."""

    def __init__(self, max_apps: int = 256) -> None:
        self._lock = threading.Lock()
        self._entries: PerVersion[Trimmed] = PerVersion(max_apps)
        # one lock per stripe of apps, so computing for one app does not block others
        self._compute_locks = [threading.Lock() for _ in range(_STRIPES)]
        self.stats = CacheStats()

    def get_or_compute(self, app: str, etag: str, compute: Callable[[], Trimmed]) -> Trimmed:
        """The trimmed form of ``app``'s merged profile version ``etag``.

        ``compute`` reads the current merged profile and trims it; the version
        it read may be newer than ``etag``, and is then what is returned.
        """
        found = self._lookup(app, etag)
        if found is not None:
            return found
        with self._compute_locks[hash(app) % _STRIPES]:
            found = self._lookup(app, etag)
            if found is not None:
                return found
            trimmed = compute()
            with self._lock:
                self.stats.computed += 1
            return self._entries.put(app, trimmed.source_etag, trimmed)

    def _lookup(self, app: str, etag: str) -> Trimmed | None:
        found = self._entries.get(app, etag)
        if found is not None:
            with self._lock:
                self.stats.hits += 1
        return found
