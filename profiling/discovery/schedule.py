"""When each app is scraped: a stable phase per app within its interval, and the ticks that find them.

Apps that share an interval are scraped by one run per *tick* (at most five
minutes long), not by one run per app. Each app has a phase: a stable offset in
``[0, every)`` derived from its name, so a fleet's scrapes spread over the
interval instead of firing in the same second, and an app is always scraped at
the same points of the clock: ``epoch + phase + k * every``. A tick covers the
window ``[start, start + tick)`` and scrapes every app with a due time in it,
each at that time. Windows tile the time line, so each due time falls in
exactly one tick.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

EPOCH = datetime(2020, 1, 1, tzinfo=UTC)  # where phases and ticks are counted from
MAX_TICK = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Due:
    """One scrape to run: the app, and when it is due."""

    app: str
    at: datetime  # when the app's scrape is due


def tick_for(every: timedelta) -> timedelta:
    """How often the run that scrapes apps of interval ``every`` starts: ``every``, at most five minutes.

    Longer intervals are split so that a run never sleeps for hours waiting for
    its apps (a restart would lose them); a tick need not divide the interval,
    since each app's due times are counted from the epoch, not from the tick.
    """
    return min(every, MAX_TICK)


def phase(app: str, every: timedelta) -> timedelta:
    """The app's stable offset within ``every``, to the microsecond."""
    span = _span(every)
    digest = hashlib.sha256(app.encode()).digest()
    return timedelta(microseconds=int.from_bytes(digest[:8], "big") % span)


def next_due(app: str, every: timedelta, after: datetime) -> datetime:
    """The app's first due time at or after ``after``."""
    span = _span(every)
    offset = _micros(after - EPOCH) - _micros(phase(app, every))
    cycles = -(-offset // span)  # ceiling division
    return EPOCH + phase(app, every) + timedelta(microseconds=cycles * span)


def due_in(apps: Iterable[str], every: timedelta, start: datetime, end: datetime) -> list[Due]:
    """Each due time of ``apps`` in ``[start, end)``, in time order (an app may be due more than once)."""
    span = timedelta(microseconds=_span(every))
    out = []
    for app in apps:
        at = next_due(app, every, start)
        while at < end:
            out.append(Due(app, at))
            at += span
    return sorted(out, key=lambda d: (d.at, d.app))


def tick_start(when: datetime, tick: timedelta) -> datetime:
    """The start of the tick window that holds ``when``."""
    span = _span(tick)
    return EPOCH + timedelta(microseconds=_micros(when - EPOCH) // span * span)


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _span(every: timedelta) -> int:
    micros = _micros(every)
    if micros <= 0:
        raise ValueError(f"expected a positive interval, not {every}")
    return micros
