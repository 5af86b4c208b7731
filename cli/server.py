"""The ``autopgo server`` command: its settings from flags, environment and autopgo.yaml, then the API.

Each setting is taken from the first place that gives it: the flag, then its
``AUTOPGO_*`` environment variable, then the configuration file (``--config``),
then the default. The server logs where each one came from when it starts.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from profiling.config import Config

from profiling.config import TOKEN_ENV, Chosen, Setting, resolve, switch
from profiling.logs import LOG_LEVEL_ENV, LOG_LEVELS, parse_log_level
from profiling.storage import DEFAULT_BLOB_STORE


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"bad port {text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"bad port {port}")
    return port


def _workers(text: str) -> int:
    try:
        workers = int(text)
    except ValueError:
        raise ValueError(f"bad number of workers {text!r}") from None
    if workers < 0:
        raise ValueError(f"bad number of workers {workers}")
    return workers


def _listen(part: int) -> Callable[[Config], Any]:
    return lambda config: config.listen_address()[part]


CONFIG = Setting("config", "--config", "AUTOPGO_CONFIG", None)  # read first: it names the file the rest may come from
SETTINGS = (
    Setting("host", "--host", "AUTOPGO_HOST", "127.0.0.1", key="api.url", read=_listen(0)),
    Setting("port", "--port", "AUTOPGO_PORT", 8080, key="api.url", read=_listen(1), parse=_port),
    Setting(
        "blob_store", "--blob-store", "AUTOPGO_BLOB_STORE", DEFAULT_BLOB_STORE, key="blob_store",
        read=attrgetter("blob_store"),
    ),
    Setting("token", "--token", TOKEN_ENV, None, key="api.token", read=attrgetter("api_token"), secret=True),
    Setting(
        "protect_reads", "--protect-reads", "AUTOPGO_PROTECT_READS", False, key="api.protect_reads",
        read=attrgetter("api_protect_reads"), parse=switch,
    ),
    Setting("log_level", "--log-level", LOG_LEVEL_ENV, "INFO", parse=parse_log_level),
    Setting("max_body", "--max-body", "AUTOPGO_MAX_BODY", "64MiB"),
    Setting("max_decompressed", "--max-decompressed", "AUTOPGO_MAX_DECOMPRESSED", "512MiB"),
    Setting("accept_any_profile", "--accept-any-profile", "AUTOPGO_ACCEPT_ANY_PROFILE", False, parse=switch),
    Setting("workers", "--workers", "AUTOPGO_WORKERS", None, parse=_workers),  # None: default_workers()
    Setting("events", "--events", "AUTOPGO_EVENTS", None),  # None: prefect if a Prefect URL is set, else log
    Setting("prefect_api_url", "--prefect-api-url", "PREFECT_API_URL", None),
)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``server``, with a flag per setting (``--host``, ``--port``, ``--blob-store``, ``--token``, ...,
    ``--config``); each defaults to None, so that a flag given is told from one that is not."""
    server = commands.add_parser(
        "server",
        help="run the HTTP API that takes uploads and serves merged profiles",
        description="Run the upload/download API. Each setting comes from its flag, else its AUTOPGO_* "
        "environment variable, else the configuration file (--config), else the default shown. "
        "Stops gracefully on SIGTERM or SIGINT.",
    )
    # Defaults are None: run_server tells a flag that was given from one that was not.
    server.add_argument("--host", help="address to listen on (AUTOPGO_HOST; api.url; default 127.0.0.1)")
    server.add_argument(
        "--port", type=_argument(_port), help="port, 0 for any free one (AUTOPGO_PORT; api.url; default 8080)"
    )
    server.add_argument(
        "--blob-store",
        metavar="URL",
        help=f"file:///path, file://./relative/path, a path, or s3://bucket/prefix?endpoint=...&region=...; "
        f"relative to the current folder (AUTOPGO_BLOB_STORE; blob_store; default {DEFAULT_BLOB_STORE})",
    )
    server.add_argument(
        "--token", help="bearer token required for uploads and deletes (AUTOPGO_API_TOKEN; api.token; default none)"
    )
    server.add_argument(
        "--protect-reads",
        action="store_const",
        const=True,
        help="require the token for downloads and listings too; /api/health and /api/ready stay open "
        "(AUTOPGO_PROTECT_READS; api.protect_reads; default off)",
    )
    server.add_argument(
        "--log-level", type=_argument(parse_log_level), help=f"{', '.join(LOG_LEVELS)} (AUTOPGO_LOG_LEVEL; default INFO)"
    )
    server.add_argument(
        "--max-body",
        metavar="SIZE",
        help="largest upload, as sent: bytes, or e.g. 64MiB (K, M, G, T are multiples of 1024) "
        "(AUTOPGO_MAX_BODY; default 64MiB)",
    )
    server.add_argument(
        "--max-decompressed",
        metavar="SIZE",
        help="largest upload once decompressed (AUTOPGO_MAX_DECOMPRESSED; default 512MiB)",
    )
    server.add_argument(
        "--accept-any-profile",
        action="store_const",
        const=True,
        help="also accept profiles Go's PGO cannot use, such as heap profiles (AUTOPGO_ACCEPT_ANY_PROFILE)",
    )
    server.add_argument(
        "--workers",
        type=_argument(_workers),
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
        metavar="FILE",
        help="autopgo.yaml: its blob_store and api settings, and its apps' target sources in /api/health "
        "(AUTOPGO_CONFIG; default none)",
    )
    server.set_defaults(run=run_server)


