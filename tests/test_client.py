"""The API client (profiling.client) and its commands (cli.remote), over real sockets.

``FakeAPI`` is a small in-memory server on 127.0.0.1 that follows the API
contract, merging instantly by keeping an app's latest upload, and can be told
to fail a route in a given way (``Fault``).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from processes import wait_until_ready

import profiling.client as client_module
from cli.main import build_parser, main
from profiling.client import CHUNK_SIZE, Client, ClientError, Download, ProfileInfo, Saved
from profiling.names import is_valid_app_name
from profiling.pipeline import new_staging_key
from profiling.storage import content_etag

AUTOPGO = Path(sys.executable).with_name("autopgo")
PROFILE = b"\x1f\x8b" + bytes(range(256)) * 40  # the fake does not decode profiles
UTC = timezone.utc


# --- the fake server ---------------------------------------------------------------------------


@dataclass
class Fault:
    """How the fake answers a route instead of following the contract."""

    status: int = 500
    body: bytes = b'{"message": "disk on fire"}'
    content_type: str = "application/json"
    delay: float = 0.0  # seconds before answering
    declared_length: int | None = None  # a Content-Length larger than the body: drop the connection


@dataclass
class Seen:
    method: str
    target: str  # path and query, as sent
    headers: dict[str, str]  # names in lower case
    body: bytes | None  # None when the request had no Content-Length


class FakeAPI(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _FakeHandler)
        self.token: str | None = None
        self.max_body = 4 << 20
        self.profiles: dict[str, tuple[bytes, datetime]] = {}
        self.requests: list[Seen] = []
        self.faults: dict[tuple[str, str], Fault] = {}
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up on a slow or broken answer is what some tests want


class _FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out separately; do not wait on delayed ACKs
    server: FakeAPI

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_DELETE = do_PUT = do_GET

    def _handle(self) -> None:
        api = self.server
        url = urlsplit(self.path)
        length = self.headers.get("Content-Length")
        body = self._drain(int(length)) if length is not None else None
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # a chunked body is left unread; do not parse it as a request
        api.requests.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))

        fault = api.faults.get((self.command, url.path))
        if fault is not None:
            return self._fault(fault)
        if url.path == "/api/profile":
            if self.command != "GET":
                return self._error(405, "use GET")
            entries = [
                {"key": app, "size": len(data), "lastModified": when.strftime("%Y-%m-%dT%H:%M:%SZ")}
                for app, (data, when) in sorted(api.profiles.items())
            ]
            return self._json(200, {"profiles": entries})
        app = url.path.removeprefix("/api/profile/")
        if app == url.path or not is_valid_app_name(app):
            return self._error(404, f"no route for {url.path}")
        if self.command == "POST":
            return self._upload(app, body)
        if self.command == "GET":
            return self._download(app, parse_qs(url.query))
        if self.command == "DELETE":
            if self._unauthorized():
                return None
            if api.profiles.pop(app, None) is None:
                return self._error(404, f"no profiles for {app}")
            return self._json(202, {"message": f"deleting {app}"})
        return self._error(405, f"{self.command} is not allowed here")

    def _upload(self, app: str, body: bytes | None) -> None:
        api = self.server
        if self._unauthorized():
            return
        if body is None:
            return self._error(411, "Content-Length required")
        if len(body) > api.max_body:
            return self._error(413, f"profile is larger than {api.max_body} bytes")
        if not body:
            return self._error(400, "empty profile")
        api.profiles[app] = (body, datetime.now(UTC).replace(microsecond=0))
        self._json(201, {"key": new_staging_key(app)})

    def _download(self, app: str, query: dict[str, list[str]]) -> None:
        stored = self.server.profiles.get(app)
        if stored is None:
            return self._error(404, f"no merged profile for {app}")
        data, when = stored
        if query.get("trim") == ["pgo"]:
            data = b"trimmed:" + data
        etag = content_etag(data)  # as the API tags a download: by its bytes
        headers = {"ETag": etag, "Last-Modified": format_datetime(when, usegmt=True)}
        if self.headers.get("If-None-Match") == etag:
            return self._send(304, b"", headers, with_length=False)
        self._send(200, data, {"Content-Type": "application/octet-stream", **headers})

    def _unauthorized(self) -> bool:
        token = self.server.token
        if token is None or self.headers.get("Authorization") == f"Bearer {token}":
            return False
        message = "invalid bearer token" if self.headers.get("Authorization") else "missing bearer token"
        self._error(401, message)
        return True

    def _fault(self, fault: Fault) -> None:
        if fault.delay:
            self.server.stopping.wait(fault.delay)
        if fault.declared_length is None:
            return self._send(fault.status, fault.body, {"Content-Type": fault.content_type})
        self.send_response(fault.status)
        self.send_header("Content-Type", fault.content_type)
        self.send_header("Content-Length", str(fault.declared_length))
        self.end_headers()
        self.wfile.write(fault.body)
        self.wfile.flush()
        self.close_connection = True

    def _drain(self, length: int) -> bytes:
        """Read the whole body, so that an early error answer is not lost to a connection reset."""
        chunks, left = [], length
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"message": message})

    def _json(self, status: int, data: object) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def _send(self, status: int, body: bytes, headers: dict[str, str], *, with_length: bool = True) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if with_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def fake() -> Iterator[FakeAPI]:
    server = FakeAPI()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def closed_url() -> str:
    """The URL of a local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(autouse=True)
