"""Scrape targets (lists, files re-read on change) and scraping, against the real Go test service."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import harness
import httpx
import pytest

import profiling.discovery.scraping as scrape_mod
from profiling.discovery import (
    DEFAULT_PATH,
    FileTargets,
    ScrapeError,
    ScrapeReport,
    StaticTargets,
    Target,
    fetch_profile,
    parse_target_list,
    pick,
    scrape,
    scrape_async,
)
from profiling.errors import ConfigError
from profiling.pprof import ValueType, decode

# -- parse_target_list --------------------------------------------------------------


def test_parse_target_list_defaults_and_fields() -> None:
    targets = parse_target_list(
        [
            {"address": "10.0.0.5:6060"},
            {"address": "svc.local:8080", "path": "/custom/profile"},
            {"address": "[::1]:443", "scheme": "https"},
        ],
        "where",
    )
    assert targets == [
        Target("10.0.0.5:6060", DEFAULT_PATH, "http"),
        Target("svc.local:8080", "/custom/profile", "http"),
        Target("[::1]:443", DEFAULT_PATH, "https"),
    ]
    assert [t.url() for t in targets] == [
        "http://10.0.0.5:6060/debug/pprof/profile",
        "http://svc.local:8080/custom/profile",
        "https://[::1]:443/debug/pprof/profile",
    ]
    assert parse_target_list([], "where") == []


@pytest.mark.parametrize(
    ("data", "setting"),
    [
        (None, "t.yaml:"),
        ({"address": "h:1"}, "t.yaml:"),
        ("h:1", "t.yaml:"),
        (["h:1"], "t.yaml[0]:"),
        ([{"address": "h:1"}, None], "t.yaml[1]:"),
        ([{"address": "h:1", "port": 1}], "t.yaml[0]:"),
        ([{}], "t.yaml[0].address"),
        ([{"address": "10.0.0.5"}], "t.yaml[0].address"),
        ([{"address": "http://h:1"}], "t.yaml[0].address"),
        ([{"address": 6060}], "t.yaml[0].address"),
        ([{"address": "h:1", "path": "debug/pprof/profile"}], "t.yaml[0].path"),
        ([{"address": "h:1", "path": None}], "t.yaml[0].path"),
        ([{"address": "h:1", "scheme": "ftp"}], "t.yaml[0].scheme"),
        ([{"address": "h:1", "scheme": "HTTP"}], "t.yaml[0].scheme"),
    ],
)
def test_parse_target_list_rejects(data: object, setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_target_list(data, "t.yaml")
    message = str(info.value)
    assert type(info.value) is ConfigError
    assert message.startswith(setting) and "\n" not in message, message


def test_static_targets_returns_copies() -> None:
    source = StaticTargets([Target("a:1"), Target("b:2")])
    first = source.targets()
    first.clear()
    assert source.targets() == [Target("a:1"), Target("b:2")]


# -- FileTargets --------------------------------------------------------------------


class TargetFile:
    """Writes the file with a fresh, distinct mtime every time, so each edit is seen."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mtime = time.time() - 1000

    def write(self, text: str | bytes) -> None:
        if self.path.is_dir():
            self.path.rmdir()
        if isinstance(text, bytes):
            self.path.write_bytes(text)
        else:
            self.path.write_text(text)
        self.mtime += 10
        os.utime(self.path, (self.mtime, self.mtime))


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_file_targets_reads_and_rereads_on_change(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    f = TargetFile(tmp_path / "targets.yaml")
    f.write("- address: 10.0.0.1:6060\n- address: 10.0.0.2:6060\n  path: /p\n")
    source = FileTargets(f.path)
    assert source.targets() == [Target("10.0.0.1:6060"), Target("10.0.0.2:6060", "/p")]
    assert source.targets() == [Target("10.0.0.1:6060"), Target("10.0.0.2:6060", "/p")]  # unchanged

    f.write("- address: 10.0.0.3:7070\n")
    assert source.targets() == [Target("10.0.0.3:7070")]

    # Same size as before, different content: the new mtime alone must trigger a re-read.
    f.write("- address: 10.0.0.4:7070\n")
    assert source.targets() == [Target("10.0.0.4:7070")]

    f.write("")  # empty file: no targets
    assert source.targets() == []
    assert errors(caplog) == []


def test_file_targets_accepts_json(tmp_path: Path) -> None:
    path = tmp_path / "targets.json"
    path.write_text(json.dumps([{"address": "127.0.0.1:1", "scheme": "https"}]))
    assert FileTargets(path).targets() == [Target("127.0.0.1:1", DEFAULT_PATH, "https")]


def test_file_targets_result_is_a_copy(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("- address: a:1\n")
    source = FileTargets(path)
    source.targets().append(Target("evil:1"))
    assert source.targets() == [Target("a:1")]


BROKEN_EDITS = [
    ("bad-yaml", "- address: [unclosed\n", "not valid YAML"),
    ("mapping-not-list", "address: 10.0.0.9:6060\n", "expected a list"),
    ("no-port", "- address: 10.0.0.9\n", "[0].address"),
    ("unknown-key", "- address: 10.0.0.9:1\n  weight: 3\n", "weight"),
    ("not-utf8", b"- address: \xff\xfe:1\n", "cannot read"),
    ("directory", None, "cannot read"),
    ("deleted", "", "cannot read"),
]


@pytest.mark.parametrize(("edit", "expected"), [(t, e) for _, t, e in BROKEN_EDITS], ids=[i for i, _, _ in BROKEN_EDITS])
def test_file_targets_keeps_last_good_list_on_broken_edit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, edit: str | bytes | None, expected: str
) -> None:
    f = TargetFile(tmp_path / "targets.yaml")
    f.write("- address: 10.0.0.1:6060\n- address: 10.0.0.2:6060\n")
    good = [Target("10.0.0.1:6060"), Target("10.0.0.2:6060")]
    source = FileTargets(f.path)
    assert source.targets() == good

    if edit is None:  # unreadable: the name is now a directory
        f.path.unlink()
        f.path.mkdir()
    elif edit == "":
        f.path.unlink()
    else:
        f.write(edit)

    for _ in range(2):  # every bad read: the good list, and exactly one error saying why
        caplog.clear()
        with caplog.at_level(logging.INFO):
            assert source.targets() == good
        records = errors(caplog)
        assert len(records) == 1, [r.getMessage() for r in caplog.records]
        message = records[0].getMessage()
        assert records[0].levelno == logging.ERROR
        assert expected in message and str(f.path) in message and "\n" not in message, message
        assert "last good" in message

    caplog.clear()
    f.write("- address: 10.0.0.3:6060\n")  # fixed: the new list, no error
    with caplog.at_level(logging.INFO):
        assert source.targets() == [Target("10.0.0.3:6060")]
    assert errors(caplog) == []


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read"),
        ("- address: [unclosed\n", "not valid YAML"),
        ("{address: 10.0.0.1:6060}\n", "expected a list"),
        ("- {address: nope}\n", "[0].address"),
        (b"\xff\xfe\x00", "cannot read"),
    ],
)
def test_file_targets_first_read_bad_raises(tmp_path: Path, content: str | bytes | None, expected: str) -> None:
    path = tmp_path / "targets.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    source = FileTargets(path)
    for _ in range(2):  # still no good list the second time
        with pytest.raises(ConfigError) as info:
            source.targets()
        message = str(info.value)
        assert type(info.value) is ConfigError
        assert expected in message and str(path) in message and "\n" not in message, message


