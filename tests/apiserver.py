"""Helpers for API tests: a server in a thread or a subprocess, a recording event
sink, a fake Prefect server and raw HTTP requests.

Every server a helper starts is stopped when its ``with`` block ends, and a
subprocess is killed if it does not stop by itself.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from processes import terminate

from api.body import Limits
from api.handlers import ProfileApi
from api.server import ApiServer
from profiling.pipeline import Event
from profiling.storage import BlobStore

AUTOPGO = Path(sys.executable).with_name("autopgo")


class RecordingSink:
    """An event sink that keeps what it is given; ``fail`` makes ``emit`` raise it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[Event] = []
        self.fail: Exception | None = None
        self.down: Exception | None = None  # what check() raises

    def emit(self, event: Event) -> None:
        if self.fail is not None:
            raise self.fail
        with self._lock:
            self.events.append(event)

    def check(self) -> None:
        if self.down is not None:
            raise self.down

    def close(self) -> None:
        return None


@dataclass
class ThreadServer:
    server: ApiServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def api(self) -> ProfileApi:
        return self.server.api


@contextmanager
def thread_server(
    store: BlobStore,
    sink: RecordingSink,
    *,
    token: str | None = None,
    protect_reads: bool = False,
    limits: Limits | None = None,
    accept_any_profile: bool = False,
    workers: int = 0,
    read_timeout: float = 30.0,
) -> Iterator[ThreadServer]:
    """An ApiServer on 127.0.0.1 (any free port) serving in a thread of this process."""
    api = ProfileApi(store, sink, limits=limits, accept_any_profile=accept_any_profile, workers=workers)
    server = ApiServer(("127.0.0.1", 0), api, token=token, protect_reads=protect_reads, read_timeout=read_timeout)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield ThreadServer(server, thread)
    finally:
        server.drain()
        server.shutdown()
        server.server_close()
        thread.join(10)
        api.checker.close()


@dataclass
class ServerProcess:
    """``autopgo server`` in a subprocess; ``url`` is what it printed."""

    args: list[str]
    env: Mapping[str, str] | None = None
    new_session: bool = False  # a process group of its own, so that terminate(group=True) hits only it
    cwd: Path | None = None  # the folder it runs in (relative flags resolve against it)
    process: subprocess.Popen[str] | None = field(default=None, repr=False)
    url: str = ""

    def start(self) -> ServerProcess:
        env = dict(os.environ if self.env is None else self.env)
        self.process = subprocess.Popen(
            [str(AUTOPGO), "server", "--host", "127.0.0.1", "--port", "0", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=self.cwd,
            start_new_session=self.new_session,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if "listening on " not in line:
            self.stop()
            raise RuntimeError(f"autopgo server did not start: {line!r} {self.stderr()}")
        self.url = line.rsplit(" ", 1)[-1]
        return self

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[-1])

    def terminate(self, *, group: bool = False) -> None:
        """SIGTERM to the server, or to its process group (needs ``new_session``)."""
        assert self.process is not None
        if group:
            assert self.new_session, "the group of a server without a session of its own is the test's"
            os.killpg(self.process.pid, signal.SIGTERM)
        else:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stderr(self) -> str:
        if self.process is None or self.process.stderr is None or self.process.poll() is None:
            return ""
        return self.process.stderr.read()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL), and with a session of its own all it started."""
        if self.process is None:
            return
        terminate(self.process, 10)
        if self.new_session:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # workers left behind, if any
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> ServerProcess:
        return self if self.process else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class RawResponse:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(port: int, request: bytes, *, timeout: float = 10) -> RawResponse:
    """Send ``request`` as is (no normalization of the path, no added headers) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        return read_response(sock, method=request.split(b" ", 1)[0].decode("latin-1"))


def read_response(sock: socket.socket, method: str = "GET") -> RawResponse:
    response = http.client.HTTPResponse(sock, method=method)
    response.begin()
    body = response.read()
    return RawResponse(response.status, response.headers, body)


def request_bytes(
    method: str, target: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
) -> bytes:
    """A whole HTTP/1.1 request (``Connection: close``); Content-Length only if there is a body."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


@dataclass
class FakePrefect:
    """A stand-in for a Prefect server: records what is posted to ``/api/events``."""

    status: int = 204
    posted: list[Any] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def api_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/api"


@contextmanager
def fake_prefect(status: int = 204) -> Iterator[FakePrefect]:
    fake = FakePrefect(status)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            fake.paths.append(self.path)
            fake.headers.append(dict(self.headers.items()))
            if self.path == "/api/events":
                fake.posted.append(json.loads(body))
                self._answer(fake.status)
            else:
                self._answer(404, b'{"detail":"Not Found"}')

        def do_GET(self) -> None:
            fake.paths.append(self.path)
            if self.path == "/api/health":
                self._answer(200, b"true")
            else:
                self._answer(404, b'{"detail":"Not Found"}')

        def _answer(self, status: int, body: bytes = b"") -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return None

    fake.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.server.daemon_threads = True
    thread = threading.Thread(target=fake.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()
        thread.join(10)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
