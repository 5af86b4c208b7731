"""The merge flow (every app with pending uploads, triggered by uploads) and the sweep (on a schedule).

One merge run serves the whole pipeline, not one app: the upload trigger fires
at most once per ``THROTTLE`` window whatever the number of apps, and the run
merges every app that has staged uploads, each as a task run named
``merge <app>`` with its own logs and artifact, then keeps watching for that
window so that the uploads whose events the throttle swallowed are merged
within a poll. Runs that overlap share the work safely: an app's batch record
lets one run at a time merge it (profiling.batches).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import timedelta

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from profiling.batches import MergeReport, find_pending, merge_pending
from profiling.blobs import BlobStore
from profiling.config import Config
from profiling.deletion import delete_app, needs_cleanup
from profiling.measurement import size_label
from profiling.summary import summarize

from . import settings

POLL_SECONDS = 1.0
# After an upload triggers a merge run, further uploads within this window start
# no new run (see deployments.py): the running one lingers a little longer than
# that (it starts a moment after the trigger fires) to merge them. A run a minute
# while uploads flow; each costs a new interpreter.
THROTTLE = timedelta(seconds=60)
LINGER = THROTTLE + timedelta(seconds=10)


@flow(name="merge", description="Merge the staged uploads of every app (or of those named), each exactly once.")
def merge(apps: list[str] | None = None, linger_seconds: float = LINGER.total_seconds()) -> dict[str, int]:
    """Merge until nothing is staged, then keep watching for ``linger_seconds``; uploads merged, by app."""
    cfg = settings.config()
    store = settings.store(cfg)
    wanted = set(apps) if apps is not None else None
    deadline = time.monotonic() + linger_seconds
    merged: dict[str, int] = {}
    try:
        while True:
            pending = _staged(store, wanted)
            for app, count in _merge_apps(store, cfg, pending).items():
                merged[app] = merged.get(app, 0) + count
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
    finally:
        store.close()
    get_run_logger().info("merged %d uploads of %d apps", sum(merged.values()), len(merged))
    return merged


def _staged(store: BlobStore, wanted: set[str] | None) -> list[str]:
    staged = find_pending(store).staged
    return sorted(staged if wanted is None else staged & wanted)


@flow(name="sweep", description="Merge what is staged and finish deletes, including those whose event was lost.")
def sweep() -> dict[str, int]:
    log = get_run_logger()
    cfg = settings.config()
    store = settings.store(cfg)
    try:
        pending = find_pending(store)
        for app in sorted(pending.deleted):
            if needs_cleanup(store, app) and delete_app(store, app, lock_timeout=5, take_over=False):
                log.info("%s: finished a delete", app)
        merged = _merge_apps(store, cfg, sorted(pending.staged))
    finally:
        store.close()
    log.info("swept %d apps: %s", len(merged), merged or "nothing pending")
    return merged


# The store and the configuration reach the tasks through the context, not as task
# parameters: Prefect walks every parameter of every task run looking for futures,
# and the configuration of a fleet is large.
_shared: ContextVar[tuple[BlobStore, Config]] = ContextVar("autopgo_merge_run")


def _merge_apps(store: BlobStore, cfg: Config, apps: Iterable[str]) -> dict[str, int]:
    """Merge each app as its own task run; a failing app is reported in its task and does not stop the others."""
    merged: dict[str, int] = {}
    token = _shared.set((store, cfg))
    try:
        for app in apps:
            state = merge_app(app, return_state=True)
            if state.is_completed():
                merged[app] = state.result()
    finally:
        _shared.reset(token)
    return merged


@task(name="merge-app", task_run_name="merge {app}", cache_policy=NO_CACHE)
def merge_app(app: str) -> int:
    """Merge the app's staged uploads; publish what was done when anything was. Returns the uploads merged."""
    store, cfg = _shared.get()
    report = merge_pending(store, app, cfg.app(app).prune)
    if report.merged or report.rejected:
        _publish(report)
    return len(report.merged)


def _publish(report: MergeReport) -> None:
    """Log and publish what the run did as a Prefect artifact, so the UI shows it."""
    log = get_run_logger()
    log.info(
        "%s: %d batches, %d uploads merged, %d rejected, %s -> %s",
        report.app,
        report.batches,
        len(report.merged),
        len(report.rejected),
        size_label(report.size_before),
        size_label(report.size_after),
    )
    lines = [
        f"# Merge of `{report.app}`",
        "",
        "| inputs merged | rejected | samples | size before | size after |",
        "| --- | --- | --- | --- | --- |",
        f"| {len(report.merged)} | {len(report.rejected)} | {report.samples} | {report.size_before} | {report.size_after} |",
    ]
    for key, reason in report.rejected:
        lines.append(f"\n- rejected `{key}`: {reason}")
    if report.profile is not None and report.profile.samples:
        summary = summarize(report.profile, top=10)
        lines += ["", f"## Top functions by flat {summary.value_type}", "", "| flat | cum | function |", "| --- | --- | --- |"]
        lines += [f"| {fc.flat_label} | {fc.cum_label} | `{fc.name}` |" for fc in summary.top]
    create_markdown_artifact(key=f"merge-{report.app}", markdown="\n".join(lines), description="what the merge did")
