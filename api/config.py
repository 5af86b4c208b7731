"""The API server's settings as plain data, and the parsing of their textual forms.

The command line (``cli/server.py``) fills these from flags and ``AUTOPGO_*``
environment variables; the server itself reads no environment.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from profiling.pipeline import Clock
from profiling.storage import DEFAULT_BLOB_STORE
from profiling.units import parse_duration

from .body import Limits
from .targethealth import DEFAULT_EVERY

EVENT_SINKS = ("prefect", "log")
CLOCK_OFFSET_ENV = "AUTOPGO_CLOCK_OFFSET"


@dataclass(frozen=True, slots=True)
class EventsConfig:
    """Where the API sends its events (``kind``: Prefect or the log), and how to reach Prefect."""

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
        how long one delivery may take (seconds, or a duration such as ``1500ms``).
        """
        url = prefect_api_url or env.get("PREFECT_API_URL") or None
        kind = (kind or env.get("AUTOPGO_EVENTS") or ("prefect" if url else "log")).strip().lower()
        if kind not in EVENT_SINKS:
            raise ValueError(f"unknown event sink {kind!r}: use one of {', '.join(EVENT_SINKS)}")
        if kind == "prefect" and not url:
            raise ValueError("--events prefect needs --prefect-api-url or PREFECT_API_URL")
        timeout = parse_duration(env.get("AUTOPGO_EVENTS_TIMEOUT") or "5", "AUTOPGO_EVENTS_TIMEOUT", bare_seconds=True)
        return cls(
            kind,
            url,
            env.get("PREFECT_API_KEY") or None,
            env.get("PREFECT_API_AUTH_STRING") or None,
            timeout.total_seconds(),
        )


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What ``create_server`` needs to run the API: address, blob store, token, limits, workers, events."""

    host: str = "127.0.0.1"
    port: int = 8080
    blob_store: str = DEFAULT_BLOB_STORE  # a URL for profiling.storage.stores.open_store
    token: str | None = None  # bearer token required for uploads and deletes
    protect_reads: bool = False  # the token is required on every endpoint but /api/health and /api/ready
    limits: Limits = field(default_factory=Limits)
    accept_any_profile: bool = False  # accept profiles Go's PGO cannot use (heap, ...)
    workers: int = 0  # processes that validate uploads; 0: the request threads do
    events: EventsConfig = field(default_factory=EventsConfig)
    read_timeout: float = 30.0  # seconds a connection may stay silent
    pipeline_config: str | None = None  # autopgo.yaml: its apps' target sources show in /api/health
    targets_every: float = DEFAULT_EVERY  # seconds between two listings of each target source, for /api/health
    clock_offset_ns: int = 0  # added to the clock the API stages uploads with; for testing clock skew only


def clock_offset_ns(env: Mapping[str, str]) -> int:
    """``AUTOPGO_CLOCK_OFFSET`` in nanoseconds (a duration such as ``5m`` or ``-5m``; 0 when unset).

    A seam for testing clock skew between API servers without touching the
    machine's clock: a server given an offset stages uploads as if its clock were
    that far ahead (or behind). Not a user setting, and not documented as one.
    """
    text = (env.get(CLOCK_OFFSET_ENV) or "").strip()
    if not text or text in {"0", "-0"}:
        return 0
    sign = -1 if text.startswith("-") else 1
    magnitude = parse_duration(text.lstrip("-"), CLOCK_OFFSET_ENV, bare_seconds=True)
    return sign * (magnitude // timedelta(microseconds=1)) * 1000


def offset_clock(offset_ns: int) -> Clock:
    """The machine's clock (nanoseconds since the epoch) shifted by ``offset_ns``."""
    if offset_ns == 0:
        return time.time_ns
    return lambda: time.time_ns() + offset_ns


def default_workers(cpus: int | None = None) -> int:
    """Validation processes by default: one core is left to the server process itself, at most four."""
    return max(1, min(4, (cpus or os.cpu_count() or 1) - 1))
