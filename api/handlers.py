"""What each endpoint does, over a blob store and an event sink.

``ProfileApi`` holds the dependencies and one method per endpoint; each takes
a ``Request`` and returns a ``Response`` or raises ``ApiError``. The router
that maps paths to these methods is built here too, so the route table and
the handlers are read together:

=======  ======================  ==========================================
GET      /api/profile            list merged profiles
POST     /api/profile/{app}      validate, stage (``?workload=``), emit ``profile.uploaded``
GET      /api/profile/{app}      the merged profile (``?trim=pgo``: trimmed)
DELETE   /api/profile/{app}      new generation, emit ``profile.deleted`` (a flow deletes)
GET      /api/health             each dependency's status
GET      /api/ready              whether the server takes requests
=======  ======================  ==========================================

An upload is durable in the store before its event is emitted; if the event
cannot be delivered the upload still succeeds (and is logged at WARNING),
since the periodic sweep merges staged uploads whose event was lost. A
deletion likewise: its new generation (``profiling.pipeline.deletion.mark_deleted``) hides
the app's data at once, from downloads and the listing too, before the event
asks a flow to remove it, and the sweep removes it if the event is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from profiling.discovery import TargetSource
from profiling.errors import BlobNotFoundError, ProfileError
from profiling.names import check_workload
from profiling.pipeline import (
    DELETED,
    MERGED_NAME,
    UPLOADED,
    AppGeneration,
    Clock,
    Event,
    EventError,
    EventSink,
    Generation,
    app_of,
    generation_key,
    has_data,
    is_merged_key,
    mark_deleted,
    merged_key,
    read_generation,
    stage_upload,
    time_of,
    tombstone_prefix,
)
from profiling.pprof import DEFAULT_MAX_DECOMPRESSED, decode, encode, size_label, trim_for_pgo
from profiling.storage import BlobInfo, BlobStore, content_etag

from .body import Limits
from .conditional import http_date, is_conditional, not_modified, rfc3339
from .errors import ApiError, bad_request, not_found, unavailable
from .messages import OCTET_STREAM, Request, Response, json_response
from .routing import Route, Router
from .targethealth import DEFAULT_EVERY, TargetHealth
from .trimcache import TrimCache, Trimmed
from .validation import stored_form
from .versions import PerVersion
from .visibility import Visibility
from .workers import ProfileChecker

log = logging.getLogger("autopgo.api")

_MAX_TAGGED_APPS = 1024
TRIM_PGO = "pgo"
# Sent with a profile derived from parts: what it holds (see _data_headers).
WINDOW_START = "Autopgo-Window-Start"
WINDOW_END = "Autopgo-Window-End"
BUILD = "Autopgo-Build"


class ProfileApi:
    """The API's endpoints, one method each, over a blob store and an event sink; ``router`` maps requests to them."""

    def __init__(
        self,
        store: BlobStore,
        sink: EventSink,
        *,
        limits: Limits | None = None,
        accept_any_profile: bool = False,
        workers: int = 0,
        trim_cache: TrimCache | None = None,
        target_sources: Mapping[str, TargetSource] | None = None,
        targets_every: float = DEFAULT_EVERY,
        clock: Clock = time.time_ns,
    ) -> None:
        self.store = store
        self.clock = clock  # names staged uploads; shifted only to test clock skew (api.config.offset_clock)
        self.sink = sink
        # app -> its target source, listed in the background every targets_every seconds for /api/health
        self.target_health = TargetHealth(target_sources or {}, every=targets_every)
        self.limits = limits or Limits()
        self.accept_any_profile = accept_any_profile
        self.checker = ProfileChecker(
            max_decompressed=self.limits.max_decompressed, require_pgo=not accept_any_profile, workers=workers
        )
        self.trim_cache = trim_cache or TrimCache()
        self.content_tags: PerVersion[str] = PerVersion(_MAX_TAGGED_APPS)  # ETags of merged profiles
        self.visibility = Visibility(store, max(self.limits.max_decompressed, DEFAULT_MAX_DECOMPRESSED))
        self.stopping = threading.Event()  # set when the server drains; /api/ready then says 503
        self.target_health.start()
        self.router = Router(
            [
                Route("/api/profile", {"GET": self.list_profiles}),
                Route(
                    "/api/profile/{app}",
                    {"GET": self.download, "POST": self.upload, "DELETE": self.delete},
                ),
                Route("/api/health", {"GET": self.health}),
                Route("/api/ready", {"GET": self.ready}),
            ]
        )

    # ------------------------------------------------------------------ profiles

    def upload(self, request: Request) -> Response:
        """201 ``{"key"}``: the body checked, staged durably (for the ``?workload=`` named, if
        any), then announced (best effort)."""
        app = _app(request)
        workload = request.query_value("workload") or ""
        if workload:
            try:
                check_workload(workload)
            except ValueError as exc:
                raise bad_request(str(exc)) from None
        body = request.read_body()
        self.checker.check(body)
        key = stage_upload(self.store, app, stored_form(body), clock=self.clock, workload=workload)
        self._announce(Event(UPLOADED, app, key))
        return json_response(HTTPStatus.CREATED, {"key": key})

    def _announce(self, event: Event) -> None:
        """Emit ``event`` for what is already durable; if it is lost, the periodic sweep does its work."""
        try:
            self.sink.emit(event)
        except Exception as exc:  # noqa: BLE001 - EventError or a sink's bug: the request stands either way
            traceback = None if isinstance(exc, EventError) else exc
            log.warning(
                "%s for %s not delivered; the sweep will pick it up: %s",
                event.type,
                event.profile_key or event.app,
                exc,
                exc_info=traceback,
            )

    def download(self, request: Request) -> Response:
        """The merged profile, streamed, or its PGO-trimmed form (``?trim=pgo``); 304 if unchanged.

        The ETag is a hash of the bytes served (``profiling.storage.etags``), remembered
        per version of the merged profile: once known, HEAD and a 304 need only
        the store's metadata, not the profile.
        """
        app = _app(request)
        trim = request.query_value("trim")
        if trim is not None and trim != TRIM_PGO:
            raise bad_request(f"unknown trim {trim!r}: the only one is {TRIM_PGO!r}")
        key = merged_key(app)
        if trim:
            return self._download_trimmed(request, app, key)
        if request.method == "HEAD" or is_conditional(request.headers):
            info = self._stat_visible(app, key)
            etag = self.content_tags.get(app, info.etag)
            if etag is not None:
                extra = self._data_headers(app, info)
                response = _profile_response(request, info, etag, size=info.size, extra=extra)
                if request.method == "HEAD" or response.status == HTTPStatus.NOT_MODIFIED:
                    return response
        return self._send_merged(request, app, key)

    def _send_merged(self, request: Request, app: str, key: str) -> Response:
        """The merged profile as it is now: streamed if its tag is known, else read whole
        first, since the tag (a hash of the bytes) goes out before them."""
        read: list[bytes] = []  # the body, if it had to be read before answering

        def load() -> bytes:
            if not read:
                read.append(stream.read())
            return read[0]

        try:
            generation = self.visibility.generation(app)
            info, stream = self.store.open(key)
            try:
                if self.visibility.hidden(app, info, generation, load):
                    raise _no_merged(app)
                etag = self.content_tags.get(app, info.etag) or self.content_tags.put(
                    app, info.etag, content_etag(load())
                )
                extra = self._data_headers(app, info, load)
            except BaseException:
                stream.close()
                raise
        except BlobNotFoundError:
            raise _no_merged(app) from None
        response = _profile_response(request, info, etag, size=len(read[0]) if read else info.size, extra=extra)
        if response.status != HTTPStatus.OK or read:
            stream.close()
            response.body = read[0] if read and response.status == HTTPStatus.OK else b""
        else:
            response.stream = stream
        return response

    def _download_trimmed(self, request: Request, app: str, key: str) -> Response:
        info = self._stat_visible(app, key)
        trimmed = self.trim_cache.get_or_compute(app, info.etag, lambda: self._trim(app, key))
        response = _profile_response(
            request,
            info,
            trimmed.etag,
            size=len(trimmed.data),
            last_modified=trimmed.last_modified,
            extra=self._data_headers(app, info),
        )
        if response.status == HTTPStatus.OK and request.method != "HEAD":
            response.body = trimmed.data
        return response

    def _trim(self, app: str, key: str) -> Trimmed:
        try:
            info, stream = self.store.open(key)
            with stream:
                data = stream.read()
        except BlobNotFoundError:
            raise _no_merged(app) from None
        limit = max(self.limits.max_decompressed, DEFAULT_MAX_DECOMPRESSED)
        try:
            trimmed = encode(trim_for_pgo(decode(data, max_decompressed=limit)))
        except ProfileError as exc:
            message = f"the merged profile of {app!r} cannot be trimmed for PGO: {exc}"
            raise ApiError(HTTPStatus.CONFLICT, message) from None
        log.info("trimmed %s (etag %s): %s -> %s", key, info.etag, size_label(info.size), size_label(len(trimmed)))
        return Trimmed(info.etag, info.last_modified, trimmed, content_etag(trimmed))

    def _data_headers(self, app: str, info: BlobInfo, load: Callable[[], bytes] | None = None) -> dict[str, str]:
        """What a profile derived from parts holds (``profiling.pipeline.parts``): ``Autopgo-Window-Start`` and
        ``-End``, the collection times of its oldest and newest upload, and ``Autopgo-Build``, the
        newest build; none for other profiles."""
        try:
            labels = self.visibility.labels(app, info, load)
        except BlobNotFoundError:  # replaced meanwhile: what is sent is still this version
            return {}
        headers = {}
        if labels.window is not None:
            oldest, newest = (datetime.fromtimestamp(ns / 1e9, UTC) for ns in labels.window)
            headers.update({WINDOW_START: rfc3339(oldest), WINDOW_END: rfc3339(newest)})
        if labels.build:
            headers[BUILD] = labels.build
        return headers

    def _stat_visible(self, app: str, key: str) -> BlobInfo:
        """What the merged profile is; 404 if there is none, or a deletion hides it."""
        try:
            generation = self.visibility.generation(app)
            info = self.store.stat(key)
            if self.visibility.hidden(app, info, generation):
                raise _no_merged(app)
            return info
        except BlobNotFoundError:
            raise _no_merged(app) from None

    def list_profiles(self, request: Request) -> Response:
        """``{"profiles": [{"key": app, "size", "lastModified"}]}`` for every merged profile, by app."""
        merged: list[tuple[str, BlobInfo]] = []
        deleted: set[str] = set()  # apps with a generation record
        tombstones: dict[str, int] = {}  # from before generations
        for info in self.store.list():
            app = app_of(info.key)
            if app is None:
                continue
            if is_merged_key(info.key):
                merged.append((app, info))
            elif info.key == generation_key(app):
                deleted.add(app)
            elif info.key.startswith(tombstone_prefix(app)):
                tombstones[app] = max(tombstones.get(app, 0), time_of(info.key))

        def generation(app: str) -> AppGeneration:
            record = read_generation(self.store, app) if app in deleted else Generation(0)
            return AppGeneration(record, lambda: tombstones.get(app, 0))

        visible = [(app, info) for app, info in merged if not self._hidden(app, info, generation(app))]
        profiles = [
            {"key": app, "size": info.size, "lastModified": rfc3339(info.last_modified)} for app, info in visible
        ]
        return json_response(HTTPStatus.OK, {"profiles": profiles})

    def _hidden(self, app: str, info: BlobInfo, generation: AppGeneration) -> bool:
        try:
            return self.visibility.hidden(app, info, generation)
        except BlobNotFoundError:  # deleted while we listed
            return True

    def delete(self, request: Request) -> Response:
        """202 once a new generation hides the app's data; then ``profile.deleted`` starts the flow that removes it.

        The generation is durable before the event, as an upload is: if the event
        is lost, the sweep finds the deleted app and removes the data anyway.
        """
        app = _app(request)
        if not _has_data(self.store, app):
            raise not_found(f"nothing is stored for app {app!r}")
        mark_deleted(self.store, app)
        self._announce(Event(DELETED, app))
        return json_response(HTTPStatus.ACCEPTED, {"app": app, "message": f"deletion of {app!r} scheduled"})

    # ------------------------------------------------------------------ probes

    def health(self, request: Request) -> Response:
        """Each dependency's status, 503 when one is down; each app's target source as last listed (never waited on)."""
        checks: list[tuple[str, Callable[[], None]]] = [("blobStore", self.store.check), ("events", self.sink.check)]
        results: list[dict[str, Any]] = []
        for name, check in checks:
            try:
                check()
            except Exception as exc:  # noqa: BLE001 - any failure means the dependency is down
                message = " ".join(str(exc).split()) or type(exc).__name__
                log.warning("health: %s is down: %s", name, message)
                results.append({"name": name, "status": "down", "message": message})
            else:
                results.append({"name": name, "status": "ok"})
        down = [r["name"] for r in results if r["status"] != "ok"]
        targets = self.target_health.report()
        if down:
            body = {"status": "down", "message": f"unavailable: {', '.join(down)}", "dependencies": results}
            return json_response(HTTPStatus.SERVICE_UNAVAILABLE, {**body, "targets": targets})
        return json_response(HTTPStatus.OK, {"status": "ok", "dependencies": results, "targets": targets})

    def ready(self, request: Request) -> Response:
        """200 while the server takes requests, 503 once it drains for shutdown."""
        if self.stopping.is_set():
            raise unavailable("shutting down")
        return json_response(HTTPStatus.OK, {"status": "ready"})

    def close(self) -> None:
        """Release the workers, the sink and the store (after the last request)."""
        self.target_health.close()
        for resource in (self.checker, self.sink, self.store):
            try:
                resource.close()
            except Exception:  # noqa: BLE001 - closing must go on to the next one
                log.exception("closing %r failed", resource)


