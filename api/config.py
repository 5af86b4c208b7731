"""The API server's settings as plain data, and the parsing of their textual forms.

The command line (``cli/server.py``) fills these from flags and ``AUTOPGO_*``
environment variables; the server itself reads no environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .limits import Limits

EVENT_SINKS = ("prefect", "log")
DEFAULT_BLOB_STORE = "file://./data/blobs"
_SIZE = re.compile(r"\s*([0-9]+)\s*([kmgt]?)(i?b?)\s*", re.IGNORECASE)
_UNITS = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}


@dataclass(frozen=True, slots=True)
class EventsConfig:
    kind: str = "log"  # one of EVENT_SINKS
    prefect_api_url: str | None = None
    prefect_api_key: str | None = None
    prefect_auth_string: str | None = None
    timeout: float = 5.0  # seconds for one delivery to Prefect

    @classmethod
    def choose(
        cls, kind: str | None, prefect_api_url: str | None, env: Mapping[str, str]
    ) -> EventsConfig:
        """The sink named by ``kind``, else by ``AUTOPGO_EVENTS``, else Prefect if its API URL is known, else log.

        Prefect's own variables give its URL and credentials (``PREFECT_API_URL``,
        ``PREFECT_API_KEY``, ``PREFECT_API_AUTH_STRING``); ``AUTOPGO_EVENTS_TIMEOUT``
        the seconds one delivery may take.
        """
        url = prefect_api_url or env.get("PREFECT_API_URL") or None
        kind = (kind or env.get("AUTOPGO_EVENTS") or ("prefect" if url else "log")).strip().lower()
        if kind not in EVENT_SINKS:
            raise ValueError(f"unknown event sink {kind!r}: use one of {', '.join(EVENT_SINKS)}")
        if kind == "prefect" and not url:
            raise ValueError("--events prefect needs --prefect-api-url or PREFECT_API_URL")
        try:
            timeout = float(env.get("AUTOPGO_EVENTS_TIMEOUT") or 5.0)
        except ValueError:
            raise ValueError(f"AUTOPGO_EVENTS_TIMEOUT must be seconds, not {env['AUTOPGO_EVENTS_TIMEOUT']!r}") from None
        return cls(
            kind,
            url,
            env.get("PREFECT_API_KEY") or None,
            env.get("PREFECT_API_AUTH_STRING") or None,
            timeout,
        )


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    blob_store: str = DEFAULT_BLOB_STORE  # a URL for profiling.stores.open_store
    token: str | None = None  # bearer token required for uploads and deletes
    protect_reads: bool = False  # the token is required on every endpoint but /api/health and /api/ready
    limits: Limits = field(default_factory=Limits)
    accept_any_profile: bool = False  # accept profiles Go's PGO cannot use (heap, ...)
    workers: int = 0  # processes that validate uploads; 0: the request threads do
    events: EventsConfig = field(default_factory=EventsConfig)
    read_timeout: float = 30.0  # seconds a connection may stay silent
    pipeline_config: str | None = None  # autopgo.yaml: its apps' target sources show in /api/health


def default_workers(cpus: int | None = None) -> int:
    """Validation processes by default: one core is left to the server process itself, at most four."""
    return max(1, min(4, (cpus or os.cpu_count() or 1) - 1))


def parse_size(text: str) -> int:
    """A byte count: ``1048576``, ``64MiB``, ``64M``, ``512k`` (binary multiples)."""
    match = _SIZE.fullmatch(text)
    if not match or (match.group(3) and match.group(3).lower() not in ("b", "ib")):
        raise ValueError(f"bad size {text!r}: use bytes, or a number with K, M, G or T (e.g. 64MiB)")
    return int(match.group(1)) << _UNITS[match.group(2).lower()]


def resolve_blob_url(url: str, cwd: Path | None = None) -> str:
    """A relative file location made absolute: ``file://./data`` and plain paths.

    ``file://./x``, ``file://../x`` and ``file://~/x`` are read as paths
    relative to ``cwd`` (or home); a plain path becomes a ``file://`` URL.
    Every other URL is returned as it is, for ``open_store`` to judge.
    """
    base = cwd or Path.cwd()
    if url.startswith("file://"):
        rest = url[len("file://") :]
        if not rest.startswith(("./", "../", "~")) and rest not in (".", ".."):
            return url
        path = rest
    elif "://" in url or not url.strip():
        return url
    else:
        path = url
    return "file://" + str((base / Path(path).expanduser()).resolve())
