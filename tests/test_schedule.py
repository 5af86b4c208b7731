"""When apps are scraped: stable phases spread over the interval, tick windows that tile time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from profiling.discovery import EPOCH, due_in, next_due, phase, tick_for, tick_start

FIVE_MINUTES = timedelta(minutes=5)
APPS = [f"app-{i:04d}" for i in range(1000)]


def test_phase_is_stable_and_within_the_interval() -> None:
    assert phase("checkout", FIVE_MINUTES) == phase("checkout", FIVE_MINUTES)
    assert all(timedelta(0) <= phase(app, FIVE_MINUTES) < FIVE_MINUTES for app in APPS)


def test_phases_spread_a_fleet_over_the_interval() -> None:
    per_second = [0] * 300
    for app in APPS:
        per_second[int(phase(app, FIVE_MINUTES).total_seconds())] += 1
    assert max(per_second) <= 12  # 1,000 apps over 300 s: about 3.3 a second, never a stampede
    per_minute = [sum(per_second[m * 60 : (m + 1) * 60]) for m in range(5)]
    assert all(150 <= n <= 250 for n in per_minute), per_minute


def test_next_due_is_on_the_apps_grid() -> None:
    after = datetime(2026, 12, 3, 8, 0, 7, tzinfo=UTC)
    due = next_due("checkout", FIVE_MINUTES, after)
    assert after <= due < after + FIVE_MINUTES
    assert (due - EPOCH - phase("checkout", FIVE_MINUTES)) % FIVE_MINUTES == timedelta(0)
    assert next_due("checkout", FIVE_MINUTES, due) == due


@pytest.mark.parametrize("every", [timedelta(seconds=30), timedelta(minutes=1), FIVE_MINUTES, timedelta(hours=24)])
def test_ticks_find_every_due_time_exactly_once(every: timedelta) -> None:
    tick = tick_for(every)
    assert tick == min(every, FIVE_MINUTES)
    start = tick_start(datetime(2026, 12, 3, 7, 58, 31, tzinfo=UTC), tick)
    span = max(every, timedelta(minutes=10)) * 2
    found = []
    window = start
    while window < start + span:
        dues = due_in(APPS[:50], every, window, window + tick)
        assert all(window <= d.at < window + tick for d in dues)
        assert [d.at for d in dues] == sorted(d.at for d in dues)
        found += dues
        window += tick
    expected = sorted(
        (d.app, d.at) for d in due_in(APPS[:50], every, start, start + span)
    )
    assert sorted((d.app, d.at) for d in found) == expected
    per_app = {app: sum(1 for d in found if d.app == app) for app in APPS[:50]}
    whole_cycles = span // every
    assert all(n in (whole_cycles, whole_cycles + 1) for n in per_app.values())


def test_tick_start_is_aligned() -> None:
    when = datetime(2026, 12, 3, 7, 58, 31, 5, tzinfo=UTC)
    assert tick_start(when, timedelta(minutes=1)) == datetime(2026, 12, 3, 7, 58, tzinfo=UTC)
    assert tick_start(when, FIVE_MINUTES) == datetime(2026, 12, 3, 7, 55, tzinfo=UTC)


def test_a_non_positive_interval_is_refused() -> None:
    with pytest.raises(ValueError):
        phase("checkout", timedelta(0))
