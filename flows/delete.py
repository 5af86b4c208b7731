"""The delete flow: the cascade behind DELETE /api/profile/<app>."""

from __future__ import annotations

from prefect import flow, get_run_logger

from profiling.pipeline import delete_app

from . import settings


@flow(name="delete", description="Remove an app's merged profile, staged and rejected uploads and batch state.")
def delete(app: str) -> int:
    """One run removes everything a delete of ``app`` hides and returns how many objects went;
    triggered by ``profile.deleted``, which the API emits for DELETE /api/profile/<app>."""
    cfg = settings.config()
    store = settings.store(cfg)
    try:
        report = delete_app(store, app)  # waits for a running merge, then takes over
    finally:
        store.close()
    removed = len(report.removed) if report else 0
    get_run_logger().info("%s: removed %d objects", app, removed)
    return removed
