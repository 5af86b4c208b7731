"""The merge flow (one app, triggered by uploads) and the sweep (every app, on a schedule)."""

from __future__ import annotations

import time
from datetime import timedelta

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from profiling.batches import MergeReport, merge_pending
from profiling.blobs import BlobStore
from profiling.deletion import delete_app, needs_cleanup
from profiling.names import DELETED, STAGING, app_of, staging_prefix
from profiling.summary import summarize

from . import settings

POLL_SECONDS = 0.5
# After a merge is triggered for an app, further uploads within this window start no
# new run (see deployments.py): the running one lingers that long to merge them.
THROTTLE = timedelta(seconds=10)


@flow(name="merge", description="Merge every staged upload of an app into <app>/default.pgo, each exactly once.")
def merge(app: str, linger_seconds: float = THROTTLE.total_seconds()) -> dict[str, int]:
    """Merge until nothing is staged, then keep watching for ``linger_seconds``.

    The upload trigger fires once per app and throttle window; lingering for
    that window merges the uploads whose events it swallowed within a poll,
    instead of leaving them to the next sweep.
    """
    cfg = settings.config()
    store = settings.store(cfg)
    deadline = time.monotonic() + linger_seconds
    reports = []
    try:
        while True:
            reports.append(merge_pending(store, app, cfg.app(app).prune))
            if not _await_uploads(store, app, deadline):
                break
    finally:
        store.close()
    report = _combine(app, reports)
    _publish(report)
    return {"batches": report.batches, "merged": len(report.merged), "rejected": len(report.rejected)}


def _await_uploads(store: BlobStore, app: str, deadline: float) -> bool:
    """Whether an upload got staged before ``deadline``."""
    while time.monotonic() < deadline:
        if any(True for _ in store.list(staging_prefix(app))):
            return True
        time.sleep(POLL_SECONDS)
    return False


def _combine(app: str, reports: list[MergeReport]) -> MergeReport:
    out = MergeReport(app)
    for r in reports:
        out.batches += r.batches
        out.merged += r.merged
        out.rejected += r.rejected
    firsts = [r for r in reports if r.batches]
    if firsts:
        out.size_before, out.size_after, out.profile = firsts[0].size_before, firsts[-1].size_after, firsts[-1].profile
    return out


@flow(name="sweep", description="Merge what is staged and finish deletes, including those whose event was lost.")
def sweep() -> dict[str, int]:
    log = get_run_logger()
    cfg = settings.config()
    store = settings.store(cfg)
    merged: dict[str, int] = {}
    try:
        staged, deleted = set(), set()
        for info in store.list():
            app = app_of(info.key)
            if app and f"/{STAGING}/" in info.key:
                staged.add(app)
            elif app and f"/{DELETED}/" in info.key:
                deleted.add(app)
        for app in sorted(deleted):
            if needs_cleanup(store, app) and delete_app(store, app, lock_timeout=5, take_over=False):
                log.info("%s: finished a delete", app)
        for app in sorted(staged):
            report = merge_pending(store, app, cfg.app(app).prune)
            merged[app] = len(report.merged)
            if report.merged or report.rejected:
                _publish(report)
    finally:
        store.close()
    log.info("swept %d apps: %s", len(merged), merged or "nothing pending")
    return merged


def _publish(report: MergeReport) -> None:
    """Log and publish what the run did as a Prefect artifact, so the UI shows it."""
    log = get_run_logger()
    log.info(
        "%s: %d batches, %d uploads merged, %d rejected, %d -> %d bytes",
        report.app,
        report.batches,
        len(report.merged),
        len(report.rejected),
        report.size_before,
        report.size_after,
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
        lines += [f"| {fc.flat} | {fc.cum} | `{fc.name}` |" for fc in summary.top]
    create_markdown_artifact(key=f"merge-{report.app}", markdown="\n".join(lines), description="what the merge did")
