"""An event sink that posts autopgo's events to a Prefect 3 server over its REST API.

Why not ``prefect.events.emit_event``: it queues the event for a background
websocket worker and returns before delivery, and the worker drops events when
the server is down; importing ``prefect`` also costs about two seconds and a
lot of memory. This sink sends each event synchronously with ``httpx`` and
raises ``EventError`` unless Prefect answered with a 2xx, so no event is lost
without its caller knowing.

The wire format is Prefect's own (``prefect/server/api/events.py``,
``create_events``: ``POST {PREFECT_API_URL}/events`` with a JSON list of
events, answered ``204 No Content``; each event as in
``prefect/server/events/schemas/events.py``, ``Event``)::

    [{"id": "<uuid>", "occurred": "2025-01-01T12:00:00.000000Z",
      "event": "profile.uploaded",
      "resource": {"prefect.resource.id": "autopgo.app.<app>", "prefect.resource.name": "<app>"},
      "related": [],
      "payload": {"app": "<app>", "profileKey": "<key>"}}]

Authentication is Prefect's: ``Authorization: Bearer <api key>`` (Prefect
Cloud, ``PREFECT_API_KEY``) or ``Basic`` with a server's auth string
(``PREFECT_API_AUTH_STRING``). ``check`` asks the server's ``GET /health``.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from .events import Event, EventError

RESOURCE_PREFIX = "autopgo.app."


def prefect_event(
    event: Event, *, event_id: uuid.UUID | None = None, occurred: datetime | None = None
) -> dict[str, Any]:
    """``event`` as the JSON object Prefect's ``POST /events`` takes."""
    when = (occurred or datetime.now(UTC)).astimezone(UTC)
    return {
        "id": str(event_id or uuid.uuid4()),
        "occurred": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "event": event.type,
        "resource": {"prefect.resource.id": f"{RESOURCE_PREFIX}{event.app}", "prefect.resource.name": event.app},
        "related": [],
        "payload": event.payload(),
    }


class PrefectEventSink:
    """Posts each event to ``{api_url}/events``; safe to use from many threads at once."""

    def __init__(
        self,
        api_url: str,
        timeout: float = 5.0,
        api_key: str | None = None,
        *,
        auth_string: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not api_url.startswith(("http://", "https://")):
            raise ValueError(f"Prefect API URL must start with http:// or https://, not {api_url!r}")
        self.api_url = api_url.rstrip("/")
        headers = {"Accept": "application/json"}
        if auth_string:
            headers["Authorization"] = "Basic " + base64.b64encode(auth_string.encode()).decode()
        elif api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # One client for the process: it pools connections and may be shared by threads.
        self._client = httpx.Client(
            base_url=self.api_url + "/", timeout=timeout, headers=headers, transport=transport
        )

    def emit(self, event: Event) -> None:
        """Post ``event``; EventError if it cannot be sent or Prefect does not answer with a 2xx."""
        body = [prefect_event(event)]
        try:
            response = self._client.post("events", json=body)
        except httpx.HTTPError as exc:
            raise EventError(f"cannot send {event.type} to Prefect at {self.api_url}: {_reason(exc)}") from exc
        if not response.is_success:
            raise EventError(
                f"Prefect at {self.api_url} refused {event.type}: HTTP {response.status_code} "
                f"{_snippet(response)}".rstrip()
            )

    def check(self) -> None:
        """Ask Prefect's ``GET /health``; EventError if Prefect is unreachable or does not answer with a 2xx."""
        try:
            response = self._client.get("health")
        except httpx.HTTPError as exc:
            raise EventError(f"Prefect at {self.api_url} is unreachable: {_reason(exc)}") from exc
        if not response.is_success:
            raise EventError(f"Prefect at {self.api_url} is unhealthy: HTTP {response.status_code}")

    def close(self) -> None:
        """Close the sink's connections."""
        self._client.close()


def _reason(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _snippet(response: httpx.Response) -> str:
    return " ".join(response.text.split())[:200]
