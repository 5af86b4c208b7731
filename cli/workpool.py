"""Commands for a shared Prefect server: ``deploy`` (register the pipeline) and ``worker`` (run its flows)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from profiling.config import Config

CONFIG_HELP = "the pipeline configuration (env AUTOPGO_CONFIG; default ./autopgo.yaml if there is one)"
POOL_ENV = "AUTOPGO_WORK_POOL"


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``deploy`` (``--config``, ``--work-pool``, ``--create-pool``) and ``worker`` (``--pool``, ``--config``);
    the pool is required unless ``AUTOPGO_WORK_POOL`` names it."""
    deploy = commands.add_parser(
        "deploy",
        help="register the pipeline's deployments on the Prefect server at PREFECT_API_URL",
        description="Create or update every deployment of autopgo.yaml (scrape schedules, merge and delete "
        "triggers, sweep, clean) for a process work pool, and remove those it no longer has.",
    )
    deploy.add_argument("-c", "--config", default=os.environ.get("AUTOPGO_CONFIG"), help=CONFIG_HELP)
    deploy.add_argument("--work-pool", default=os.environ.get(POOL_ENV), required=not os.environ.get(POOL_ENV),
                        metavar="NAME", help=f"the process work pool the deployments run on (env {POOL_ENV})")
    deploy.add_argument("--create-pool", action="store_true",
                        help="create the work pool (type process) if the server has none of that name")
    deploy.set_defaults(run=run_deploy)

    worker = commands.add_parser(
        "worker",
        help="run the pipeline's flows from a work pool on this machine",
        description="Start a Prefect worker for the process work pool, with the environment the flows need; "
        "Ctrl-C or SIGTERM stops it and its flow runs.",
    )
    worker.add_argument("--pool", default=os.environ.get(POOL_ENV), required=not os.environ.get(POOL_ENV),
                        metavar="NAME", help=f"the process work pool to take flow runs from (env {POOL_ENV})")
    worker.add_argument("-c", "--config", default=os.environ.get("AUTOPGO_CONFIG"), help=CONFIG_HELP)
    worker.set_defaults(run=run_worker)


def _config_file(given: str | None) -> tuple[Config, Path]:
    """The configuration and its file; a ValueError without one, since its defaults name no shared store."""
    from profiling.config import find_config

    config, path = find_config(given)
    if path is None:
        raise ValueError("no autopgo.yaml here: give the pipeline's configuration with -c FILE or AUTOPGO_CONFIG")
    return config, path


def run_deploy(args: argparse.Namespace) -> int:
    """Run ``autopgo deploy``: register the pipeline's deployments on the Prefect server for the work pool and
    remove those it no longer has, printing each change; 0."""
    from flows.workpool import deploy

    config, _ = _config_file(args.config)
    for change in deploy(config, args.work_pool, create_pool=args.create_pool):
        print(f"{change.action} {change.what}", flush=True)
    return 0


def run_worker(args: argparse.Namespace) -> int:
    """Run ``autopgo worker``: check the configuration and the work pool, then run the pool's flows until SIGTERM
    or SIGINT; 0 once the worker and its runs are gone."""
    import logging

    _, path = _config_file(args.config)  # read now, so that a broken file stops the worker before it starts
    from flows import worker
    from flows.workpool import connect, work_pool

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("flows").setLevel(logging.INFO)  # Prefect's logging setup keeps the root at WARNING
    with connect() as client:
        work_pool(client, args.pool)
    os.environ.update(worker.environment(os.environ, path))
    return worker.run(args.pool)