def _has_data(store: BlobStore, app: str) -> bool:
    """Whether a deletion would hide anything: uploads or a merged profile no delete hides yet."""
    try:
        return has_data(store, app)
    except ProfileError:  # a merged profile that cannot be read is still something to delete
        return True


def _app(request: Request) -> str:
    if request.app is None:  # the router fills it for every route that has {app}
        raise RuntimeError("route without an app")
    return request.app


def _no_merged(app: str) -> ApiError:
    return not_found(f"no merged profile for app {app!r}")


def _profile_response(
    request: Request,
    info: BlobInfo,
    etag: str,
    *,
    size: int,
    last_modified: datetime | None = None,
    extra: Mapping[str, str] | None = None,
) -> Response:
    """Headers for a profile download (and ``extra`` ones), or a bodiless 304 if the client has this version."""
    headers = {
        "ETag": etag,
        "Last-Modified": http_date(last_modified or info.last_modified),
        "Cache-Control": "no-cache",
        **(extra or {}),
    }
    if not_modified(request.method, request.headers, etag, last_modified or info.last_modified):
        return Response(HTTPStatus.NOT_MODIFIED, headers=headers)
    headers.update(
        {
            "Content-Type": OCTET_STREAM,
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{MERGED_NAME}"',
        }
    )
    return Response(HTTPStatus.OK, headers=headers)
