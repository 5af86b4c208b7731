"""Events the pipeline emits, and the sink protocol they go through.

``profile.uploaded`` (payload ``{"app", "profileKey"}``) triggers a merge,
``profile.merged`` (payload ``{"app", "profileKey", "mergedKey", "uploads",
"batchId"}``) says an app's served profile changed, ``profile.deleted``
(payload ``{"app"}``) triggers the cascade delete; the names and payloads are
autopgo's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import AutopgoError

UPLOADED = "profile.uploaded"
MERGED = "profile.merged"
DELETED = "profile.deleted"


@dataclass(frozen=True, slots=True)
class Event:
    """One event: its type (such as ``profile.uploaded``), the app, and the profile key and other payload it carries."""

    type: str
    app: str
    profile_key: str | None = None
    extra: dict[str, str | int] = field(default_factory=dict)

    def payload(self) -> dict[str, str | int]:
        """The payload receivers get: ``app``, ``extra``, and ``profileKey`` when there is one."""
        out = {"app": self.app, **self.extra}
        if self.profile_key is not None:
            out["profileKey"] = self.profile_key
        return out


def merged_event(app: str, batch_id: str, keys: Sequence[str], merged_key: str) -> Event:
    """``profile.merged`` for one committed batch: its newest upload, as the seed names it, and how many."""
    return Event(MERGED, app, keys[-1], {"mergedKey": merged_key, "uploads": len(keys), "batchId": batch_id})


class EventError(AutopgoError):
    """An event could not be delivered; the message says where and why."""


class EventSink(Protocol):
    """Where the pipeline's events go, such as a Prefect server (``prefect_events.py``)."""

    def emit(self, event: Event) -> None:
        """Deliver ``event`` or raise EventError; never drop it silently."""
        ...

    def check(self) -> None:
        """Raise EventError if events cannot be delivered now (for health checks)."""
        ...

    def close(self) -> None:
        """Release what the sink holds, such as its connections."""
        ...
