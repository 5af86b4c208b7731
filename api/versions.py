"""A value per app, tied to one version (store etag) of the app's merged profile.

Several things about a merged profile cost a read of it to learn and hold
until the next merge: its content tag, its labels (batch and generation), its
trimmed form. Each is kept for the latest version seen of each app; a new
version makes the old value unreachable, and the least recently used apps
beyond ``max_apps`` are forgotten, so memory stays bounded.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


class PerVersion(Generic[T]):
    """A value per app for one version (etag) of its merged profile; beyond ``max_apps``, the least recently used go."""

    def __init__(self, max_apps: int) -> None:
        if max_apps < 1:
            raise ValueError("max_apps must be at least 1")
        self._max_apps = max_apps
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[str, T]] = OrderedDict()  # app -> (etag, value)

    def get(self, app: str, etag: str) -> T | None:
        """The value kept for version ``etag`` of ``app``, or None."""
        with self._lock:
            entry = self._entries.get(app)
            if entry is None or entry[0] != etag:
                return None
            self._entries.move_to_end(app)
            return entry[1]

    def put(self, app: str, etag: str, value: T) -> T:
        """Keep ``value`` for version ``etag`` of ``app`` (instead of any other version); return it."""
        with self._lock:
            self._entries[app] = (etag, value)
            self._entries.move_to_end(app)
            while len(self._entries) > self._max_apps:
                self._entries.popitem(last=False)
        return value
