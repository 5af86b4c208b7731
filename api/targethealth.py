"""The state of each app's target source, for ``GET /api/health``, without waiting on any of them.

A source lists its targets over the network (Kubernetes, Consul, Nomad) or from disk (a
file); one can take as long as its timeout, or longer when it pages slowly or a mount hangs.
A load balancer's health probe must be answered within a second whatever they do, so
health never lists a source itself: a background thread lists every source on a period, each
in a worker of a small pool, and health reports the last result of each with its time.

A source whose last finished listing is older than two periods (its listing hangs) is
``stale``; one never listed yet is ``unknown``; both still give the time of the last good
listing, if any.

A source that cannot list its targets is logged in one warning when it starts failing (and
again only when the reason changes), and in one line when it lists them again, not at every
listing: a source down for an hour would otherwise say so 240 times.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from profiling.discovery import TargetSource

from .conditional import rfc3339

log = logging.getLogger("autopgo.api")

DEFAULT_EVERY = 15.0  # seconds between two listings of a source
FIRST_WAIT = 0.5  # how long health waits, right after start, for sources never listed yet
_WORKERS = 8  # listings at once; a hanging source holds one worker until its timeout (or for good)


@dataclass(frozen=True, slots=True)
class Listing:
    """How one finished listing of a source went."""

    ok: bool
    message: str  # why it failed, one line; "" when ok
    finished: float  # time.time()


@dataclass(slots=True)
class _Source:
    kind: str
    source: TargetSource
    last: Listing | None = None
    last_ok: float | None = None  # when it last listed its targets
    running: bool = False  # a listing is in flight


def change_line(app: str, kind: str, before: Listing | None, after: Listing) -> tuple[int, str] | None:
    """The log level and line for a listing ``after`` that follows ``before`` (None: the first one),
    or None when it changes nothing worth a line: a source that starts failing, or fails for
    another reason, is a warning; one that lists its targets again after failing, an info line."""
    if not after.ok and (before is None or before.ok or before.message != after.message):
        return logging.WARNING, f"target source {kind} of {app} cannot list its targets: {after.message}"
    if after.ok and before is not None and not before.ok:
        return logging.INFO, f"target source {kind} of {app} lists its targets again"
    return None


def describe(app: str, kind: str, last: Listing | None, last_ok: float | None, now: float, stale_after: float) -> dict[str, Any]:
    """The health entry of one app's source: ``{"app", "source", "status"}``, a ``message`` unless ok,
    and ``checkedAt`` / ``lastOk`` (RFC 3339) when known. ``status`` is ``ok`` or ``down`` from the last
    listing, ``stale`` when that is older than ``stale_after`` seconds, ``unknown`` before the first."""
    entry: dict[str, Any] = {"app": app, "source": kind}
    if last is None:
        entry.update(status="unknown", message="not listed yet")
    elif now - last.finished > stale_after:
        outcome = "listed its targets" if last.ok else f"failed: {last.message}"
        entry.update(status="stale", message=f"no listing finished for {now - last.finished:.0f}s; the last {outcome}")
    elif last.ok:
        entry["status"] = "ok"
    else:
        entry.update(status="down", message=last.message)
    if last is not None:
        entry["checkedAt"] = _time(last.finished)
    if last_ok is not None:
        entry["lastOk"] = _time(last_ok)
    return entry


class TargetHealth:
    """Lists each app's target source every ``every`` seconds in the background; ``report()`` never waits on one."""

    def __init__(
        self, sources: Mapping[str, TargetSource], *, every: float = DEFAULT_EVERY, clock: Callable[[], float] = time.time
    ) -> None:
        self.every = every
        self._clock = clock
        self._sources = {app: _Source(source.kind, source) for app, source in sorted(sources.items())}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._due: queue.SimpleQueue[tuple[str, _Source] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._started = 0.0  # time.monotonic() at start

    def start(self) -> None:
        """Start listing, at once and then every period (nothing to do without sources).

        The threads are daemons: a listing that hangs must not hold the process up when it exits.
        """
        if not self._sources or self._threads:
            return
        workers = min(_WORKERS, len(self._sources))
        self._threads = [threading.Thread(target=self._run, name="autopgo-target-health", daemon=True)]
        self._threads += [
            threading.Thread(target=self._work, name=f"autopgo-targets-{i}", daemon=True) for i in range(workers)
        ]
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()

    def report(self, first_wait: float = FIRST_WAIT) -> list[dict[str, Any]]:
        """Each app's entry (see ``describe``), by app name.

        Within ``first_wait`` seconds of the start, waits (until then at most) for sources never
        listed yet, so that a server just started reports its quick sources as they are.
        """
        deadline = self._started + first_wait
        with self._changed:
            while self._threads and any(s.last is None for s in self._sources.values()):
                left = deadline - time.monotonic()
                if left <= 0 or not self._changed.wait(left):
                    break
            now = self._clock()
            return [describe(app, s.kind, s.last, s.last_ok, now, 2 * self.every) for app, s in self._sources.items()]

    def close(self) -> None:
        """Stop listing; a listing in flight is abandoned, not waited for."""
        self._stop.set()
        for _ in self._threads:
            self._due.put(None)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._refresh()
            self._stop.wait(self.every)

    def _refresh(self) -> None:
        """Queue a listing of every source whose last one has finished (a hanging one is not piled on)."""
        for app, state in self._sources.items():
            with self._changed:
                if state.running:
                    continue
                state.running = True
            self._due.put((app, state))

    def _work(self) -> None:
        while (due := self._due.get()) is not None and not self._stop.is_set():
            self._list(*due)

    def _list(self, app: str, state: _Source) -> None:
        try:
            state.source.check()
        except Exception as exc:  # noqa: BLE001 - any failure is the source's state, reported as is
            listing = Listing(False, " ".join(str(exc).split()) or type(exc).__name__, self._clock())
        else:
            listing = Listing(True, "", self._clock())
        with self._changed:
            before = state.last
            state.last, state.running = listing, False
            if listing.ok:
                state.last_ok = listing.finished
            self._changed.notify_all()
        line = change_line(app, state.kind, before, listing)
        if line is not None:
            log.log(*line)
        elif not listing.ok:
            log.debug("target source %s of %s still cannot list its targets: %s", state.kind, app, listing.message)


def _time(when: float) -> str:
    return rfc3339(datetime.fromtimestamp(when, UTC))
