"""The clean flow: remove merged profiles by age or size, on a schedule."""

from __future__ import annotations

from prefect import flow, get_run_logger

from profiling.pipeline import CleanRule
from profiling.pipeline import clean as clean_store

from . import settings


@flow(name="clean", description="Remove merged profiles older or larger than the configured bounds.")
def clean() -> list[str]:
    """One run removes the merged profiles older or larger than autopgo.yaml's ``clean`` bounds and returns their keys;
    its deployment, made only when ``clean`` is configured, runs every ``clean.every``."""
    cfg = settings.config()
    if cfg.clean is None:
        get_run_logger().info("no clean bounds configured")
        return []
    store = settings.store(cfg)
    try:
        removed = clean_store(store, CleanRule(cfg.clean.older_than, cfg.clean.larger_than))
    finally:
        store.close()
    get_run_logger().info("removed %d merged profiles", len(removed))
    return [info.key for info in removed]
