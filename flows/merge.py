"""The merge flow (every app with pending uploads, triggered by uploads) and the sweep (on a schedule).

One merge run serves the whole pipeline, not one app: the upload trigger fires
at most once per ``THROTTLE`` window whatever the number of apps, and the run
merges every app that has staged uploads, then keeps watching for that window
so that the uploads whose events the throttle swallowed are merged within a
poll. Runs that overlap share the work safely: an app's batch record lets one
run at a time merge it (profiling.pipeline.batches).

An app's merge is not a task run: at fleet size a task run per app and merge
cost the Prefect server more than the merge itself (about 35 ms of its CPU each,
measured on SQLite). What a user looks for per app is published instead as the
app's artifact, ``merge-<app>``: when it was last merged, from how many uploads,
or why it failed. Each committed batch also emits ``profile.merged`` on the
app's resource, for automations (a rebuild) and the event feed. A failing app
fails alone, is retried after ``RETRY_AFTER``, and the run ends Failed naming it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, State

from profiling.config import Config
from profiling.pipeline import (
    EventError,
    EventSink,
    MergeReport,
    delete_app,
    find_pending,
    merge_failure_markdown,
    merge_markdown,
    merge_pending,
    merged_event,
    merged_key,
    needs_cleanup,
    refresh_due,
)
from profiling.pprof import size_label
from profiling.storage import BlobStore

from . import settings
from .failures import fail, failure_reason, quiet_reported_failures

quiet_reported_failures()

POLL_SECONDS = 2.0
# After an upload triggers a merge run, further uploads within this window start
# no new run (see deployments.py): the running one lingers a little longer than
# that (it starts a moment after the trigger fires) to merge them. A run a minute
# while uploads flow; each costs a new interpreter.
THROTTLE = timedelta(seconds=60)
LINGER = THROTTLE + timedelta(seconds=10)
DESCRIPTION = "what the app's last merge did"
RETRY_AFTER = 30.0  # seconds before a run tries again an app whose merge failed


@dataclass
class _Merges:
    """What one run merged and what failed, by app."""

    sink: EventSink | None = None  # where profile.merged goes
    merged: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    retry_at: dict[str, float] = field(default_factory=dict)

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()

    def wanted(self, apps: Iterable[str], now: float) -> list[str]:
        """``apps`` but those that failed less than ``RETRY_AFTER`` ago."""
        return [app for app in apps if self.retry_at.get(app, 0.0) <= now]

    def outcome(self, what: str) -> State:
        """The run's final state: Failed naming the apps whose last attempt failed."""
        summary = f"{what}: merged {sum(self.merged.values())} uploads of {len(self.merged)} apps"
        if self.failed:
            shown = ", ".join(sorted(self.failed)[:10])
            more = f" and {len(self.failed) - 10} more" if len(self.failed) > 10 else ""
            return fail(f"{summary}; failed: {shown}{more}")
        get_run_logger().info("%s", summary)
        return Completed(message=summary)


@flow(name="merge", description="Merge the staged uploads of every app (or of those named), each exactly once.")
def merge(apps: list[str] | None = None, linger_seconds: float = LINGER.total_seconds()) -> State:
    """Merge until nothing is staged, then keep watching for ``linger_seconds``."""
    cfg = settings.config()
    store = settings.store(cfg)
    wanted = set(apps) if apps is not None else None
    deadline = time.monotonic() + linger_seconds
    merges = _Merges(settings.event_sink())
    try:
        while True:
            _merge_apps(store, cfg, merges.wanted(_staged(store, wanted), time.monotonic()), merges)
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
    finally:
        merges.close()
        store.close()
    return merges.outcome("merge")


def _staged(store: BlobStore, wanted: set[str] | None) -> list[str]:
    staged = find_pending(store).staged
    return sorted(staged if wanted is None else staged & wanted)


@flow(name="sweep", description="Merge what is staged and finish deletes, including those whose event was lost.")
def sweep() -> State:
    """One run finishes deletes (those whose event was lost too) and merges every app with staged uploads or a profile
    due to be derived again (``ageing``); run every ``sweep_every``. Failed names the apps whose merge failed."""
    log = get_run_logger()
    cfg = settings.config()
    store = settings.store(cfg)
    merges = _Merges(settings.event_sink())
    try:
        pending = find_pending(store)
        for app in sorted(pending.deleted):
            if needs_cleanup(store, app) and delete_app(store, app, lock_timeout=5, take_over=False):
                log.info("%s: finished a delete", app)
        _merge_apps(store, cfg, sorted(pending.staged | ageing(store, cfg)), merges)
    finally:
        merges.close()
        store.close()
    return merges.outcome("sweep")


def ageing(store: BlobStore, cfg: Config, now_ns: int | None = None) -> set[str]:
    """The apps whose profile must be derived again though nothing was uploaded: part of their
    data left their window, or their window, builds or workloads changed (one small read each)."""
    return {app.name for app in cfg.apps if refresh_due(store, app.name, app.parts, now_ns)}


def _merge_apps(store: BlobStore, cfg: Config, apps: Iterable[str], merges: _Merges) -> None:
    """Merge each app in turn; one that fails is reported in its artifact and does not stop the others."""
    for app in apps:
        try:
            app_cfg = cfg.app(app)
            report = merge_pending(
                store, app, app_cfg.prune, never_inline=app_cfg.never_inline, policy=app_cfg.parts
            )
        except Exception as exc:  # noqa: BLE001 - one app's failure (a store error, a corrupt profile) is its own
            reason = failure_reason(exc, get_run_logger())
            merges.failed[app] = reason
            merges.retry_at[app] = time.monotonic() + RETRY_AFTER
            _publish_failure(app, reason)
            continue
        if report.merged or report.rejected or report.batches or report.expired:
            # else another run holds the app's batch, maybe our failed one
            merges.failed.pop(app, None)
            merges.merged[app] = merges.merged.get(app, 0) + len(report.merged)
            _publish(report)
            _announce(report, merges.sink)


def _announce(report: MergeReport, sink: EventSink | None) -> None:
    """Emit ``profile.merged`` per committed batch; one that cannot be delivered is logged, as the API does."""
    for batch_id, keys in report.committed:
        if not keys:  # every upload of the batch was rejected: the profile's data did not change
            continue
        event = merged_event(report.app, batch_id, keys, merged_key(report.app))
        if sink is None:
            get_run_logger().info("%s: no Prefect API to send %s to", report.app, event.type)
            continue
        try:
            sink.emit(event)
        except EventError as exc:
            get_run_logger().warning("%s for %s not delivered: %s", event.type, report.app, exc)


def _publish_failure(app: str, reason: str) -> None:
    """Log the app's failure in one line and make it the app's latest artifact, so the UI shows why."""
    get_run_logger().error("%s: merge failed: %s", app, reason)
    create_markdown_artifact(key=f"merge-{app}", markdown=merge_failure_markdown(app, reason), description=DESCRIPTION)


def _publish(report: MergeReport) -> None:
    """Log what the merge did and publish it as the app's artifact, so the UI shows it."""
    dropped = len(report.expired) + len(report.superseded)
    get_run_logger().info(
        "%s: %d batches, %d uploads merged, %d rejected%s, %s -> %s",
        report.app,
        report.batches,
        len(report.merged),
        len(report.rejected),
        f", {dropped} older than the window or the builds kept" if dropped else "",
        size_label(report.size_before),
        size_label(report.size_after),
    )
    create_markdown_artifact(key=f"merge-{report.app}", markdown=merge_markdown(report), description=DESCRIPTION)
