"""The socket side of the API: one thread per connection on ``http.server``.

``ApiServer`` is a ``ThreadingHTTPServer`` whose handler threads are joined on
close (``daemon_threads = False``, ``block_on_close = True``), so stopping it
lets every request in flight finish. ``RequestHandler`` speaks HTTP/1.1 with
keep-alive, routes each request to ``ProfileApi``, checks the bearer token
before a body is read, sends every error as JSON ``{"message": ...}`` and
writes one access-log line per request (method, path, status, bytes, time).

``serve`` runs a server until SIGTERM or SIGINT, then drains it: it stops
accepting, closes idle keep-alive connections, waits for requests in flight
and returns.
"""

from __future__ import annotations

import logging
import signal
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from types import FrameType
from typing import TYPE_CHECKING, BinaryIO

from profiling.errors import AutopgoError, BlobStoreError

from .auth import BearerAuth
from .body import BodyReader
from .config import ServerConfig, offset_clock
from .connections import Connections
from .errors import ApiError, api_error
from .handlers import ProfileApi
from .messages import Request, Response, json_response
from .sinks import open_sink

if TYPE_CHECKING:
    from profiling.discovery import TargetSource

log = logging.getLogger("autopgo.api")
access_log = logging.getLogger("autopgo.api.access")

_MAX_REQUEST_LINE = 65536
_COPY_CHUNK = 1 << 20
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 256 << 20
_NO_BODY_STATUSES = frozenset({HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED})


class ApiServer(ThreadingHTTPServer):
    """The API's ``ThreadingHTTPServer``: serves ``api`` behind the token check; joins every handler thread on close."""

    daemon_threads = False
    block_on_close = True
    request_queue_size = 128  # listen backlog: bursts of new connections wait instead of being refused

    def __init__(
        self,
        address: tuple[str, int],
        api: ProfileApi,
        *,
        token: str | None = None,
        protect_reads: bool = False,
        read_timeout: float = 30.0,
    ) -> None:
        self.api = api
        self.auth = BearerAuth(token, protect_reads=protect_reads)
        self.read_timeout = read_timeout
        self.connections = Connections()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, RequestHandler)

    def server_bind(self) -> None:
        """Bind the socket and name the server by its address (``server_name``, ``server_port``)."""
        # HTTPServer.server_bind also looks up the host's FQDN, which can stall on DNS; skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = host.decode() if isinstance(host, bytes) else str(host)
        self.server_port = port

    @property
    def url(self) -> str:
        """The base URL the server listens on (``http://host:port``, an IPv6 host in brackets)."""
        host, port = self.server_address[:2]
        if isinstance(host, bytes):
            host = host.decode()
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def drain(self) -> None:
        """Stop taking new requests on open connections; /api/ready turns 503."""
        self.api.stopping.set()
        self.connections.drain()

    def handle_error(self, request: object, client_address: object) -> None:
        """Log, with its traceback, an error that escaped a connection's handler; the server goes on."""
        log.exception("unhandled error on the connection from %s", client_address)