def test_file_targets_not_yaml_keeps_its_context_and_count(tmp_path: Path) -> None:
    """With no good list to fall back on, the error is the file's own: its report shows the line."""
    path = tmp_path / "targets.yaml"
    path.write_text("- address: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        FileTargets(path).targets()
    assert info.value.report().split("\n") == [
        f"{path}:2:1: not valid YAML: expected ',' or ']', but got '<stream end>'",
        "  1 | - address: [unclosed",
        "    |            ^ while parsing a flow sequence",
        "  2 | ",
        "    | ^",
    ]
    path.write_text("- address: nope\n- address: 10.0.0.2\n")
    with pytest.raises(ConfigError) as info:
        FileTargets(path).targets()
    assert info.value.report().split("\n")[0] == f"{path}: 2 mistakes"


def test_file_targets_report_every_mistake_with_its_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = TargetFile(tmp_path / "targets.yaml")
    f.write("- address: 10.0.0.1:6060\n- address: nope\n- {address: 'h:1', path: x, scheme: ftp}\n")
    source = FileTargets(f.path)
    with pytest.raises(ConfigError) as info:
        source.targets()
    assert info.value.problems == [
        f"{f.path}:2: [1].address: expected host:port, not 'nope'",
        f"{f.path}:3: [2].path: expected a path starting with '/', not 'x'",
        f"{f.path}:3: [2].scheme: expected http or https, not 'ftp'",
    ]
    f.write("- address: 10.0.0.1:6060\n")
    assert source.targets() == [Target("10.0.0.1:6060")]
    f.write("- address: nope\n- address: 10.0.0.2\n")
    with caplog.at_level(logging.INFO):
        assert source.targets() == [Target("10.0.0.1:6060")]
    (record,) = errors(caplog)  # one log line naming both
    assert record.getMessage() == (
        f"{f.path}:1: [0].address: expected host:port, not 'nope'; "
        f"{f.path}:2: [1].address: expected host:port, not '10.0.0.2'; keeping the last good list of 1 targets"
    )


def test_file_targets_first_good_after_bad_start(tmp_path: Path) -> None:
    f = TargetFile(tmp_path / "targets.yaml")
    source = FileTargets(f.path)
    with pytest.raises(ConfigError):
        source.targets()
    f.write("- address: 10.0.0.1:6060\n")
    assert source.targets() == [Target("10.0.0.1:6060")]


# -- pick ---------------------------------------------------------------------------

TEN = [Target(f"10.0.0.{i}:6060") for i in range(10)]


def test_pick_returns_all_when_sample_size_covers_them() -> None:
    assert pick(TEN, 10) == TEN
    assert pick(TEN, 50) == TEN
    assert pick([], 3) == []


def test_pick_dedupes() -> None:
    a, b = Target("a:1"), Target("b:1")
    assert pick([a, b, a, Target("a:1"), b], 5) == [a, b]
    assert pick([a, a, a, b], 2) == [a, b]  # two distinct targets fit a sample of two
    chosen = pick([a, a, a, a, b, b, Target("c:1")], 2, random.Random(1))
    assert len(chosen) == 2 and len(set(chosen)) == 2


def test_pick_samples_without_repeats() -> None:
    chosen = pick(TEN, 3, random.Random(0))
    assert len(chosen) == 3 and len(set(chosen)) == 3 and set(chosen) <= set(TEN)
    assert pick(TEN, 0) == []


def test_pick_seeded_rng_is_deterministic() -> None:
    runs = [pick(TEN, 4, random.Random(42)) for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]
    seen = {tuple(pick(TEN, 4, random.Random(seed))) for seed in range(20)}
    assert len(seen) > 1  # the sample does depend on the rng


def test_pick_uses_every_target_over_time() -> None:
    rng = random.Random(7)
    seen = set()
    for _ in range(200):
        seen.update(pick(TEN, 2, rng))
    assert seen == set(TEN)


# -- local servers for failures -----------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    big = 5000

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        self.server.requests.append((parts.path, parse_qs(parts.query)))  # type: ignore[attr-defined]
        if parts.path == "/fail":
            self._reply(500, b"internal error:\n  the profiler\tbroke\n")
        elif parts.path == "/fail-empty":
            self._reply(503, b"")
        elif parts.path == "/big":
            self._reply(200, b"x" * self.big)
        elif parts.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._reply(200, b"profile:" + parts.path.encode())

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def http_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def address_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"{host}:{port}"


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections (in the kernel backlog) and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.fixture
def closed_port() -> str:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"127.0.0.1:{port}"


def fetch(target: Target, duration: timedelta) -> bytes:
    async def run() -> bytes:
        async with httpx.AsyncClient() as client:
            return await fetch_profile(client, target, duration)

    return asyncio.run(run())


def test_fetch_profile_sends_seconds_and_returns_body(http_server: ThreadingHTTPServer) -> None:
    target = Target(address_of(http_server), "/ok")
    assert fetch(target, timedelta(seconds=3)) == b"profile:/ok"
    assert fetch(target, timedelta(milliseconds=200)) == b"profile:/ok"
    assert http_server.requests == [("/ok", {"seconds": ["3"]}), ("/ok", {"seconds": ["1"]})]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/fail", "HTTP 500: internal error: the profiler broke"), ("/fail-empty", "HTTP 503"), ("/redirect", "HTTP 302")],
)
def test_fetch_profile_http_error_is_one_line(http_server: ThreadingHTTPServer, path: str, expected: str) -> None:
    target = Target(address_of(http_server), path)
    with pytest.raises(ScrapeError) as info:
        fetch(target, timedelta(seconds=1))
    message = str(info.value)
    assert message == f"{target.url()}: {expected}"


