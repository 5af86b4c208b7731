"""How every autopgo process logs: one format on standard error, and HTTP clients kept quiet.

httpx logs each request it sends at INFO (``HTTP Request: POST ... "HTTP/1.1 204 No
Content"``): one line per event the API emits, per readiness probe of ``autopgo up``,
per fetch of a scrape. Those lines say nothing the process's own log does not, so its
loggers (and httpcore's) show warnings only, unless the level is DEBUG.
"""

from __future__ import annotations

import logging
import sys

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_LEVEL_ENV = "AUTOPGO_LOG_LEVEL"  # the level of `autopgo server` and of `autopgo up` and its children
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
HTTP_CLIENT_LOGGERS = ("httpx", "httpcore")


def parse_log_level(text: str) -> str:
    """``text`` as one of ``LOG_LEVELS``, in any case; ValueError otherwise."""
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"unknown log level {text!r}: use one of {', '.join(LOG_LEVELS)}")
    return level


def configure_logging(level: str) -> None:
    """Log at ``level`` to standard error (unless logging is set up already, as Prefect does), HTTP clients quiet."""
    logging.basicConfig(level=level, format=FORMAT, stream=sys.stderr)
    quiet_http_clients(level)


def quiet_http_clients(level: str) -> None:
    """httpx and httpcore log warnings only, unless ``level`` is DEBUG, where they log as the rest does."""
    for name in HTTP_CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if level == "DEBUG" else logging.WARNING)
