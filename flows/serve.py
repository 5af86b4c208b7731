"""Serve every deployment from this process: `python -m flows.serve` (what `autopgo up` runs)."""

from __future__ import annotations

import logging

from prefect import serve

from . import settings
from .deployments import deployments


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(*deployments(settings.config()), print_starting_message=True)


if __name__ == "__main__":
    main()
