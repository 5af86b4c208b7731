"""Events the pipeline emits, and the sink protocol they go through.

``profile.uploaded`` (payload ``{"app", "profileKey"}``) triggers a merge,
``profile.deleted`` (payload ``{"app"}``) triggers the cascade delete; the
names and payloads are autopgo's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

UPLOADED = "profile.uploaded"
MERGED = "profile.merged"
DELETED = "profile.deleted"


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    app: str
    profile_key: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def payload(self) -> dict[str, str]:
        out = {"app": self.app, **self.extra}
        if self.profile_key is not None:
            out["profileKey"] = self.profile_key
        return out


class EventError(Exception):
    """An event could not be delivered; the message says where and why."""


class EventSink(Protocol):
    def emit(self, event: Event) -> None:
        """Deliver ``event`` or raise EventError; never drop it silently."""
        ...

    def check(self) -> None:
        """Raise EventError if events cannot be delivered now (for health checks)."""
        ...

    def close(self) -> None: ...