class RequestHandler(BaseHTTPRequestHandler):
    """Serves one connection: HTTP/1.1 with keep-alive, each request routed to the server's ``ProfileApi``."""

    server: ApiServer
    protocol_version = "HTTP/1.1"
    server_version = "autopgo"
    sys_version = ""
    disable_nagle_algorithm = True  # responses go out as soon as written

    # ------------------------------------------------------------ connection

    def setup(self) -> None:
        """Set up the connection with the server's read timeout, so a silent client does not hold its thread forever."""
        self.timeout = self.server.read_timeout  # type: ignore[misc]  # per server, read by setup()
        super().setup()

    def handle_one_request(self) -> None:
        """One request: like the base class, but marks the connection idle while it waits."""
        connections = self.server.connections
        self.started = time.perf_counter()
        self.status = 0
        self.sent = 0
        self.command, self.path, self.requestline, self.request_version = "", "", "", ""
        if not connections.wait_for_request(self.connection):
            self.close_connection = True
            return
        try:
            self.raw_requestline = self.rfile.readline(_MAX_REQUEST_LINE + 1)
        except OSError:  # idle too long, shut by a drain, or reset by the client
            self.close_connection = True
            return
        finally:
            connections.request_started(self.connection)
        self.started = time.perf_counter()
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > _MAX_REQUEST_LINE:
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return
        try:
            if self.parse_request():
                self.dispatch()
        except TimeoutError:
            self.close_connection = True
            log.info("%s: timed out reading a request", self.address_string())

    def handle_expect_100(self) -> bool:
        """Send 100 Continue only when the handler starts reading the body (see dispatch)."""
        return True

    # ------------------------------------------------------------ requests

    def dispatch(self) -> None:
        """Answer the request: route it, check the token, run its handler and send the response (an error as JSON)."""
        reader: BodyReader | None = None
        try:
            reader = BodyReader(self.rfile, self.headers, self.server.api.limits.max_body)
            if reader.declared:
                self.close_connection = True  # until the body has been read to its end
            response = self._respond(reader)
        except AutopgoError as exc:  # the one place a request's errors become statuses (errors.api_error)
            response = error_response(api_error(exc))
        except TimeoutError:
            response = error_response(ApiError(HTTPStatus.REQUEST_TIMEOUT, "timed out reading the request body"))
        except ConnectionError:
            self.close_connection = True
            self._log_access(reset=True)
            return
        except Exception:  # noqa: BLE001 - one request's bug must not kill the server
            log.exception("error handling %s %s", self.command, self.path)
            response = error_response(ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, "internal server error"))
        consumed = reader is not None and reader.consumed
        if consumed:
            self.close_connection = self.close_connection_requested()
        self.send(response, linger=not consumed)

    def _respond(self, reader: BodyReader) -> Response:
        api = self.server.api
        match = api.router.match(self.command, self.path)
        if self.server.auth.guards(self.command, match.route.pattern):
            self.server.auth.require(self.headers)

        def read_body() -> bytes:
            reader.check_declared()
            if self._expects_continue():
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return reader.read()

        request = Request(self.command, match.target.path, match.target.query, self.headers, match.app, read_body)
        return match.handler(request)

    def _expects_continue(self) -> bool:
        expect = self.headers.get("Expect", "")
        return expect.strip().lower() == "100-continue" and self.request_version >= "HTTP/1.1"

    def close_connection_requested(self) -> bool:
        """Whether the client or the state of the server ends the connection after this response."""
        if self.server.connections.draining:
            return True
        connection = self.headers.get("Connection", "").lower()
        if "close" in connection:
            return True
        return self.request_version < "HTTP/1.1" and "keep-alive" not in connection

    # ------------------------------------------------------------ responses

    def send(self, response: Response, *, linger: bool = False) -> None:
        """Write ``response``; then close the connection if it is to end, reading out what is left."""
        head_only = self.command == "HEAD" or response.status in _NO_BODY_STATUSES
        self.status = int(response.status)
        headers = dict(response.headers)
        if response.stream is None and response.status not in _NO_BODY_STATUSES:
            headers.setdefault("Content-Length", str(len(response.body)))  # for HEAD too: what GET would send
        if self.close_connection or linger:
            headers["Connection"] = "close"
            self.close_connection = True
        lines = [f"HTTP/1.1 {self.status} {HTTPStatus(self.status).phrase}"]
        lines.append(f"Server: {self.server_version}")
        lines.append(f"Date: {self.date_time_string()}")
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            if head_only:
                self.wfile.write(head)
            elif response.stream is not None:
                self.wfile.write(head)
                self.sent = _copy(response.stream, self.wfile)
            else:
                self.wfile.write(head + response.body)
                self.sent = len(response.body)
        except OSError as exc:
            self.close_connection = True
            log.info("%s: connection lost while sending the response: %s", self.address_string(), exc)
        except Exception:  # noqa: BLE001 - the stream failed after the headers went out
            self.close_connection = True  # the client sees a body shorter than Content-Length
            log.exception("reading the response body for %s %s failed", self.command, self.path)
        finally:
            response.close()
        if linger:
            self._linger()
        self._log_access()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's errors (malformed request line or headers, ...) as JSON too."""
        self.close_connection = True
        status = HTTPStatus(code)
        self.send(error_response(ApiError(status, message or status.phrase)), linger=True)

    def _linger(self) -> None:
        """Read and drop what the client still sends, so that it sees our response.

        Closing a socket with unread data makes the kernel reset the connection,
        and a client still sending its body would get that reset instead of
        the response (a 413, say). So stop writing, then read for a while.
        """
        conn = self.connection
        try:
            conn.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + _LINGER_SECONDS
            dropped = 0
            while dropped < _LINGER_BYTES:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                conn.settimeout(left)
                data = conn.recv(1 << 16)
                if not data:
                    break
                dropped += len(data)
        except OSError:
            pass

    def _log_access(self, *, reset: bool = False) -> None:
        elapsed_ms = (time.perf_counter() - self.started) * 1000
        status = "reset" if reset else str(self.status or "-")
        access_log.info(
            '%s "%s %s" %s %d %.1fms',
            self.client_address[0],
            self.command or "-",
            self.path or "-",
            status,
            self.sent,
            elapsed_ms,
        )

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        """The base class's log messages, at DEBUG on the API's log."""
        log.debug("%s: " + format, self.address_string(), *args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Nothing: the access log line is written once the response is sent."""
        return None  # _log_access writes the access log


def error_response(error: ApiError) -> Response:
    """Every error the same way: its status, its headers (Allow, WWW-Authenticate) and ``{"message"}``."""
    return json_response(error.status, {"message": error.message}, error.headers)


def _copy(source: BinaryIO, target: BinaryIO | BufferedIOBase) -> int:
    sent = 0
    read, write = source.read, target.write
    while chunk := read(_COPY_CHUNK):
        write(chunk)
        sent += len(chunk)
    return sent


# ---------------------------------------------------------------- running


def _target_sources(pipeline_config: str | None) -> dict[str, TargetSource]:
    """The target source of every app that autopgo.yaml, if one is given, has scraped."""
    if not pipeline_config:
        return {}
    from profiling.config import load_config
    from profiling.discovery import SourceCache

    cache = SourceCache()
    return {app.name: cache.source(app.name, app.scrape) for app in load_config(pipeline_config).apps if app.scrape}


def create_server(config: ServerConfig) -> ApiServer:
    """Open the blob store, event sink and workers the configuration names, and bind the socket.

    ValueError (and ConfigError) for a bad URL or setting, OSError if the
    address cannot be bound; nothing is left open on failure.
    """
    from profiling.storage import open_store

    with ExitStack() as undo:
        store = open_store(config.blob_store)
        undo.callback(store.close)
        sink = open_sink(config.events)
        undo.callback(sink.close)
        api = ProfileApi(
            store,
            sink,
            limits=config.limits,
            accept_any_profile=config.accept_any_profile,
            workers=config.workers,
            target_sources=_target_sources(config.pipeline_config),
            targets_every=config.targets_every,
            clock=offset_clock(config.clock_offset_ns),
        )
        undo.callback(api.checker.close)
        undo.callback(api.target_health.close)
        try:
            server = ApiServer(
                (config.host, config.port),
                api,
                token=config.token,
                protect_reads=config.protect_reads,
                read_timeout=config.read_timeout,
            )
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
        undo.pop_all()
    try:
        store.check()
    except BlobStoreError as exc:  # it may come up later; /api/health tells meanwhile
        log.warning("the blob store is not usable yet: %s", exc)
    return server


def serve(
    server: ApiServer,
    *,
    stop_signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
    on_stopping: Callable[[], None] | None = None,
) -> None:
    """Serve until one of ``stop_signals`` arrives, then finish requests in flight and close.

    Must run in the main thread (signal handlers are installed there).
    """
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        if stopping.is_set():
            return
        stopping.set()
        log.info("%s: finishing requests in flight, then exiting", signal.Signals(signum).name)
        server.drain()
        if on_stopping is not None:
            on_stopping()
        # shutdown() waits for serve_forever to return, so it cannot run in this (the serving) thread
        threading.Thread(target=server.shutdown, name="autopgo-shutdown", daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in stop_signals}
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.drain()
        server.server_close()  # joins every handler thread
        server.api.close()
        log.info("stopped")
