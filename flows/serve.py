"""Serve every deployment from this process: `python -m flows.serve` (what `autopgo up` runs)."""

from __future__ import annotations

import os

from prefect import serve

from profiling.logs import LOG_LEVEL_ENV, configure_logging, parse_log_level

from . import settings
from .deployments import deployments


def main() -> None:
    """Serve every deployment of the pipeline in this process until stopped; log at ``AUTOPGO_LOG_LEVEL`` (or INFO)."""
    configure_logging(parse_log_level(os.environ.get(LOG_LEVEL_ENV) or "INFO"))
    serve(*deployments(settings.config()), print_starting_message=True)


if __name__ == "__main__":
    main()
