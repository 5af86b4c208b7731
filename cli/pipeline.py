"""Pipeline commands: ``up`` (the embedded pipeline) and ``clean`` (remove merged profiles now)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from profiling.logs import LOG_LEVEL_ENV, LOG_LEVELS


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``up`` (``--config``, ``--data``, ``--prefect-port``, ``--log-level``) and ``clean`` (``--blob-store``,
    ``--config``, ``--older-than``, ``--larger-than``, ``--dry-run``)."""
    up = commands.add_parser(
        "up",
        help="run the whole pipeline on this machine: Prefect server, API and every flow",
        description="Start a local Prefect server (SQLite), the API, and serve every deployment of "
        "autopgo.yaml; Ctrl-C or SIGTERM stops them all.",
    )
    up.add_argument("-c", "--config", default=os.environ.get("AUTOPGO_CONFIG"),
                    help="the pipeline configuration (env AUTOPGO_CONFIG; default ./autopgo.yaml if there is one)")
    up.add_argument("--data", default=os.environ.get("AUTOPGO_DATA", "data"),
                    help="folder for the Prefect database (env AUTOPGO_DATA; default ./data)")
    up.add_argument("--prefect-port", type=int, default=int(os.environ.get("AUTOPGO_PREFECT_PORT", "4200")),
                    help="port of the local Prefect server and UI (env AUTOPGO_PREFECT_PORT; default 4200)")
    up.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, metavar="LEVEL",
                    help=f"{', '.join(LOG_LEVELS)}, also of the API and the flow server; DEBUG adds a line per "
                    f"HTTP request they send (env {LOG_LEVEL_ENV}; default INFO)")
    up.set_defaults(run=run_up)

    clean = commands.add_parser(
        "clean",
        help="remove merged profiles older or larger than given bounds",
        description="Remove merged profiles by age or size now, as the scheduled clean flow does.",
    )
    clean.add_argument("--blob-store", default=os.environ.get("AUTOPGO_BLOB_STORE"),
                       help="blob store URL (env AUTOPGO_BLOB_STORE; default: the one in --config)")
    clean.add_argument("-c", "--config", default=os.environ.get("AUTOPGO_CONFIG"),
                       help="configuration naming the blob store (env AUTOPGO_CONFIG; default ./autopgo.yaml if there is one)")
    clean.add_argument("--older-than", metavar="DURATION", help="not written for this long, e.g. 720h, 30d or 1h30m")
    clean.add_argument("--larger-than", metavar="SIZE",
                       help="larger than this: bytes, or e.g. 10MiB (K, M, G, T are multiples of 1024)")
    clean.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    clean.set_defaults(run=run_clean)


def run_up(args: argparse.Namespace) -> int:
    """Run ``autopgo up``: the Prefect server, the API and the flows on this machine until Ctrl-C or SIGTERM;
    0, or 1 if a child keeps dying and is given up on."""
    from flows.supervisor import run
    from profiling.config import find_config
    from profiling.logs import configure_logging, parse_log_level

    try:
        level = args.log_level or parse_log_level(os.environ.get(LOG_LEVEL_ENV) or "INFO")
    except ValueError as exc:
        raise ValueError(f"{LOG_LEVEL_ENV}: {exc}") from None
    configure_logging(level)
    config, config_path = find_config(args.config)
    if config_path is None:
        print("autopgo up: no autopgo.yaml here; running with defaults (no scrape schedules)", file=sys.stderr)
    return run(config, config_path, Path(args.data).resolve(), args.prefect_port, log_level=level)


def run_clean(args: argparse.Namespace) -> int:
    """Run ``autopgo clean``: remove (with ``--dry-run``, only list) the merged profiles past the bounds given,
    printing each; 0. ValueError without a bound."""
    from profiling.config import find_config
    from profiling.pipeline import CleanRule, clean
    from profiling.storage import open_store
    from profiling.units import parse_duration, parse_size

    if args.older_than is None and args.larger_than is None:
        raise ValueError("give --older-than, --larger-than or both")
    older = parse_duration(args.older_than, "--older-than") if args.older_than is not None else None
    larger = parse_size(args.larger_than, "--larger-than") if args.larger_than is not None else None
    # A relative --blob-store is relative to the current folder; the configuration's, to its file.
    store = open_store(args.blob_store or find_config(args.config)[0].blob_store)
    try:
        removed = clean(store, CleanRule(older, larger), dry_run=args.dry_run)
    finally:
        store.close()
    verb = "would remove" if args.dry_run else "removed"
    for info in removed:
        print(f"{verb} {info.key} ({info.size} bytes, last written {info.last_modified:%Y-%m-%d %H:%M:%S}Z)")
    if not removed:
        print("nothing to remove", file=sys.stderr)
    return 0