def test_fetch_profile_connection_refused(closed_port: str) -> None:
    target = Target(closed_port)
    with pytest.raises(ScrapeError) as info:
        fetch(target, timedelta(seconds=1))
    message = str(info.value)
    assert message.startswith(target.url() + ": ") and "\n" not in message
    assert "ConnectError" in message


def test_fetch_profile_timeout(silent_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scrape_mod, "FETCH_MARGIN", timedelta(seconds=1))
    target = Target(silent_server)
    started = time.monotonic()
    with pytest.raises(ScrapeError) as info:
        fetch(target, timedelta(seconds=1))
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert message == f"{target.url()}: no profile within 2s"
    assert 1.5 < elapsed < 5, elapsed


@pytest.fixture
def trickle_server() -> Iterator[str]:
    """Answers 200 at once, then sends one byte of the body every 0.2 s for 2 s."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    stop = threading.Event()

    def serve() -> None:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
                for _ in range(10):
                    if stop.wait(0.2):
                        return
                    conn.sendall(b"x")
            except OSError:
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        sock.close()
        thread.join(5)


def test_fetch_profile_timeout_bounds_a_trickling_target(trickle_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scrape_mod, "FETCH_MARGIN", timedelta(milliseconds=300))  # deadline: 1.3 s
    started = time.monotonic()
    with pytest.raises(ScrapeError):
        fetch(Target(trickle_server), timedelta(seconds=1))
    assert time.monotonic() - started < 1.9


def test_fetch_profile_oversize(http_server: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scrape_mod, "MAX_PROFILE_BYTES", 1000)
    target = Target(address_of(http_server), "/big")
    with pytest.raises(ScrapeError) as info:
        fetch(target, timedelta(seconds=1))
    assert str(info.value) == f"{target.url()}: profile larger than 1000 bytes"
    monkeypatch.setattr(scrape_mod, "MAX_PROFILE_BYTES", _Handler.big)  # exactly the limit is fine
    assert len(fetch(target, timedelta(seconds=1))) == _Handler.big


def test_scrape_failing_upload_does_not_stop_others(http_server: ThreadingHTTPServer) -> None:
    address = address_of(http_server)
    targets = [Target(address, f"/t{i}") for i in range(4)]
    uploaded: list[bytes] = []

    def upload(data: bytes) -> str:
        if data.endswith(b"/t2"):
            raise RuntimeError("API said no")
        uploaded.append(data)
        return f"key-{data.decode()}"

    report = scrape(targets, 10, timedelta(seconds=1), upload)
    assert sorted(uploaded) == [b"profile:/t0", b"profile:/t1", b"profile:/t3"]
    assert report.uploaded == {t.url(): f"key-profile:{t.path}" for t in targets if t.path != "/t2"}
    assert report.failed == {targets[2].url(): "API said no"}


def test_scrape_samples_and_uses_given_client(http_server: ThreadingHTTPServer) -> None:
    address = address_of(http_server)
    targets = [Target(address, f"/t{i}") for i in range(6)]

    async def upload(data: bytes) -> str:
        return data.decode()

    async def run() -> ScrapeReport:
        async with httpx.AsyncClient() as client:
            report = await scrape_async(
                targets, 2, timedelta(seconds=1), upload, client=client, rng=random.Random(3)
            )
            assert not client.is_closed  # a client passed in is the caller's to close
            return report

    report = asyncio.run(run())
    expected = pick(targets, 2, random.Random(3))
    assert set(report.uploaded) == {t.url() for t in expected}
    assert report.failed == {}


def test_scrape_without_targets(caplog: pytest.LogCaptureFixture) -> None:
    def upload(data: bytes) -> str:
        raise AssertionError("nothing to upload")

    with caplog.at_level(logging.WARNING):
        report = scrape([], 3, timedelta(seconds=1), upload)
    assert report == ScrapeReport()
    assert any("no targets" in r.getMessage() for r in caplog.records)


# -- against the real Go test service -----------------------------------------------


@pytest.fixture(scope="module")
def services(service_binary: Path) -> Iterator[list[harness.Service]]:
    first = harness.Service(service_binary, load=4).start()
    try:
        second = harness.Service(service_binary, load=4).start()
    except BaseException:
        first.stop()
        raise
    try:
        yield [first, second]
    finally:
        first.stop()
        second.stop()


def check_cpu_profile(data: bytes) -> None:
    profile = decode(data)
    assert ValueType("cpu", "nanoseconds") in profile.sample_types


@pytest.mark.slow
def test_scrape_real_services_with_failures(
    services: list[harness.Service], http_server: ThreadingHTTPServer, closed_port: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = [Target(s.address) for s in services]
    refused = Target(closed_port)
    erroring = Target(address_of(http_server), "/fail")
    uploads: list[bytes] = []
    lock = threading.Lock()

    def upload(data: bytes) -> str:
        with lock:
            uploads.append(data)
            return f"staged-{len(uploads)}"

    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        report = scrape([*good, refused, erroring], 4, timedelta(seconds=1), upload)
    elapsed = time.monotonic() - started

    assert len(uploads) == 2
    for data in uploads:
        check_cpu_profile(data)
    assert set(report.uploaded) == {t.url() for t in good}
    assert sorted(report.uploaded.values()) == ["staged-1", "staged-2"]
    assert set(report.failed) == {refused.url(), erroring.url()}
    for url, why in report.failed.items():
        assert why.startswith(url + ": ") and "\n" not in why, why
    assert "HTTP 500" in report.failed[erroring.url()]
    assert "ConnectError" in report.failed[refused.url()]
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert refused.url() in warned and erroring.url() in warned
    assert elapsed < 5, elapsed


@pytest.mark.slow
def test_scrape_real_services_concurrently(services: list[harness.Service]) -> None:
    uploads: list[bytes] = []
    started = time.monotonic()
    report = scrape([Target(s.address) for s in services], 2, timedelta(seconds=2), lambda d: uploads.append(d) or "k")
    elapsed = time.monotonic() - started
    assert report.failed == {}
    assert len(report.uploaded) == 2 and len(uploads) == 2
    for data in uploads:
        check_cpu_profile(data)
        assert decode(data).duration_nanos >= 1_900_000_000
    assert 1.9 < elapsed < 3.5, elapsed  # each profiled for 2 s, both at once


@pytest.mark.slow
def test_scrape_real_service_sample_of_one(services: list[harness.Service]) -> None:
    targets = [Target(s.address) for s in services]
    uploads: list[bytes] = []
    report = scrape(targets, 1, timedelta(seconds=1), lambda d: uploads.append(d) or "k", rng=random.Random(5))
    assert len(uploads) == 1 and report.failed == {}
    assert list(report.uploaded) == [pick(targets, 1, random.Random(5))[0].url()]
    check_cpu_profile(uploads[0])
