"""Removing merged profiles by age or size, as autopgo's ``clean`` does.

An app with a window, builds or workloads derives its merged profile from its
parts (``parts.py``): those are removed with it, first, so that the profile is
not derived again from them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from ..storage import BlobInfo, BlobStore
from .layout import app_of, is_merged_key, parts_key

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CleanRule:
    """Remove merged profiles last written before now - ``older_than``, or larger than ``larger_than`` bytes."""

    older_than: timedelta | None = None
    larger_than: int | None = None

    def __post_init__(self) -> None:
        if self.older_than is None and self.larger_than is None:
            raise ValueError("a clean rule needs an age (older_than), a size (larger_than) or both")
        if self.older_than is not None and self.older_than <= timedelta(0):
            raise ValueError("older_than must be positive")
        if self.larger_than is not None and self.larger_than < 0:
            raise ValueError("larger_than must not be negative")

    def matches(self, info: BlobInfo, now: datetime) -> bool:
        """Whether the profile ``info`` describes is to be removed at ``now``: too old, too large or both."""
        too_old = self.older_than is not None and info.last_modified < now - self.older_than
        too_large = self.larger_than is not None and info.size > self.larger_than
        return too_old or too_large


def clean(store: BlobStore, rule: CleanRule, *, now: datetime | None = None, dry_run: bool = False) -> list[BlobInfo]:
    """Remove (or with ``dry_run`` only list) the merged profiles that ``rule`` matches."""
    now = now or datetime.now(timezone.utc)
    matched = [info for info in store.list() if is_merged_key(info.key) and rule.matches(info, now)]
    for info in matched:
        if not dry_run:
            app = app_of(info.key)
            if app is not None:
                store.delete(parts_key(app))
            store.delete(info.key)
        log.info("%s %s (%d bytes, last written %s)", "would remove" if dry_run else "removed", info.key, info.size, info.last_modified.isoformat())
    return matched
