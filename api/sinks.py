"""The log event sink, and opening the sink the configuration names.

``LogEventSink`` is for running without Prefect: events only reach the log,
nothing reacts to them, and the periodic sweep merges what was staged.
``open_sink`` imports the Prefect sink only when it is chosen; neither sink
imports ``prefect``.
"""

from __future__ import annotations

import json
import logging

from profiling.pipeline import Event, EventSink

from .config import EventsConfig

log = logging.getLogger("autopgo.events")


class LogEventSink:
    """Writes each event to the log at INFO; never fails."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self._log = logger

    def emit(self, event: Event) -> None:
        """Log ``event``'s type and payload (as JSON) at INFO."""
        self._log.info("event %s %s", event.type, json.dumps(event.payload(), sort_keys=True))

    def check(self) -> None:
        """Nothing to check: the log is always there."""
        return None

    def close(self) -> None:
        """Nothing to release."""
        return None


def open_sink(config: EventsConfig) -> EventSink:
    """The event sink ``config`` names: the log, or Prefect at its API URL; ValueError for an unknown kind or no URL."""
    if config.kind == "log":
        return LogEventSink()
    if config.kind == "prefect":
        from profiling.pipeline import PrefectEventSink

        if not config.prefect_api_url:
            raise ValueError("events go to Prefect but no Prefect API URL is set (PREFECT_API_URL)")
        return PrefectEventSink(
            config.prefect_api_url,
            config.timeout,
            config.prefect_api_key,
            auth_string=config.prefect_auth_string,
        )
    raise ValueError(f"unknown event sink {config.kind!r}: use 'prefect' or 'log'")