def _argument(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` as an argparse type: its ValueError becomes argparse's usage error."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def choose_settings(
    flags: Mapping[str, Any], env: Mapping[str, str], config: Config | None, config_path: object = None
) -> dict[str, Chosen]:
    """Every setting of ``SETTINGS`` with where it came from, each by ``profiling.config.settings.resolve``."""
    return {setting.name: resolve(setting, flags, env, config, config_path) for setting in SETTINGS}


def run_server(args: argparse.Namespace) -> int:
    """Run ``autopgo server``: take each setting from its flag, variable, file or default, log where each came from,
    and serve the API until SIGTERM or SIGINT; 0."""
    import logging

    from api.body import Limits
    from api.config import EventsConfig, ServerConfig, clock_offset_ns, default_workers
    from api.server import create_server, serve
    from profiling.config import load_config
    from profiling.errors import BlobStoreError, ConfigError
    from profiling.logs import configure_logging
    from profiling.storage import parse_store_url
    from profiling.units import parse_size

    where = resolve(CONFIG, vars(args), os.environ)
    file_config = load_config(where.value) if where.value else None
    chosen = {"config": where, **choose_settings(vars(args), os.environ, file_config, where.value)}
    value = {name: c.value for name, c in chosen.items()}
    configure_logging(value["log_level"])
    config = ServerConfig(
        host=value["host"],
        port=value["port"],
        blob_store=parse_store_url(value["blob_store"]).url,  # a relative location: from the current folder
        token=value["token"] or None,
        protect_reads=value["protect_reads"],
        limits=Limits(
            *(parse_size(chosen[name].value, chosen[name].name, allow_zero=False) for name in ("max_body", "max_decompressed"))
        ),
        accept_any_profile=value["accept_any_profile"],
        workers=default_workers() if value["workers"] is None else value["workers"],
        events=EventsConfig.choose(value["events"], value["prefect_api_url"], os.environ),
        pipeline_config=where.value,
        clock_offset_ns=clock_offset_ns(os.environ),
    )
    if config.protect_reads and not config.token:
        origin = chosen["protect_reads"].origin
        raise ConfigError(f"protecting reads ({origin}) needs a token: set --token, {TOKEN_ENV} or api.token")
    try:
        server = create_server(config)
    except BlobStoreError as exc:
        raise ConfigError(f"blob store {config.blob_store} ({chosen['blob_store'].origin}): {exc}") from None
    log = logging.getLogger("autopgo.api")
    # As the server uses them: the store as a URL, and what None stood for.
    effective = {"blob_store": config.blob_store, "workers": config.workers, "events": config.events.kind}
    for setting in (CONFIG, *SETTINGS):
        c = chosen[setting.name]
        log.info("setting %s = %s (from %s)", setting.name, setting.shown(effective.get(setting.name, c.value)), c.origin)
    if config.clock_offset_ns:
        log.warning("clock shifted by %+.3fs (AUTOPGO_CLOCK_OFFSET, for testing clock skew)", config.clock_offset_ns / 1e9)
    print(f"autopgo server listening on {server.url}", flush=True)
    log.info(
        "blob store %s, events to %s, %d validation workers, token %s",
        config.blob_store,
        config.events.kind,
        config.workers,
        ("required for every endpoint but the probes" if config.protect_reads else "required for writes")
        if config.token
        else "off",
    )
    serve(server)
    return 0
