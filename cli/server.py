"""The ``autopgo server`` command: parse flags (with ``AUTOPGO_*`` defaults) and run the API."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_MAX_BODY = "64MiB"
DEFAULT_MAX_DECOMPRESSED = "512MiB"


def register(commands: argparse._SubParsersAction) -> None:
    env = os.environ
    server = commands.add_parser(
        "server",
        help="run the HTTP API that takes uploads and serves merged profiles",
        description="Run the upload/download API. Every flag defaults to its AUTOPGO_* environment "
        "variable, then to the value shown. Stops gracefully on SIGTERM or SIGINT.",
    )
    server.add_argument(
        "--host",
        default=env.get("AUTOPGO_HOST", "127.0.0.1"),
        help="address to listen on (AUTOPGO_HOST; default %(default)s)",
    )
    server.add_argument(
        "--port",
        type=int,  # argparse converts a string default too, so a bad AUTOPGO_PORT is reported like a bad flag
        default=env.get("AUTOPGO_PORT", "8080"),
        help="port, 0 for any free one (AUTOPGO_PORT; default %(default)s)",
    )
    server.add_argument(
        "--blob-store",
        default=env.get("AUTOPGO_BLOB_STORE", "file://./data/blobs"),
        metavar="URL",
        help="file:///path, file://./relative/path, a path, or s3://bucket/prefix?endpoint=...&region=...; "
        "relative to the current folder (AUTOPGO_BLOB_STORE; default %(default)s)",
    )
    server.add_argument(
        "--token",
        default=env.get("AUTOPGO_API_TOKEN"),
        help="bearer token required for uploads and deletes (AUTOPGO_API_TOKEN; default none)",
    )
    server.add_argument(
        "--log-level",
        default=env.get("AUTOPGO_LOG_LEVEL", "INFO").upper(),
        type=str.upper,
        choices=LOG_LEVELS,
        help="(AUTOPGO_LOG_LEVEL; default %(default)s)",
    )
    # Sizes are read in run_server, so that a bad one is reported naming the flag or variable it came from.
    server.add_argument(
        "--max-body",
        metavar="SIZE",
        help="largest upload, as sent: bytes, or e.g. 64MiB (K, M, G, T are multiples of 1024) "
        f"(AUTOPGO_MAX_BODY; default {DEFAULT_MAX_BODY})",
    )
    server.add_argument(
        "--max-decompressed",
        metavar="SIZE",
        help=f"largest upload once decompressed (AUTOPGO_MAX_DECOMPRESSED; default {DEFAULT_MAX_DECOMPRESSED})",
    )
    server.add_argument(
        "--accept-any-profile",
        action="store_true",
        default=_flag(env, "AUTOPGO_ACCEPT_ANY_PROFILE"),
        help="also accept profiles Go's PGO cannot use, such as heap profiles (AUTOPGO_ACCEPT_ANY_PROFILE)",
    )
    server.add_argument(
        "--workers",
        type=int,
        default=env.get("AUTOPGO_WORKERS"),
        metavar="N",
        help="processes that validate uploads, 0 to validate in the request threads "
        "(AUTOPGO_WORKERS; default: one less than the CPUs, 1 to 4)",
    )
    server.add_argument(
        "--events",
        choices=("prefect", "log"),
        default=None,
        help="where events go (AUTOPGO_EVENTS; default prefect if a Prefect API URL is set, else log)",
    )
    server.add_argument(
        "--prefect-api-url",
        default=None,
        metavar="URL",
        help="Prefect server API, e.g. http://127.0.0.1:4200/api (PREFECT_API_URL)",
    )
    server.add_argument(
        "--config",
        default=env.get("AUTOPGO_CONFIG"),
        metavar="FILE",
        help="autopgo.yaml, to report its apps' target sources in /api/health (AUTOPGO_CONFIG; default none)",
    )
    server.set_defaults(run=run_server)


def run_server(args: argparse.Namespace) -> int:
    import logging

    from api.config import EventsConfig, ServerConfig, default_workers
    from api.limits import Limits
    from api.server import create_server, serve
    from profiling.errors import BlobStoreError, ConfigError
    from profiling.stores import parse_store_url
    from profiling.units import parse_size

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if not 0 <= args.port <= 65535:
        raise ValueError(f"bad port {args.port}")
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"bad number of workers {args.workers}")
    config = ServerConfig(
        host=args.host,
        port=args.port,
        blob_store=parse_store_url(args.blob_store).url,  # a relative location: from the current folder
        token=args.token or None,
        limits=Limits(
            parse_size(*_given(args.max_body, "--max-body", "AUTOPGO_MAX_BODY", DEFAULT_MAX_BODY), allow_zero=False),
            parse_size(
                *_given(args.max_decompressed, "--max-decompressed", "AUTOPGO_MAX_DECOMPRESSED", DEFAULT_MAX_DECOMPRESSED),
                allow_zero=False,
            ),
        ),
        accept_any_profile=args.accept_any_profile,
        workers=default_workers() if args.workers is None else args.workers,
        events=EventsConfig.choose(args.events, args.prefect_api_url, os.environ),
        pipeline_config=args.config,
    )
    try:
        server = create_server(config)
    except BlobStoreError as exc:
        raise ConfigError(f"blob store {config.blob_store}: {exc}") from None
    print(f"autopgo server listening on {server.url}", flush=True)
    logging.getLogger("autopgo.api").info(
        "blob store %s, events to %s, %d validation workers, token %s",
        config.blob_store,
        config.events.kind,
        config.workers,
        "required for writes" if config.token else "off",
    )
    serve(server)
    return 0


def _given(value: str | None, flag: str, variable: str, default: str) -> tuple[str, str]:
    """The flag's value, else the environment variable's, else the default; with the name to report it under."""
    if value is not None:
        return value, flag
    if os.environ.get(variable):
        return os.environ[variable], variable
    return default, flag


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")
