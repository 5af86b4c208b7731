"""The ``autopgo server`` command: its settings from flags, environment and autopgo.yaml, then the API.

Each setting is taken from the first place that gives it: the flag, then its
``AUTOPGO_*`` environment variable, then the configuration file (``--config``),
then the default. The server logs where each one came from when it starts.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from profiling.config import Config

from profiling.logs import LOG_LEVEL_ENV, LOG_LEVELS, parse_log_level
from profiling.stores import DEFAULT_BLOB_STORE



@dataclass(frozen=True, slots=True)
class Setting:
    """One server setting: its flag, its environment variable and its key in autopgo.yaml, if any."""

    name: str  # the argparse destination
    flag: str
    env: str | None
    default: Any
    key: str | None = None  # dotted key in autopgo.yaml
    parse: Callable[[str], Any] = str  # reads the environment variable's text
    secret: bool = False  # logged as set or not, never by value


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


def _switch(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


SETTINGS = (
    Setting("host", "--host", "AUTOPGO_HOST", "127.0.0.1", key="api.url"),
    Setting("port", "--port", "AUTOPGO_PORT", 8080, key="api.url", parse=_port),
    Setting("blob_store", "--blob-store", "AUTOPGO_BLOB_STORE", DEFAULT_BLOB_STORE, key="blob_store"),
    Setting("token", "--token", "AUTOPGO_API_TOKEN", None, key="api.token", secret=True),
    Setting("protect_reads", "--protect-reads", "AUTOPGO_PROTECT_READS", False, key="api.protect_reads", parse=_switch),
    Setting("log_level", "--log-level", LOG_LEVEL_ENV, "INFO", parse=parse_log_level),
    Setting("max_body", "--max-body", "AUTOPGO_MAX_BODY", "64MiB"),
    Setting("max_decompressed", "--max-decompressed", "AUTOPGO_MAX_DECOMPRESSED", "512MiB"),
    Setting("accept_any_profile", "--accept-any-profile", "AUTOPGO_ACCEPT_ANY_PROFILE", False, parse=_switch),
    Setting("workers", "--workers", "AUTOPGO_WORKERS", None, parse=_workers),
)


def register(commands: argparse._SubParsersAction) -> None:
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
        default=os.environ.get("AUTOPGO_CONFIG"),
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


@dataclass(frozen=True, slots=True)
class Chosen:
    value: Any
    origin: str  # "--port", "AUTOPGO_PORT", "autopgo.yaml (api.url)" or "default"


def choose_settings(
    flags: Mapping[str, Any], env: Mapping[str, str], config: Config | None, config_path: str | None
) -> dict[str, Chosen]:
    """Every setting of ``SETTINGS``, each from its flag, else environment, else config file, else default."""
    from_file = _file_values(config) if config is not None else {}
    chosen: dict[str, Chosen] = {}
    for setting in SETTINGS:
        if flags.get(setting.name) is not None:
            chosen[setting.name] = Chosen(flags[setting.name], setting.flag)
        elif setting.env and env.get(setting.env, "").strip():
            try:
                value = setting.parse(env[setting.env])
            except ValueError as exc:
                raise ValueError(f"{setting.env}: {exc}") from None
            chosen[setting.name] = Chosen(value, setting.env)
        elif setting.key and from_file.get(setting.name) is not None:
            chosen[setting.name] = Chosen(from_file[setting.name], f"{config_path} ({setting.key})")
        else:
            chosen[setting.name] = Chosen(setting.default, "default")
    return chosen


def _file_values(config: Config) -> dict[str, Any]:
    """The settings autopgo.yaml gives explicitly, by ``Setting.name``."""
    values: dict[str, Any] = {"token": config.api_token, "protect_reads": config.api_protect_reads or None}
    if "blob_store" in config.given:
        values["blob_store"] = config.blob_store
    if "api.url" in config.given:
        values["host"], values["port"] = config.listen_address()
    return values


def run_server(args: argparse.Namespace) -> int:
    import logging

    from api.config import EventsConfig, ServerConfig, clock_offset_ns, default_workers
    from api.limits import Limits
    from api.server import create_server, serve
    from profiling.config import load_config
    from profiling.errors import BlobStoreError, ConfigError
    from profiling.logs import configure_logging
    from profiling.stores import parse_store_url
    from profiling.units import parse_size

    file_config = load_config(args.config) if args.config else None
    chosen = choose_settings(vars(args), os.environ, file_config, args.config)
    value = {name: c.value for name, c in chosen.items()}
    configure_logging(value["log_level"])
    config = ServerConfig(
        host=value["host"],
        port=value["port"],
        blob_store=parse_store_url(value["blob_store"]).url,  # a relative location: from the current folder
        token=value["token"] or None,
        protect_reads=value["protect_reads"],
        limits=Limits(
            *(parse_size(chosen[name].value, chosen[name].origin, allow_zero=False) for name in ("max_body", "max_decompressed"))
        ),
        accept_any_profile=value["accept_any_profile"],
        workers=default_workers() if value["workers"] is None else value["workers"],
        events=EventsConfig.choose(args.events, args.prefect_api_url, os.environ),
        pipeline_config=args.config,
        clock_offset_ns=clock_offset_ns(os.environ),
    )
    if config.protect_reads and not config.token:
        origin = chosen["protect_reads"].origin
        raise ConfigError(f"protecting reads ({origin}) needs a token: set --token, AUTOPGO_API_TOKEN or api.token")
    try:
        server = create_server(config)
    except BlobStoreError as exc:
        raise ConfigError(f"blob store {config.blob_store}: {exc}") from None
    log = logging.getLogger("autopgo.api")
    for setting in SETTINGS:
        c = chosen[setting.name]
        shown = ("set" if c.value else "none") if setting.secret else c.value
        if setting.name == "workers":
            shown = config.workers
        log.info("setting %s = %s (from %s)", setting.name, shown, c.origin)
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
