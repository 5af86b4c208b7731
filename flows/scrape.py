"""The scrape flow: profile some instances of an app and upload what they give."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.states import State

from profiling.client import Client
from profiling.discovery import DiscoveryError
from profiling.discovery.sources import SourceCache
from profiling.errors import ConfigError
from profiling.scrape import scrape as scrape_targets

from . import settings
from .failures import fail

# Sources live as long as the serving process, so a file source keeps its
# last good list across runs when an edit breaks the file. A source that cannot
# list its targets (DiscoveryError, or ConfigError for a file never read well)
# fails that run with its one-line message, no traceback; the schedule goes on.
_sources = SourceCache()


@flow(name="scrape", description="Fetch /debug/pprof/profile from up to sample_size instances and upload each.")
def scrape(app: str) -> dict[str, object] | State:
    log = get_run_logger()
    cfg = settings.config()
    scrape_cfg = cfg.app(app).scrape
    if scrape_cfg is None:
        raise ConfigError(f"app {app} has no scrape settings")
    try:
        targets = _sources.source(app, scrape_cfg).targets()
    except (DiscoveryError, ConfigError) as exc:  # the source's one line: the run fails with it
        return fail(f"cannot list the targets of {app}: {exc}")
    with Client(cfg.api_url, token=cfg.api_token) as client:
        report = scrape_targets(
            targets, scrape_cfg.sample_size, scrape_cfg.duration, lambda data: client.upload(app, data)
        )
    log.info("%s: %d uploaded, %d failed of %d targets", app, len(report.uploaded), len(report.failed), len(targets))
    return {"uploaded": report.uploaded, "failed": report.failed}