def no_api_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOPGO_API_URL", raising=False)
    monkeypatch.delenv("AUTOPGO_API_TOKEN", raising=False)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def store(fake: FakeAPI, app: str, data: bytes = PROFILE, when: datetime | None = None) -> None:
    fake.profiles[app] = (data, when or datetime(2024, 5, 1, 12, 0, tzinfo=UTC))


class SpyFile(io.BytesIO):
    """A seekable file that records how much each read asked for."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[int | None] = []

    def read(self, size: int | None = -1) -> bytes:
        self.reads.append(size)
        return super().read(size)


# --- the client: upload -----------------------------------------------------------------------


def test_upload_bytes_returns_the_staged_key(fake: FakeAPI) -> None:
    with Client(fake.url) as api:
        key = api.upload("checkout", PROFILE)
    assert key.startswith("checkout/staging/") and key.endswith(".pb.gz")
    (seen,) = fake.requests
    assert (seen.method, seen.target, seen.body) == ("POST", "/api/profile/checkout", PROFILE)
    assert seen.headers["content-length"] == str(len(PROFILE))
    assert seen.headers["content-type"] == "application/octet-stream"
    assert "authorization" not in seen.headers


def test_upload_streams_a_file_object_in_chunks_with_its_length(fake: FakeAPI) -> None:
    data = os.urandom(5 * CHUNK_SIZE + 123)
    f = SpyFile(data)
    with Client(fake.url) as api:
        api.upload("checkout", f)
    (seen,) = fake.requests
    assert seen.body == data
    assert seen.headers["content-length"] == str(len(data))
    assert "transfer-encoding" not in seen.headers
    assert len(f.reads) >= 6
    assert all(size is not None and 0 < size <= CHUNK_SIZE for size in f.reads), f.reads


def test_upload_sends_a_file_from_its_current_position(fake: FakeAPI, tmp_path: Path) -> None:
    path = tmp_path / "cpu.pb.gz"
    path.write_bytes(b"HEADER" + PROFILE)
    with Client(fake.url) as api, path.open("rb") as f:
        f.read(6)
        api.upload("checkout", f)
    assert fake.requests[0].body == PROFILE
    assert fake.requests[0].headers["content-length"] == str(len(PROFILE))


def test_upload_from_a_pipe_sends_a_content_length(fake: FakeAPI) -> None:
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with open(write_fd, "wb") as w:
            w.write(PROFILE)

    writer = threading.Thread(target=feed)
    writer.start()
    with Client(fake.url) as api, open(read_fd, "rb") as r:
        api.upload("checkout", r)
    writer.join()
    assert fake.requests[0].body == PROFILE
    assert fake.requests[0].headers["content-length"] == str(len(PROFILE))


def test_upload_sends_the_token_only_when_configured(fake: FakeAPI) -> None:
    fake.token = "s3cret"
    with Client(fake.url) as api, pytest.raises(ClientError) as refused:
        api.upload("checkout", PROFILE)
    assert refused.value.status == 401
    assert str(refused.value) == (
        f"POST {fake.url}/api/profile/checkout: 401 Unauthorized: missing bearer token (no API token was given)"
    )
    with Client(fake.url, token="s3cret") as api:
        api.upload("checkout", PROFILE)
    assert "authorization" not in fake.requests[0].headers
    assert fake.requests[1].headers["authorization"] == "Bearer s3cret"


def test_a_wrong_token_is_refused(fake: FakeAPI) -> None:
    fake.token = "s3cret"
    with Client(fake.url, token="guess") as api, pytest.raises(ClientError, match="401 Unauthorized: invalid bearer"):
        api.upload("checkout", PROFILE)


def test_upload_too_large_reports_413_and_the_server_message(fake: FakeAPI) -> None:
    fake.max_body = 1000
    with Client(fake.url) as api, pytest.raises(ClientError) as exc:
        api.upload("checkout", io.BytesIO(PROFILE))
    assert exc.value.status == 413
    assert str(exc.value).endswith(": 413 Request Entity Too Large: profile is larger than 1000 bytes")


def test_upload_reply_without_a_key_is_an_error(fake: FakeAPI) -> None:
    fake.faults["POST", "/api/profile/checkout"] = Fault(201, b"<p>created</p>", "text/html")
    with Client(fake.url) as api, pytest.raises(ClientError, match=r"^unexpected reply to POST .*: the reply is not"):
        api.upload("checkout", PROFILE)
    fake.faults["POST", "/api/profile/checkout"] = Fault(201, b'{"id": 1}')
    with Client(fake.url) as api, pytest.raises(ClientError, match='no "key" in the reply'):
        api.upload("checkout", PROFILE)


# --- the client: download ---------------------------------------------------------------------


def test_download_returns_content_etag_and_last_modified(fake: FakeAPI) -> None:
    store(fake, "checkout", when=datetime(2024, 5, 1, 12, 30, 15, tzinfo=UTC))
    with Client(fake.url) as api:
        got = api.download("checkout")
        again = api.download("checkout", if_none_match=got.etag)
        other = api.download("checkout", if_none_match='"stale"')
    assert got == Download(PROFILE, got.etag, datetime(2024, 5, 1, 12, 30, 15, tzinfo=UTC))
    assert got.etag and got.etag.startswith('"')
    assert again.not_modified and again.content == b"" and again.etag == got.etag
    assert not other.not_modified and other.content == PROFILE
    assert fake.requests[1].headers["if-none-match"] == got.etag
    assert "if-none-match" not in fake.requests[0].headers


def test_download_trim_asks_for_the_pgo_form(fake: FakeAPI) -> None:
    store(fake, "checkout")
    with Client(fake.url) as api:
        got = api.download("checkout", trim=True)
    assert got.content == b"trimmed:" + PROFILE
    assert fake.requests[0].target == "/api/profile/checkout?trim=pgo"


def test_download_of_an_app_without_profile_is_404(fake: FakeAPI) -> None:
    with Client(fake.url) as api, pytest.raises(ClientError) as exc:
        api.download("checkout")
    assert exc.value.status == 404
    assert str(exc.value) == f"GET {fake.url}/api/profile/checkout: 404 Not Found: no merged profile for checkout"


def test_download_to_writes_and_replaces_the_file(fake: FakeAPI, tmp_path: Path) -> None:
    big = os.urandom(3 * CHUNK_SIZE + 7)
    store(fake, "checkout", big)
    target = tmp_path / "default.pgo"
    with Client(fake.url) as api:
        assert api.download_to("checkout", target) == Saved(target, len(big), True, content_etag(big))
        assert target.read_bytes() == big
        target.chmod(0o640)
        store(fake, "checkout", PROFILE)
        api.download_to("checkout", str(target), trim=True)
    assert target.read_bytes() == b"trimmed:" + PROFILE
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # a replaced file keeps its permissions
    assert [p.name for p in tmp_path.iterdir()] == ["default.pgo"]
    assert fake.requests[-1].target == "/api/profile/checkout?trim=pgo"


def test_download_to_leaves_a_current_file_untouched(fake: FakeAPI, tmp_path: Path) -> None:
    store(fake, "checkout")
    target = tmp_path / "default.pgo"
    target.write_bytes(PROFILE)
    os.utime(target, ns=(10**18, 10**18))
    before = target.stat()
    with Client(fake.url) as api:
        assert api.download_to("checkout", target) == Saved(target, len(PROFILE), False, content_etag(PROFILE))
        assert fake.requests[-1].headers["if-none-match"] == content_etag(PROFILE)
        after = target.stat()
        assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)  # not rewritten
        assert [p.name for p in tmp_path.iterdir()] == ["default.pgo"]

        store(fake, "checkout", b"newer")
        assert api.download_to("checkout", target) == Saved(target, 5, True, content_etag(b"newer"))
        assert fake.requests[-1].headers["if-none-match"] == content_etag(PROFILE)
        assert target.read_bytes() == b"newer"
        # The trimmed form has bytes, and so a tag, of its own.
        assert api.download_to("checkout", target, trim=True).changed
        assert not api.download_to("checkout", target, trim=True).changed
    assert target.read_bytes() == b"trimmed:newer"


def test_download_to_a_new_file_gets_the_usual_permissions(fake: FakeAPI, tmp_path: Path) -> None:
    store(fake, "checkout")
    old_mask = os.umask(0o027)
    try:
        with Client(fake.url) as api:
            api.download_to("checkout", tmp_path / "default.pgo")
    finally:
        os.umask(old_mask)
    assert stat.S_IMODE((tmp_path / "default.pgo").stat().st_mode) == 0o640


@pytest.mark.parametrize("existing", [b"old profile", None], ids=["replace", "new"])
def test_download_to_leaves_the_file_alone_when_the_connection_drops(
    fake: FakeAPI, tmp_path: Path, existing: bytes | None
) -> None:
    target = tmp_path / "default.pgo"
    if existing is not None:
        target.write_bytes(existing)
    sent = os.urandom(4 * CHUNK_SIZE)
    fake.faults["GET", "/api/profile/checkout"] = Fault(
        200, sent, "application/octet-stream", declared_length=2 * len(sent)
    )
    with Client(fake.url) as api, pytest.raises(ClientError) as exc:
        api.download_to("checkout", target)
    message = str(exc.value)
    assert message.startswith(f"connection to {fake.url}/api/profile/checkout failed: ")
    assert "\n" not in message
    if existing is None:
        assert list(tmp_path.iterdir()) == []
    else:
        assert target.read_bytes() == existing
        assert [p.name for p in tmp_path.iterdir()] == ["default.pgo"]


def test_download_to_does_not_create_a_file_on_404(fake: FakeAPI, tmp_path: Path) -> None:
    with Client(fake.url) as api, pytest.raises(ClientError, match="404"):
        api.download_to("checkout", tmp_path / "default.pgo")
    assert list(tmp_path.iterdir()) == []


def test_download_to_a_missing_directory_or_a_directory_fails(fake: FakeAPI, tmp_path: Path) -> None:
    store(fake, "checkout")
    with Client(fake.url) as api:
        with pytest.raises(ClientError, match=r"^cannot write .*default.pgo: No such file or directory$"):
            api.download_to("checkout", tmp_path / "missing" / "default.pgo")
        with pytest.raises(ClientError, match=r"^cannot write .*: is a directory$"):
            api.download_to("checkout", tmp_path)


# --- the client: list and delete --------------------------------------------------------------


def test_list_returns_the_merged_profiles(fake: FakeAPI) -> None:
    with Client(fake.url) as api:
        assert api.list() == []
        store(fake, "checkout", b"x" * 10, datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
        store(fake, "search", b"y" * 2048, datetime(2024, 6, 2, 8, 30, 5, tzinfo=UTC))
        assert api.list() == [
            ProfileInfo("checkout", 10, datetime(2024, 5, 1, 12, 0, tzinfo=UTC)),
            ProfileInfo("search", 2048, datetime(2024, 6, 2, 8, 30, 5, tzinfo=UTC)),
        ]
    assert [r.target for r in fake.requests] == ["/api/profile", "/api/profile"]


@pytest.mark.parametrize(
    "body",
    [b"[]", b'{"profiles": {}}', b'{"profiles": [{"key": "a", "size": "1", "lastModified": "2024-05-01T00:00:00Z"}]}',
     b'{"profiles": [{"key": "a", "size": 1, "lastModified": "yesterday"}]}'],
)
def test_list_rejects_a_malformed_reply(fake: FakeAPI, body: bytes) -> None:
    fake.faults["GET", "/api/profile"] = Fault(200, body)
    with Client(fake.url) as api, pytest.raises(ClientError, match=r"^unexpected reply to GET .*/api/profile: "):
        api.list()


def test_delete_removes_the_app_and_a_second_delete_is_404(fake: FakeAPI) -> None:
    store(fake, "checkout")
    with Client(fake.url, token="s3cret") as api:
        api.delete("checkout")
        assert "checkout" not in fake.profiles
        with pytest.raises(ClientError) as exc:
            api.delete("checkout")
    assert exc.value.status == 404
    assert [(r.method, r.headers["authorization"]) for r in fake.requests] == [("DELETE", "Bearer s3cret")] * 2


def test_no_request_carries_a_token_unless_one_is_configured(fake: FakeAPI, tmp_path: Path) -> None:
    store(fake, "checkout")
    for token in (None, ""):
        with Client(fake.url, token=token) as api:
            api.list()
            api.download("checkout")
            api.download_to("checkout", tmp_path / "p")
            api.upload("other", PROFILE)
            api.delete("other")
    assert len(fake.requests) == 10
    assert not any("authorization" in r.headers for r in fake.requests)


# --- the client: failures ---------------------------------------------------------------------


@pytest.mark.parametrize("app", ["", "Checkout", "a/b", "../etc", "a b", "app_1", "a" * 64, "é"])
def test_bad_app_names_are_refused_before_any_request(fake: FakeAPI, app: str) -> None:
    with Client(fake.url) as api:
        for call in (
            lambda: api.upload(app, PROFILE),
            lambda: api.download(app),
            lambda: api.download_to(app, "unused"),
            lambda: api.delete(app),
        ):
            with pytest.raises(ClientError, match=r"^invalid app name .*: use 1 to 63 characters"):
                call()
    assert fake.requests == []


def test_upload_does_not_read_the_data_for_a_bad_app_name() -> None:
    f = SpyFile(PROFILE)
    with Client("http://127.0.0.1:9") as api, pytest.raises(ClientError):
        api.upload("Bad", f)
    assert f.reads == [] and f.tell() == 0


def test_server_error_with_json_message(fake: FakeAPI) -> None:
    fake.faults["GET", "/api/profile"] = Fault(500, b'{"message": "disk\\non\\tfire"}')
    with Client(fake.url) as api, pytest.raises(ClientError) as exc:
        api.list()
    assert exc.value.status == 500
    assert str(exc.value) == f"GET {fake.url}/api/profile: 500 Internal Server Error: disk on fire"


def test_bad_gateway_with_an_html_body_falls_back_to_the_reason(fake: FakeAPI) -> None:
    fake.faults["GET", "/api/profile"] = Fault(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
    with Client(fake.url) as api, pytest.raises(ClientError) as exc:
        api.list()
    assert exc.value.status == 502
    assert str(exc.value) == f"GET {fake.url}/api/profile: 502 Bad Gateway"


def test_a_long_server_message_is_cut(fake: FakeAPI) -> None:
    fake.faults["DELETE", "/api/profile/checkout"] = Fault(503, json.dumps({"message": "x" * 5000}).encode())
    with Client(fake.url) as api, pytest.raises(ClientError) as exc:
        api.delete("checkout")
    assert exc.value.status == 503
    assert len(str(exc.value)) < 400 and str(exc.value).endswith("...")


def test_a_slow_server_times_out(fake: FakeAPI) -> None:
    fake.faults["GET", "/api/profile"] = Fault(200, b'{"profiles": []}', delay=10)
    started = time.monotonic()
    with Client(fake.url, timeout=0.3) as api, pytest.raises(ClientError) as exc:
        api.list()
    assert time.monotonic() - started < 5
    assert str(exc.value) == f"cannot reach {fake.url}/api/profile: no response after 0.3s"
    assert exc.value.status is None


def test_connection_refused_names_the_url(closed_url: str) -> None:
    with Client(closed_url) as api, pytest.raises(ClientError) as exc:
        api.download("checkout", trim=True)
    assert str(exc.value).startswith(f"cannot reach {closed_url}/api/profile/checkout?trim=pgo: ")
    assert "refused" in str(exc.value).lower()


@pytest.mark.parametrize("url", ["localhost:8080", "ftp://host/", "http://", "http://host:port"])
def test_bad_base_urls_are_refused(url: str) -> None:
    with pytest.raises(ClientError, match="^invalid API URL"):
        Client(url)


def test_credentials_in_the_url_are_not_shown(closed_url: str) -> None:
    url = closed_url.replace("http://", "http://user:hunter2@")
    with Client(url) as api, pytest.raises(ClientError) as exc:
        api.list()
    assert "hunter2" not in str(exc.value) and "user" not in str(exc.value)


def test_a_token_that_cannot_be_a_header_is_refused() -> None:
    with pytest.raises(ClientError, match="invalid API token"):
        Client(token="two words")
    with pytest.raises(ClientError, match="invalid API token"):
        Client(token="line\n")


# --- the commands -----------------------------------------------------------------------------


def test_cli_upload_from_a_file_prints_the_key(
    fake: FakeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cpu.pb.gz"
    path.write_bytes(PROFILE)
    code, out, err = cli(capsys, "upload", "--app", "checkout", str(path), "--api-url", fake.url)
    assert (code, err) == (0, "")
    assert out.startswith("checkout/staging/") and out.count("\n") == 1
    assert fake.requests[0].body == PROFILE


def test_cli_upload_from_stdin(
    fake: FakeAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(PROFILE)))
    code, out, err = cli(capsys, "upload", "--app", "checkout", "-", "--api-url", fake.url)
    assert (code, err) == (0, "")
    assert fake.requests[0].body == PROFILE


def test_cli_upload_from_a_stdin_pipe_in_a_real_process(fake: FakeAPI) -> None:
    result = subprocess.run(
        [str(AUTOPGO), "upload", "--app", "checkout", "-"],
        input=PROFILE,
        capture_output=True,
        env={**os.environ, "AUTOPGO_API_URL": fake.url},
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout.startswith(b"checkout/staging/")
    assert fake.requests[0].body == PROFILE
    assert fake.requests[0].headers["content-length"] == str(len(PROFILE))


def test_cli_download_writes_default_pgo(
    fake: FakeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store(fake, "checkout")
    monkeypatch.chdir(tmp_path)
    assert cli(capsys, "download", "checkout", "--api-url", fake.url) == (0, "", "")
    assert (tmp_path / "default.pgo").read_bytes() == PROFILE
    assert fake.requests[0].target == "/api/profile/checkout"


def test_cli_download_twice_keeps_a_current_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, cpu_profiles: list[Path]
) -> None:
    """Against the real API server: the second download is a 304 and leaves the file as it was."""
    from apiserver import RecordingSink, thread_server

    from profiling.pipeline import merged_key
    from profiling.storage import open_store

    blobs = open_store(str(tmp_path / "blobs"))
    blobs.put(merged_key("svc"), cpu_profiles[0].read_bytes())
    target = tmp_path / "default.pgo"
    trimmed = tmp_path / "trimmed.pgo"
    with caplog.at_level(logging.INFO, logger="autopgo.api.access"), thread_server(blobs, RecordingSink()) as running:
        download = ["download", "svc", "--api-url", running.url, "-o"]
        assert cli(capsys, *download, str(target)) == (0, "", "")
        first = target.stat()
        assert cli(capsys, *download, str(target)) == (0, "", f"{target} is up to date\n")
        second = target.stat()
        assert (second.st_mtime_ns, second.st_ino) == (first.st_mtime_ns, first.st_ino)

        blobs.put(merged_key("svc"), cpu_profiles[1].read_bytes())  # a new merge replaces the file
        assert cli(capsys, *download, str(target)) == (0, "", "")
        assert target.read_bytes() == cpu_profiles[1].read_bytes()

        assert cli(capsys, *download, str(trimmed), "--trim") == (0, "", "")
        assert cli(capsys, *download, str(trimmed), "--trim") == (0, "", f"{trimmed} is up to date\n")
        statuses = answered(caplog, 5)
    blobs.close()
    assert statuses == ["200", "304", "200", "200", "304"]


def test_download_between_real_processes_keeps_a_current_file(tmp_path: Path, cpu_profiles: list[Path]) -> None:
    """`autopgo download` against `autopgo server`, each a process of its own: downloading an
    unchanged profile again is a 304 (the server's access log says so) that leaves the file as
    it was and says so in one line; a new merge is downloaded again."""
    from apiserver import ServerProcess

    from profiling.pipeline import merged_key
    from profiling.storage import open_store

    blobs = open_store(str(tmp_path / "blobs"))
    blobs.put(merged_key("svc"), cpu_profiles[0].read_bytes())
    target = tmp_path / "default.pgo"
    with ServerProcess(["--blob-store", str(tmp_path / "blobs"), "--events", "log", "--workers", "0"]) as server:

        def download() -> tuple[int, str, str]:
            argv = [str(AUTOPGO), "download", "svc", "-o", str(target), "--api-url", server.url]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            return done.returncode, done.stdout, done.stderr

        assert download() == (0, "", "")
        first = target.stat()
        assert download() == (0, "", f"{target} is up to date\n")
        second = target.stat()
        blobs.put(merged_key("svc"), cpu_profiles[1].read_bytes())  # a new merge
        assert download() == (0, "", "")
        server.terminate()
        assert server.wait(15) == 0
        log = server.stderr()
    blobs.close()
    assert (second.st_mtime_ns, second.st_ino) == (first.st_mtime_ns, first.st_ino)
    assert target.read_bytes() == cpu_profiles[1].read_bytes()
    statuses = re.findall(r'"GET /api/profile/svc" (\d+)', log)
    assert statuses == ["200", "304", "200"], log


def answered(caplog: pytest.LogCaptureFixture, count: int) -> list[str]:
    """The statuses of the first ``count`` requests in the API server's access log."""
    deadline = time.monotonic() + 5
    while True:  # the server logs a request just after answering it
        lines = [r.getMessage() for r in caplog.records if r.name == "autopgo.api.access"]
        if len(lines) >= count or time.monotonic() > deadline:
            return [line.split('" ', 1)[1].split()[0] for line in lines]
        time.sleep(0.01)


def test_cli_download_trim_to_a_path(fake: FakeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store(fake, "checkout")
    target = tmp_path / "svc.pgo"
    assert cli(capsys, "download", "checkout", "--trim", "-o", str(target), "--api-url", fake.url) == (0, "", "")
    assert target.read_bytes() == b"trimmed:" + PROFILE
    assert fake.requests[0].target == "/api/profile/checkout?trim=pgo"


def test_cli_download_to_stdout(
    fake: FakeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    store(fake, "checkout")
    monkeypatch.chdir(tmp_path)
    code = main(["download", "checkout", "-o", "-", "--trim", "--api-url", fake.url])
    out, err = capsysbinary.readouterr()
    assert (code, out, err) == (0, b"trimmed:" + PROFILE, b"")
    assert list(tmp_path.iterdir()) == []


def test_cli_list_prints_a_table(fake: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    store(fake, "alpha", b"x" * 10, datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
    store(fake, "checkout-api", b"y" * 123456, datetime(2024, 6, 2, 8, 30, 5, tzinfo=UTC))
    code, out, err = cli(capsys, "list", "--api-url", fake.url)
    assert (code, err) == (0, "")
    assert out == (
        "APP             SIZE  LAST MODIFIED\n"
        "alpha             10  2024-05-01 12:00:00 UTC\n"
        "checkout-api  123456  2024-06-02 08:30:05 UTC\n"
    )


def test_cli_list_of_an_empty_store_says_so(fake: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "list", "--api-url", fake.url) == (0, "", "no merged profiles on the server\n")


def test_cli_delete(fake: FakeAPI, capsys: pytest.CaptureFixture[str]) -> None:
    store(fake, "checkout")
    fake.token = "s3cret"
    assert cli(capsys, "delete", "checkout", "--api-url", fake.url, "--token", "s3cret") == (0, "", "")
    assert fake.profiles == {}
    assert fake.requests[0].method == "DELETE"


def test_cli_takes_url_and_token_from_the_environment(
    fake: FakeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTOPGO_API_URL", fake.url)
    monkeypatch.setenv("AUTOPGO_API_TOKEN", "from-env")
    fake.token = "from-env"
    path = tmp_path / "cpu.pb.gz"
    path.write_bytes(PROFILE)
    assert cli(capsys, "upload", "--app", "checkout", str(path))[0] == 0
    assert cli(capsys, "list")[0] == 0
    assert cli(capsys, "delete", "checkout")[0] == 0
    assert [r.headers.get("authorization") for r in fake.requests] == ["Bearer from-env"] * 3


def test_cli_flags_win_over_the_environment(
    fake: FakeAPI, closed_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTOPGO_API_URL", closed_url)
    monkeypatch.setenv("AUTOPGO_API_TOKEN", "from-env")
    store(fake, "checkout")
    assert cli(capsys, "delete", "checkout", "--api-url", fake.url, "--token", "from-flag") == (0, "", "")
    assert fake.requests[0].headers["authorization"] == "Bearer from-flag"


def test_cli_defaults_to_localhost_8080(monkeypatch: pytest.MonkeyPatch) -> None:
    from cli import remote

    seen: list[tuple[str, str | None, float | None]] = []

    class Recorder:
        def __init__(self, url: str, token: str | None = None, timeout: float | None = None) -> None:
            seen.append((url, token, timeout))

    monkeypatch.setattr(client_module, "Client", Recorder)
    args = build_parser().parse_args(["list"])
    remote.client_for(args)
    assert seen == [("http://localhost:8080", None, 30.0)]


Scenario = Callable[[FakeAPI, str, Path], list[str]]


def _upload(app: str = "checkout") -> list[str]:
    return ["upload", "--app", app, str(Path(__file__))]


FAILURES: dict[str, tuple[Scenario, str]] = {
    "500 with a JSON message": (
        lambda f, closed, tmp: (f.faults.__setitem__(("POST", "/api/profile/checkout"), Fault()), _upload())[1],
        "500 Internal Server Error: disk on fire",
    ),
    "502 with an HTML body": (
        lambda f, closed, tmp: (
            f.faults.__setitem__(("GET", "/api/profile"), Fault(502, b"<html>\n<h1>Bad</h1>\n</html>", "text/html")),
            ["list"],
        )[1],
        "502 Bad Gateway",
    ),
    "401 without a token": (
        lambda f, closed, tmp: (setattr(f, "token", "s3cret"), ["delete", "checkout"])[1],
        "401 Unauthorized: missing bearer token",
    ),
    "401 with a wrong token": (
        lambda f, closed, tmp: (setattr(f, "token", "s3cret"), _upload() + ["--token", "nope"])[1],
        "401 Unauthorized: invalid bearer token",
    ),
    "404 download": (lambda f, closed, tmp: ["download", "checkout", "-o", str(tmp / "p.pgo")], "404 Not Found"),
    "404 delete": (lambda f, closed, tmp: ["delete", "checkout"], "404 Not Found: no profiles for checkout"),
    "413 upload": (
        lambda f, closed, tmp: (setattr(f, "max_body", 10), _upload())[1],
        "413 Request Entity Too Large: profile is larger than 10 bytes",
    ),
    "timeout": (
        lambda f, closed, tmp: (
            f.faults.__setitem__(("GET", "/api/profile"), Fault(200, delay=10)),
            ["list", "--timeout", "200ms"],
        )[1],
        "/api/profile: no response after 0.2s",
    ),
    "connection refused": (lambda f, closed, tmp: ["list", "--api-url", closed], "cannot reach http://127.0.0.1:"),
    "connection dropped mid-download": (
        lambda f, closed, tmp: (
            f.faults.__setitem__(("GET", "/api/profile/checkout"), Fault(200, b"x" * 1000, declared_length=5000)),
            ["download", "checkout", "-o", str(tmp / "p.pgo")],
        )[1],
        "failed: peer closed connection without sending complete message body",
    ),
    "dropped download to stdout": (
        lambda f, closed, tmp: (
            f.faults.__setitem__(("GET", "/api/profile/checkout"), Fault(200, b"x" * 1000, declared_length=5000)),
            ["download", "checkout", "-o", "-"],
        )[1],
        "failed: peer closed connection",
    ),
    "bad app name": (lambda f, closed, tmp: _upload("Check_Out"), "invalid app name 'Check_Out'"),
    "bad app name to download": (lambda f, closed, tmp: ["download", "../x"], "invalid app name '../x'"),
    "missing upload file": (
        lambda f, closed, tmp: ["upload", "--app", "checkout", str(tmp / "nope.pb.gz")],
        "nope.pb.gz: No such file or directory",
    ),
    "download into a missing directory": (
        lambda f, closed, tmp: (store(f, "checkout"), ["download", "checkout", "-o", str(tmp / "no" / "p")])[1],
        "No such file or directory",
    ),
    "bad API URL": (lambda f, closed, tmp: ["list", "--api-url", "localhost:8080"], "invalid API URL"),
    "not JSON": (
        lambda f, closed, tmp: (f.faults.__setitem__(("GET", "/api/profile"), Fault(200, b"hello")), ["list"])[1],
        "unexpected reply to GET",
    ),
}


@pytest.mark.parametrize("name", FAILURES)
def test_cli_failure_is_one_line_on_stderr_and_exit_1(
    name: str, fake: FakeAPI, closed_url: str, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    scenario, expected = FAILURES[name]
    argv = scenario(fake, closed_url, tmp_path)
    if "--api-url" not in argv:
        argv += ["--api-url", fake.url]
    code = main(argv)
    out, err = capsysbinary.readouterr()
    text = err.decode()
    assert code == 1
    assert out == b""
    assert text.count("\n") == 1 and text.endswith("\n"), text
    assert text.startswith(f"autopgo {argv[0]}: "), text
    assert expected in text, text
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))
    if name.startswith("bad app name"):
        assert fake.requests == []


def test_cli_refuses_to_write_a_profile_to_a_terminal(
    fake: FakeAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store(fake, "checkout")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, err = cli(capsys, "download", "checkout", "-o", "-", "--api-url", fake.url)
    assert (code, out) == (1, "")
    assert err == "autopgo download: will not write a binary profile to a terminal: redirect it or use -o FILE\n"
    assert fake.requests == []


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf", "nan", "0s", "5 s", "1x"])
def test_cli_timeout_must_be_positive(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["list", "--timeout", value])
    assert exc.value.code == 2
    assert "--timeout" in capsys.readouterr().err


@pytest.mark.parametrize(("value", "seconds"), [("30", 30.0), ("0.5", 0.5), ("1m30s", 90.0), ("1500ms", 1.5), ("2h", 7200.0)])
def test_cli_timeout_is_seconds_or_a_duration(value: str, seconds: float) -> None:
    """Documented as SECONDS, a bare number stays seconds; a Go duration works too."""
    assert build_parser().parse_args(["list", "--timeout", value]).timeout == seconds


# --- end to end, against the real server --------------------------------------------------------


def _real_server_help() -> str | None:
    """``autopgo server --help``, or None if there is no runnable server command."""
    try:
        result = subprocess.run([str(AUTOPGO), "server", "--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


@pytest.mark.slow
def test_end_to_end_with_the_real_server(cpu_profiles: list[Path], tmp_path: Path) -> None:
    help_text = _real_server_help()
    if help_text is None or "--blob-store" not in help_text:
        pytest.skip("`autopgo server` is not available (api/ and cli/server.py not in place)")
    from profiling.pipeline import merged_key
    from profiling.pprof import decode
    from profiling.storage import open_store

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOPGO_", "PREFECT_"))}
    log_path = tmp_path / "server.log"
    argv = [str(AUTOPGO), "server", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--blob-store", f"file://{tmp_path / 'blobs'}", "--token", "e2e-token"]
    if "--events" in help_text:
        argv += ["--events", "log"]  # no Prefect: events only reach the log
    with log_path.open("wb") as log:
        server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until_ready(server, url, log_path)
        with Client(url) as anonymous, pytest.raises(ClientError) as refused:
            anonymous.upload("e2e-app", cpu_profiles[0].read_bytes())
        assert refused.value.status == 401
        with Client(url, token="e2e-token") as api:
            with cpu_profiles[0].open("rb") as f:
                key = api.upload("e2e-app", f)
            assert key.startswith("e2e-app/staging/")
            with pytest.raises(ClientError) as bad:
                api.upload("e2e-app", b"not a profile")
            assert bad.value.status == 400 and "\n" not in str(bad.value)
            profiles = api.list()  # an upload that is not merged yet need not be listed
            assert all(isinstance(p, ProfileInfo) and p.last_modified.tzinfo for p in profiles)

            # No merge flow runs here: put a merged profile in the store as one would.
            merged = cpu_profiles[2].read_bytes()
            store = open_store(f"file://{tmp_path / 'blobs'}")
            try:
                store.put(merged_key("e2e-merged"), merged)
            finally:
                store.close()
            listed_merged = [p for p in api.list() if p.app == "e2e-merged"]
            assert [(p.app, p.size) for p in listed_merged] == [("e2e-merged", len(merged))]
            got = api.download("e2e-merged")
            assert got.content == merged and got.etag and got.last_modified
            assert api.download("e2e-merged", if_none_match=got.etag).not_modified
            trimmed = api.download("e2e-merged", trim=True).content
            assert decode(trimmed).samples
            assert api.download_to("e2e-merged", tmp_path / "default.pgo").size == len(merged)
            assert (tmp_path / "default.pgo").read_bytes() == merged

        cli_env = {**env, "AUTOPGO_API_URL": url, "AUTOPGO_API_TOKEN": "e2e-token"}
        uploaded = subprocess.run(
            [str(AUTOPGO), "upload", "--app", "e2e-app", "-"],
            input=cpu_profiles[1].read_bytes(),
            capture_output=True,
            env=cli_env,
            timeout=60,
        )
        assert (uploaded.returncode, uploaded.stderr) == (0, b"")
        assert uploaded.stdout.startswith(b"e2e-app/staging/")
        listed = subprocess.run([str(AUTOPGO), "list"], capture_output=True, text=True, env=cli_env, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.splitlines()[0].split() == ["APP", "SIZE", "LAST", "MODIFIED"]
        assert re.search(rf"^e2e-merged +{len(merged)}  \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", listed.stdout, re.M)
        missing = subprocess.run(
            [str(AUTOPGO), "download", "no-such-app", "-o", str(tmp_path / "x.pgo")],
            capture_output=True,
            text=True,
            env=cli_env,
            timeout=60,
        )
        assert missing.returncode == 1
        assert missing.stderr.startswith("autopgo download: GET ") and missing.stderr.count("\n") == 1
        assert "404 Not Found" in missing.stderr
        assert not (tmp_path / "x.pgo").exists()

        to_stdout = subprocess.run(
            [str(AUTOPGO), "download", "e2e-merged", "--trim", "-o", "-"], capture_output=True, env=cli_env, timeout=60
        )
        assert (to_stdout.returncode, to_stdout.stdout) == (0, trimmed)

        with Client(url, token="e2e-token") as api:
            api.delete("e2e-app")  # 202: the deletion is scheduled
            api.delete("e2e-merged")
            with pytest.raises(ClientError) as nothing:
                api.delete("never-uploaded")
            assert nothing.value.status == 404
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert server.returncode in (0, -15), log_path.read_text(errors="replace")[-2000:]

