"""What every flow run needs: the configuration and the blob store it names.

Flow runs find ``autopgo.yaml`` through ``AUTOPGO_CONFIG``, set by ``autopgo up``
or by the worker's environment; without it, ``./autopgo.yaml`` if there is one,
else the defaults.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect.settings import get_current_settings

from profiling.client import AsyncClient
from profiling.config import Config, client_token, find_config
from profiling.pipeline import PrefectEventSink
from profiling.storage import BlobStore, open_store

CONFIG_ENV = "AUTOPGO_CONFIG"
STATE_ENV = "AUTOPGO_STATE"


def config() -> Config:
    """The configuration: the file ``AUTOPGO_CONFIG`` names, else ./autopgo.yaml if there is one, else the defaults."""
    return find_config(os.environ.get(CONFIG_ENV) or None)[0]


def state_dir() -> Path:
    """Where flow runs keep what must outlive them (a target file's last good list):
    ``AUTOPGO_STATE``, set by ``autopgo up`` to ``<data>/state``; else ``~/.local/state/autopgo``."""
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV])
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "autopgo"


def store(cfg: Config) -> BlobStore:
    """The blob store ``cfg`` names, opened; the caller closes it."""
    return open_store(cfg.blob_store)


def api_client(cfg: Config) -> AsyncClient:
    """The API client scrape runs upload with: to ``api.url``, with the token the API server itself
    takes first (``AUTOPGO_API_TOKEN``, else ``api.token``), so that a token kept out of the file
    and given to the server and the workers alike is sent."""
    return AsyncClient(cfg.api_url, token=client_token(os.environ, cfg))


def event_sink() -> PrefectEventSink | None:
    """A sink to the Prefect server this run reports to, as the API's (no event lost unknown); None without one."""
    api = get_current_settings().api
    if not api.url:
        return None
    secret = lambda value: value.get_secret_value() if value is not None else None  # noqa: E731
    return PrefectEventSink(api.url, api_key=secret(api.key), auth_string=secret(api.auth_string))
