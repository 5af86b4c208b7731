"""The scrape flows: one run per tick profiles every app due in it, or the apps named, now.

``scrape_tick`` is what the schedules run. Apps that share an interval share
one deployment whose runs start every tick (profiling.discovery.schedule); a run scrapes
each app due in its tick window at that app's own time, so a fleet's scrapes
spread over the interval. Each app is a task run named ``scrape <app>`` with
its own logs and state: one that gets no profile fails alone, with one line
saying why, and the run goes on with the others. ``scrape`` does the same for
named apps at once (a manual run from the UI, with ``apps`` as parameter).

All the apps of a run share one async HTTP client for the fetches (at most
``DEFAULT_FETCH_LIMIT`` open at once) and one for the uploads, so a run costs
one interpreter, whatever the number of apps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from profiling.client import AsyncClient
from profiling.config import AppConfig, Config
from profiling.discovery import (
    DEFAULT_FETCH_LIMIT,
    Due,
    SourceCache,
    due_in,
    new_client,
    scrape_async,
    tick_for,
    tick_start,
)

from . import settings
from .failures import fail, failure_reason, quiet_reported_failures

quiet_reported_failures()
# Sources live as long as the process; a file source also keeps its last good
# list on disk (settings.state_dir()), so a broken edit is survived across runs.
_sources = SourceCache(settings.state_dir())


@dataclass(slots=True)
class _Run:
    """What the apps of one run share: the clients, the bound on open fetches, the report rows."""

    config: Config
    http: httpx.AsyncClient
    api: AsyncClient
    fetches: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(DEFAULT_FETCH_LIMIT))
    rows: list[dict[str, object]] = field(default_factory=list)  # one per app, for the run's artifact


# The run's shared parts reach its tasks through the context, not as task parameters:
# Prefect walks every parameter of every task run looking for futures, and the
# configuration of a fleet is large.
_run: ContextVar[_Run] = ContextVar("autopgo_scrape_run")


@task(name="scrape-app", task_run_name="scrape {app}", cache_policy=NO_CACHE)
async def scrape_app(app: str, due: datetime | None) -> State:
    """Profile the app's instances and upload what they give; Failed (one line) if nothing was uploaded."""
    log = get_run_logger()
    run = _run.get()
    scrape_cfg = run.config.app(app).scrape
    row: dict[str, object] = {"app": app, "due": due.isoformat(timespec="seconds") if due else "now"}
    run.rows.append(row)
    if scrape_cfg is None:
        row["result"] = "no scrape settings"
        return Failed(message=f"{app}: no scrape settings in the configuration")
    try:
        targets = await asyncio.to_thread(_sources.source(app, scrape_cfg).targets)
    except Exception as exc:  # noqa: BLE001 - a source that cannot list fails this app alone, in one line
        reason = failure_reason(exc, log)
        row["result"] = f"no targets: {reason}"
        return Failed(message=f"{app}: cannot list targets: {reason}")  # Prefect logs it
    report = await scrape_async(
        targets,
        scrape_cfg.sample_size,
        scrape_cfg.duration,
        lambda data, target: run.api.upload(app, data, workload=target.workload),
        client=run.http,
        fetch_limit=run.fetches,
        with_target=True,
    )
    row.update(targets=len(targets), uploaded=len(report.uploaded), failed=len(report.failed))
    summary = f"{app}: {len(report.uploaded)} uploaded, {len(report.failed)} failed of {len(targets)} targets"
    if targets and not report.uploaded:
        reasons = "; ".join(report.failed.values())
        row["result"] = f"failed: {reasons}"
        return Failed(message=f"{summary}: {reasons}")
    row["result"] = "ok" if targets else "no targets"
    log.info(summary)
    return Completed(message=summary, data={"uploaded": report.uploaded, "failed": report.failed})


@flow(name="scrape-tick", description="Scrape every app of one interval that is due in this tick window.")
async def scrape_tick(every_seconds: float) -> State:
    """One run scrapes each app of the ``every_seconds`` interval that is due in this tick window, at its own time;
    run by that interval's schedule. Failed names the apps that gave no profile."""
    every = timedelta(seconds=every_seconds)
    cfg = settings.config()
    apps = [a.name for a in cfg.apps if a.scrape is not None and a.scrape.every == every]
    tick = tick_for(every)
    start = tick_start(_scheduled_start(), tick)
    dues = due_in(apps, every, start, start + tick)
    get_run_logger().info(
        "tick %s-%s: %d of %d apps every %s due", f"{start:%H:%M:%S}", f"{start + tick:%H:%M:%S}", len(dues), len(apps), every
    )
    return await _scrape(cfg, dues, f"scrape-every-{interval_name(every)}")


@flow(name="scrape", description="Scrape the apps named now, each at once.")
async def scrape(apps: list[str]) -> State:
    """One run scrapes the ``apps`` named, all at once; started by hand (the ``now`` deployment, from the UI, say).
    Failed names the apps that gave no profile."""
    cfg = settings.config()
    now = datetime.now(UTC)
    return await _scrape(cfg, [Due(app, now) for app in apps], "scrape-now")


async def _scrape(cfg: Config, dues: Sequence[Due], artifact_key: str) -> State:
    async with new_client() as http, settings.api_client(cfg) as api:
        run = _Run(cfg, http, api)
        _run.set(run)  # before gather: each of its tasks copies the context

        async def at_due(due: Due) -> State:
            delay = (due.at - datetime.now(UTC)).total_seconds()
            if delay > 0:
                await asyncio.sleep(delay)
            state: State = await scrape_app(due.app, due.at, return_state=True)  # type: ignore[misc]  # Prefect's overloads
            return state

        states = await asyncio.gather(*(at_due(d) for d in dues))
    failed = [d.app for d, s in zip(dues, states) if s.is_failed() or s.is_crashed()]
    if run.rows:
        await acreate_table_artifact(
            key=artifact_key, table=sorted(run.rows, key=lambda r: str(r["app"])), description="what each app's scrape did"
        )
    summary = f"{len(dues) - len(failed)} of {len(dues)} apps scraped"
    if failed:
        shown = ", ".join(failed[:10]) + (f" and {len(failed) - 10} more" if len(failed) > 10 else "")
        return fail(f"{summary}; no profile from {shown}")
    return Completed(message=summary)


def _scheduled_start() -> datetime:
    when = flow_run.get_scheduled_start_time()
    return datetime.fromtimestamp(when.timestamp(), UTC)


def interval_name(every: timedelta) -> str:
    """``5m``, ``1h30m``, ``45s``: how a deployment of that interval is named."""
    seconds = int(every.total_seconds())
    if seconds <= 0 or every != timedelta(seconds=seconds):
        return f"{every.total_seconds():g}s"
    parts = []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts)


def apps_by_interval(cfg: Config) -> dict[timedelta, list[AppConfig]]:
    """The configured apps that scrape, by interval: one tick deployment each."""
    out: dict[timedelta, list[AppConfig]] = {}
    for app in cfg.apps:
        if app.scrape is not None:
            out.setdefault(app.scrape.every, []).append(app)
    return out
