"""The HTTP API over real sockets: a server in a thread (or a subprocess) on
127.0.0.1, a FileStore in tmp_path and a recording event sink."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from multiprocessing import Pipe
from pathlib import Path
from typing import Any

import httpx
import pytest
from apiserver import (
    AUTOPGO,
    RecordingSink,
    ServerProcess,
    ThreadServer,
    closed_port,
    fake_prefect,
    raw_request,
    read_response,
    request_bytes,
    thread_server,
)
from sample_profiles import cpu_profile, heap_profile

from api import workers
from api.body import Limits
from api.config import EventsConfig
from api.errors import ApiError, api_error
from api.sinks import LogEventSink, open_sink
from profiling.errors import (
    BlobStoreError,
    PgoUnusableError,
    PreconditionFailedError,
    ProfileError,
    ProfileTooLargeError,
    StagingError,
)
from profiling.names import MAX_APP_NAME
from profiling.pipeline import (
    DELETED,
    UPLOADED,
    Event,
    EventError,
    Labels,
    PrefectEventSink,
    find_pending,
    is_merged_key,
    merged_key,
    new_staging_key,
    prefect_event,
    read_generation,
    rejected_prefix,
    staging_prefix,
    tombstone_prefix,
)
from profiling.pprof import Profile, Sample, ValueType, decode, encode, encode_raw, trim_for_pgo
from profiling.pprof.proto import profile_pb2 as pb
from profiling.storage import BlobStore, content_etag, open_store

MAX_BODY = 1 << 20
MAX_DECOMPRESSED = 4 << 20
TOKEN = "s3cret-token"
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


# --------------------------------------------------------------------------- profiles


CPU = encode(cpu_profile())


def gzip_bomb(size: int) -> bytes:
    """``size`` zero bytes, gzipped (about 1000:1)."""
    return gzip.compress(bytes(size), compresslevel=9)


def gzip_bomb_lying_trailer(size: int) -> bytes:
    """A bomb whose gzip trailer claims a tiny size, so only inflating can tell."""
    data = bytearray(gzip_bomb(size))
    data[-4:] = (100).to_bytes(4, "little")
    return bytes(data)


BAD_PROFILES = {
    "garbage": (b"this is not a profile at all", "not a pprof profile"),
    "empty": (b"", "empty profile"),
    "truncated gzip": (CPU[: len(CPU) // 2], "unexpected end of gzip data (truncated)"),
    "corrupt gzip": (CPU[:10] + bytes(len(CPU) - 10), "decompressing profile: corrupt gzip data (bad deflate data"),
    "gzip bad checksum": (
        CPU[:-8] + bytes(b ^ 0xFF for b in CPU[-8:-4]) + CPU[-4:],
        "bad profile: decompressing profile: corrupt gzip data (CRC-32 checksum mismatch)",
    ),
    # A whole file whose size field claims more than any limit: wrong, not too large.
    "gzip size field over the limit": (
        CPU[:-4] + b"\xff\xff\xff\xff",
        "bad profile: decompressing profile: corrupt gzip data (the gzip trailer's size field does not match the data)",
    ),
    "bad string table": (pb.Profile(string_table=["x"]).SerializeToString(), "string_table[0] must be ''"),
    "heap profile": (encode(heap_profile()), "not a CPU profile"),
    "no start_line": (encode(cpu_profile(start_line=0)), "start_line"),
}
# Refused with 413, as a body over --max-body is.
TOO_LARGE_PROFILES = {
    "gzip bomb": gzip_bomb(64 << 20),
    "gzip bomb, lying trailer": gzip_bomb_lying_trailer(64 << 20),
}
TRUNCATED = "bad profile: decompressing profile: unexpected end of gzip data (truncated)"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BlobStore]:
    blobs = open_store(str(tmp_path / "blobs"))
    yield blobs
    blobs.close()


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def server(store: BlobStore, sink: RecordingSink) -> Iterator[ThreadServer]:
    with thread_server(store, sink, limits=Limits(MAX_BODY, MAX_DECOMPRESSED)) as running:
        yield running


@pytest.fixture
def client(server: ThreadServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def keys(store: BlobStore) -> list[str]:
    return [info.key for info in store.list()]


def assert_error(response: httpx.Response, status: int, contains: str = "") -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    message = response.json()["message"]
    assert isinstance(message, str) and message and "\n" not in message
    assert contains.lower() in message.lower()
    return message


def assert_still_serving(server: ThreadServer) -> None:
    """A fresh connection gets an answer: the bad request did not break the server."""
    response = httpx.get(f"{server.url}/api/ready", timeout=10)
    assert response.status_code == 200


def put_merged(store: BlobStore, app: str, profile: Profile | bytes) -> None:
    data = profile if isinstance(profile, bytes) else encode(profile)
    store.put(merged_key(app), data)


# --------------------------------------------------------------------------- uploads


def test_upload_real_profiles_stages_them_and_emits_events(
    client: httpx.Client, store: BlobStore, sink: RecordingSink, cpu_profiles: list[Path]
) -> None:
    uploaded = {}
    for path in cpu_profiles:
        data = path.read_bytes()
        response = client.post("/api/profile/checkout", content=data)
        assert response.status_code == 201, response.text
        key = response.json()["key"]
        assert key.startswith(staging_prefix("checkout")) and key.endswith(".pb.gz")
        uploaded[key] = data
    assert sorted(uploaded) == keys(store)
    for key, data in uploaded.items():
        assert store.get(key) == data  # stored as sent (gzip)
    assert [(e.type, e.app, e.profile_key) for e in sink.events] == [(UPLOADED, "checkout", k) for k in uploaded]
    assert sink.events[0].payload() == {"app": "checkout", "profileKey": next(iter(uploaded))}


def test_raw_profile_is_stored_gzipped(client: httpx.Client, store: BlobStore) -> None:
    response = client.post("/api/profile/svc", content=encode_raw(cpu_profile()))
    assert response.status_code == 201
    stored = store.get(response.json()["key"])
    assert stored[:2] == b"\x1f\x8b"
    assert decode(stored) == decode(CPU)


def test_chunked_upload(client: httpx.Client, store: BlobStore) -> None:
    def pieces() -> Iterator[bytes]:
        for i in range(0, len(CPU), 100):
            yield CPU[i : i + 100]

    response = client.post("/api/profile/svc", content=pieces())
    assert response.status_code == 201, response.text
    assert store.get(response.json()["key"]) == CPU


def test_expect_100_continue(server: ThreadServer, store: BlobStore) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        expect = {"Expect": "100-continue", "Content-Length": str(len(CPU))}
        head = request_bytes("POST", "/api/profile/svc", headers=expect)
        sock.sendall(head)
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(CPU)
        response = read_response(sock)
    assert response.status == 201
    assert keys(store) == [response.json()["key"]]


@pytest.mark.parametrize("case", list(BAD_PROFILES))
def test_bad_profile_is_400_and_stores_nothing(
    case: str, client: httpx.Client, server: ThreadServer, store: BlobStore, sink: RecordingSink
) -> None:
    data, expected = BAD_PROFILES[case]
    assert len(data) <= MAX_BODY
    assert_error(client.post("/api/profile/svc", content=data), 400, expected)
    assert keys(store) == []
    assert sink.events == []
    assert_still_serving(server)
    assert client.get("/api/ready").status_code == 200  # the same keep-alive connection goes on too


@pytest.mark.parametrize("workers", [0, 1], ids=["in-thread", "worker"])
def test_truncated_real_profile_is_400_truncated(
    store: BlobStore, sink: RecordingSink, long_cpu_profile: Path, workers: int
) -> None:
    data = long_cpu_profile.read_bytes()
    cuts = [3, 18, 100, 10000, 20000, 23000, -1, -4, -8, -9, *range(200, len(data), 1999)]
    with thread_server(store, sink, workers=workers) as running, httpx.Client(base_url=running.url) as c:
        for cut in cuts:
            message = assert_error(c.post("/api/profile/svc", content=data[:cut]), 400)
            assert message == TRUNCATED, f"cut at {cut}: {message}"
    assert keys(store) == [] and sink.events == []


@pytest.mark.parametrize("workers", [0, 1], ids=["in-thread", "worker"])
def test_profile_over_max_decompressed_is_413(
    store: BlobStore, sink: RecordingSink, cpu_profiles: list[Path], long_cpu_profile: Path, workers: int
) -> None:
    data = long_cpu_profile.read_bytes()
    limit = len(gzip.decompress(data)) - 1
    with thread_server(store, sink, limits=Limits(MAX_BODY, limit), workers=workers) as running:
        with httpx.Client(base_url=running.url) as c:
            message = assert_error(c.post("/api/profile/svc", content=data), 413)
            assert message == f"decompressed profile is larger than the limit of {limit} bytes"
            message = assert_error(c.post("/api/profile/svc", content=gzip.decompress(data)), 413)
            assert message == f"profile is larger than the limit of {limit} bytes"  # raw, under --max-body
            for body in TOO_LARGE_PROFILES.values():
                assert_error(c.post("/api/profile/svc", content=body), 413, "larger than the limit")
            assert c.post("/api/profile/svc", content=cpu_profiles[0].read_bytes()).status_code == 201
            assert c.get("/api/ready").status_code == 200  # the same keep-alive connection goes on
    assert len(keys(store)) == 1


@pytest.mark.parametrize("case", list(TOO_LARGE_PROFILES))
def test_too_large_profile_is_413_and_stores_nothing(
    case: str, client: httpx.Client, server: ThreadServer, store: BlobStore, sink: RecordingSink
) -> None:
    data = TOO_LARGE_PROFILES[case]
    assert len(data) <= MAX_BODY
    message = f"larger than the limit of {MAX_DECOMPRESSED} bytes"
    assert_error(client.post("/api/profile/svc", content=data), 413, message)
    assert keys(store) == [] and sink.events == []
    assert client.get("/api/ready").status_code == 200


def test_server_command_max_decompressed_is_413(tmp_path: Path, long_cpu_profile: Path) -> None:
    data = long_cpu_profile.read_bytes()
    limit = len(gzip.decompress(data)) - 1
    args = ["--blob-store", f"file://{tmp_path}/blobs", "--events", "log", "--workers", "1"]
    with ServerProcess([*args, "--max-decompressed", str(limit)]) as proc:
        response = httpx.post(f"{proc.url}/api/profile/svc", content=data, timeout=30)
        assert_error(response, 413, f"decompressed profile is larger than the limit of {limit} bytes")
        assert_error(httpx.post(f"{proc.url}/api/profile/svc", content=data[:20000], timeout=30), 400, TRUNCATED)


@pytest.mark.parametrize("case", ["heap profile", "no start_line"])
def test_accept_any_profile_takes_what_pgo_cannot_use(case: str, store: BlobStore, sink: RecordingSink) -> None:
    data = BAD_PROFILES[case][0]
    with thread_server(store, sink, accept_any_profile=True) as running:
        response = httpx.post(f"{running.url}/api/profile/svc", content=data)
        assert response.status_code == 201, response.text
        assert_error(httpx.post(f"{running.url}/api/profile/svc", content=b"garbage"), 400, "not a pprof profile")
    assert keys(store) == [response.json()["key"]]


def test_oversize_body_is_413(client: httpx.Client, server: ThreadServer, store: BlobStore) -> None:
    body = CPU + bytes(MAX_BODY + 1 - len(CPU))
    assert_error(client.post("/api/profile/svc", content=body), 413, "larger than the limit")
    exactly = client.post("/api/profile/svc", content=CPU + bytes(MAX_BODY - len(CPU)))
    assert_error(exactly, 400)  # at the limit it is read, then refused as a profile with trailing zeros
    assert keys(store) == []
    assert_still_serving(server)


def test_oversize_chunked_body_is_413(client: httpx.Client, server: ThreadServer, store: BlobStore) -> None:
    def pieces() -> Iterator[bytes]:
        for _ in range(MAX_BODY // 65536 + 2):
            yield bytes(65536)

    assert_error(client.post("/api/profile/svc", content=pieces()), 413, "larger than the limit")
    assert keys(store) == []
    assert_still_serving(server)


def test_oversize_declared_length_is_refused_before_the_body(server: ThreadServer, store: BlobStore) -> None:
    head = request_bytes("POST", "/api/profile/svc", headers={"Content-Length": str(10 << 30)})
    response = raw_request(server.port, head)  # only the headers: the server must not wait for 10 GiB
    assert response.status == 413
    assert response.headers["Connection"] == "close"
    assert keys(store) == []


def test_missing_length_is_411(server: ThreadServer, store: BlobStore) -> None:
    response = raw_request(server.port, request_bytes("POST", "/api/profile/svc"))
    assert response.status == 411
    assert "Content-Length" in response.json()["message"]
    assert keys(store) == []
    assert_still_serving(server)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Content-Length": "12abc"}, 400),
        ({"Content-Length": "-1"}, 400),
        ({"Transfer-Encoding": "gzip, chunked"}, 501),
        ({"Transfer-Encoding": "chunked", "Content-Length": "5"}, 400),
    ],
)
def test_bad_framing(server: ThreadServer, store: BlobStore, headers: dict[str, str], status: int) -> None:
    response = raw_request(server.port, request_bytes("POST", "/api/profile/svc", headers=headers) + b"hello")
    assert response.status == status
    assert response.json()["message"]
    assert keys(store) == []


def test_malformed_chunked_body_is_400(server: ThreadServer, store: BlobStore) -> None:
    head = request_bytes("POST", "/api/profile/svc", headers={"Transfer-Encoding": "chunked"})
    response = raw_request(server.port, head + b"zz\r\nhello\r\n0\r\n\r\n")
    assert response.status == 400
    assert "chunk" in response.json()["message"]
    assert keys(store) == []


def test_body_cut_short_stores_nothing(server: ThreadServer, store: BlobStore) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request_bytes("POST", "/api/profile/svc", headers={"Content-Length": str(len(CPU))}) + CPU[:100])
        sock.shutdown(socket.SHUT_WR)
        response = read_response(sock)
    assert response.status == 400
    assert keys(store) == []
    assert_still_serving(server)


def test_malformed_request_line_is_json_400(server: ThreadServer) -> None:
    response = raw_request(server.port, b"NONSENSE\r\n\r\n")
    assert response.status == 400
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["message"]
    assert_still_serving(server)


# --------------------------------------------------------------------------- app names and routes


BAD_APP_SEGMENTS = [
    *["..", "%2e%2e", "%2E%2E", ".", "Upper", "UPPER", "a" * 64],
    *["a%2Fb", "a_b", "a%20b", "%00", "caf%C3%A9"],
]


@pytest.mark.parametrize("segment", BAD_APP_SEGMENTS)
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "DELETE"])
def test_bad_app_name_is_400(
    server: ThreadServer, store: BlobStore, sink: RecordingSink, segment: str, method: str
) -> None:
    body = CPU if method == "POST" else None
    response = raw_request(server.port, request_bytes(method, f"/api/profile/{segment}", body))
    assert response.status == 400
    if method != "HEAD":
        assert "invalid app name" in response.json()["message"]
    assert keys(store) == []
    assert sink.events == []


def test_empty_app_name_is_400(server: ThreadServer, store: BlobStore) -> None:
    response = raw_request(server.port, request_bytes("POST", "/api/profile/", CPU))
    assert response.status == 400
    assert keys(store) == []


def test_longest_app_name_is_fine(client: httpx.Client, store: BlobStore) -> None:
    app = "a-9" * 21
    assert len(app) == MAX_APP_NAME
    response = client.post(f"/api/profile/{app}", content=CPU)
    assert response.status_code == 201
    assert keys(store)[0].startswith(f"{app}/staging/")


@pytest.mark.parametrize(
    "target",
    ["/", "/api", "/api/", "/api/profiles", "/api/profile/svc/extra", "/api/profile/../health", "/API/profile"],
)
def test_unknown_route_is_404(server: ThreadServer, target: str) -> None:
    response = raw_request(server.port, request_bytes("GET", target))
    assert response.status == 404
    assert response.json()["message"].startswith("no such endpoint")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/api/profile/svc", "DELETE, GET, HEAD, POST"),
        ("PATCH", "/api/profile/svc", "DELETE, GET, HEAD, POST"),
        ("POST", "/api/profile", "GET, HEAD"),
        ("DELETE", "/api/profile", "GET, HEAD"),
        ("POST", "/api/health", "GET, HEAD"),
        ("BREW", "/api/ready", "GET, HEAD"),
    ],
)
def test_wrong_method_is_405_with_allow(server: ThreadServer, method: str, path: str, allow: str) -> None:
    response = raw_request(server.port, request_bytes(method, path))
    assert response.status == 405
    assert response.headers["Allow"] == allow
    assert response.json()["message"]


# --------------------------------------------------------------------------- downloads


def test_download_404_when_nothing_merged(client: httpx.Client, store: BlobStore) -> None:
    client.post("/api/profile/svc", content=CPU)  # staged is not merged
    assert_error(client.get("/api/profile/svc"), 404, "no merged profile")
    assert_error(client.get("/api/profile/svc", params={"trim": "pgo"}), 404, "no merged profile")
    assert client.head("/api/profile/svc").status_code == 404


def test_download_with_etag_and_304(client: httpx.Client, store: BlobStore, cpu_profiles: list[Path]) -> None:
    data = cpu_profiles[0].read_bytes()
    put_merged(store, "svc", data)
    info = store.stat(merged_key("svc"))
    response = client.get("/api/profile/svc")
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["content-type"] == "application/octet-stream"
    etag = response.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert response.headers["last-modified"].endswith(" GMT")
    assert abs(httpx_date(response.headers["last-modified"]) - info.last_modified.timestamp()) < 1.5

    head = client.head("/api/profile/svc")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(data)) and head.headers["etag"] == etag

    for validator in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        cached = client.get("/api/profile/svc", headers={"If-None-Match": validator})
        assert cached.status_code == 304, validator
        assert cached.content == b"" and cached.headers["etag"] == etag
    assert client.get("/api/profile/svc", headers={"If-None-Match": '"other"'}).status_code == 200

    put_merged(store, "svc", cpu_profiles[1].read_bytes())  # a new merge: new etag
    fresh = client.get("/api/profile/svc", headers={"If-None-Match": etag})
    assert fresh.status_code == 200 and fresh.content == cpu_profiles[1].read_bytes()
    assert fresh.headers["etag"] != etag


class CountingStore:
    """A real store that counts the reads of whole merged profiles (``open``), to show what needs none."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store
        self.opened: list[str] = []

    def open(self, key: str) -> tuple[Any, Any]:
        if is_merged_key(key):
            self.opened.append(key)
        return self._store.open(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_etag_is_the_hash_of_the_bytes_served(
    client: httpx.Client, store: BlobStore, cpu_profiles: list[Path]
) -> None:
    data = cpu_profiles[0].read_bytes()
    put_merged(store, "svc", data)
    tag = f'"{hashlib.sha256(data).hexdigest()[:32]}"'
    assert client.get("/api/profile/svc").headers["etag"] == tag
    assert client.head("/api/profile/svc").headers["etag"] == tag
    trimmed = client.get("/api/profile/svc?trim=pgo")
    assert trimmed.headers["etag"] == f'"{hashlib.sha256(trimmed.content).hexdigest()[:32]}"' != tag
    assert client.head("/api/profile/svc?trim=pgo").headers["etag"] == trimmed.headers["etag"]
    # Another server, or this one restarted, tags the same bytes alike: a client's copy stays current.
    assert client.get("/api/profile/svc", headers={"If-None-Match": tag}).status_code == 304


def test_304_for_the_content_hash_needs_no_read_once_known(
    store: BlobStore, sink: RecordingSink, cpu_profiles: list[Path]
) -> None:
    counting = CountingStore(store)
    data = cpu_profiles[0].read_bytes()
    put_merged(store, "svc", data)
    have = content_etag(data)  # what a client computes from the file it has
    with thread_server(counting, sink) as running, httpx.Client(base_url=running.url) as c:  # type: ignore[arg-type]
        first = c.get("/api/profile/svc", headers={"If-None-Match": have})
        assert first.status_code == 304 and first.content == b"" and first.headers["etag"] == have
        assert len(counting.opened) == 1  # read once, to learn the tag of this version
        for _ in range(3):
            assert c.get("/api/profile/svc", headers={"If-None-Match": have}).status_code == 304
        head = c.head("/api/profile/svc")
        assert head.status_code == 200 and head.headers["etag"] == have
        assert head.headers["content-length"] == str(len(data))
        assert len(counting.opened) == 1
        full = c.get("/api/profile/svc")
        assert full.content == data and full.headers["etag"] == have

        newer = cpu_profiles[1].read_bytes()
        put_merged(store, "svc", newer)  # a new merge: 200 with the new bytes and their tag
        fresh = c.get("/api/profile/svc", headers={"If-None-Match": have})
        assert fresh.status_code == 200 and fresh.content == newer
        assert fresh.headers["etag"] == content_etag(newer)
        assert c.get("/api/profile/svc", headers={"If-None-Match": content_etag(newer)}).status_code == 304


def test_trimmed_download_304_on_the_hash_of_the_trimmed_bytes(
    client: httpx.Client, store: BlobStore, cpu_profiles: list[Path]
) -> None:
    put_merged(store, "svc", cpu_profiles[0].read_bytes())
    trimmed = client.get("/api/profile/svc?trim=pgo").content
    have = content_etag(trimmed)
    assert client.get("/api/profile/svc?trim=pgo", headers={"If-None-Match": have}).status_code == 304
    assert client.get("/api/profile/svc", headers={"If-None-Match": have}).status_code == 200  # not the full form
    put_merged(store, "svc", cpu_profiles[1].read_bytes())
    fresh = client.get("/api/profile/svc?trim=pgo", headers={"If-None-Match": have})
    assert fresh.status_code == 200 and fresh.headers["etag"] == content_etag(fresh.content) != have


def shifted(http_date: str, seconds: int) -> str:
    from email.utils import format_datetime, parsedate_to_datetime

    return format_datetime(parsedate_to_datetime(http_date) + timedelta(seconds=seconds), usegmt=True)


@pytest.mark.parametrize("trim", ["", "?trim=pgo"], ids=["full", "trimmed"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_if_modified_since(client: httpx.Client, store: BlobStore, trim: str, method: str) -> None:
    """RFC 9110 §13.1.3 and §13.2.2: 304 when Last-Modified is not later than the date; ignored
    when the date is not an HTTP-date, or when If-None-Match is present."""
    put_merged(store, "svc", cpu_profile())
    url = f"/api/profile/svc{trim}"
    plain = client.request(method, url)
    last_modified, etag = plain.headers["last-modified"], plain.headers["etag"]
    asctime = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(httpx_date(last_modified) + 1))
    cases = {
        "the same date": ({"If-Modified-Since": last_modified}, 304),
        "a later date": ({"If-Modified-Since": shifted(last_modified, 1)}, 304),
        "a later date, asctime form": ({"If-Modified-Since": asctime}, 304),
        "an earlier date": ({"If-Modified-Since": shifted(last_modified, -1)}, 200),
        "not a date": ({"If-Modified-Since": "yesterday"}, 200),
        "a numeric zone": ({"If-Modified-Since": shifted(last_modified, 1).replace("GMT", "+0000")}, 200),
        "a stale If-None-Match": ({"If-Modified-Since": shifted(last_modified, 1), "If-None-Match": '"old"'}, 200),
        "a current If-None-Match": ({"If-Modified-Since": shifted(last_modified, -1), "If-None-Match": etag}, 304),
    }
    for case, (headers, status) in cases.items():
        response = client.request(method, url, headers=headers)
        assert response.status_code == status, case
        assert response.headers["etag"] == etag and response.headers["last-modified"] == last_modified, case
        if status == 304 or method == "HEAD":
            assert response.content == b"", case
        else:
            assert response.content == client.get(url).content, case


def httpx_date(value: str) -> float:
    from email.utils import parsedate_to_datetime

    return parsedate_to_datetime(value).timestamp()


def test_trimmed_download_is_cached_per_version(
    client: httpx.Client, server: ThreadServer, store: BlobStore, cpu_profiles: list[Path]
) -> None:
    put_merged(store, "svc", cpu_profiles[0].read_bytes())
    expected = trim_for_pgo(decode(cpu_profiles[0].read_bytes()))
    response = client.get("/api/profile/svc", params={"trim": "pgo"})
    assert response.status_code == 200
    assert decode(response.content) == expected
    assert int(response.headers["content-length"]) == len(response.content) < cpu_profiles[0].stat().st_size
    etag = response.headers["etag"]
    assert etag != client.head("/api/profile/svc").headers["etag"]  # trimmed bytes differ: a tag of their own

    stats = server.api.trim_cache.stats
    for _ in range(3):
        again = client.get("/api/profile/svc", params={"trim": "pgo"})
        assert again.content == response.content and again.headers["etag"] == etag
    assert stats.computed == 1 and stats.hits == 3
    assert client.get("/api/profile/svc?trim=pgo", headers={"If-None-Match": etag}).status_code == 304
    head = client.head("/api/profile/svc?trim=pgo")
    assert head.status_code == 200 and head.headers["content-length"] == str(len(response.content))
    assert stats.computed == 1

    put_merged(store, "svc", cpu_profiles[1].read_bytes())
    newer = client.get("/api/profile/svc", params={"trim": "pgo"}, headers={"If-None-Match": etag})
    assert newer.status_code == 200 and newer.headers["etag"] != etag
    assert decode(newer.content) == trim_for_pgo(decode(cpu_profiles[1].read_bytes()))
    assert stats.computed == 2


def test_concurrent_first_trimmed_downloads_compute_once(
    server: ThreadServer, store: BlobStore, cpu_profiles: list[Path]
) -> None:
    put_merged(store, "svc", cpu_profiles[0].read_bytes())

    def download(_: int) -> bytes:
        return httpx.get(f"{server.url}/api/profile/svc?trim=pgo", timeout=30).content

    with ThreadPoolExecutor(8) as pool:
        results = set(pool.map(download, range(8)))
    assert len(results) == 1
    assert server.api.trim_cache.stats.computed == 1


def test_trim_of_a_profile_pgo_cannot_use_is_409(client: httpx.Client, store: BlobStore) -> None:
    put_merged(store, "heap", heap_profile())
    assert_error(client.get("/api/profile/heap?trim=pgo"), 409, "cannot be trimmed")
    assert client.get("/api/profile/heap").status_code == 200


def test_unknown_trim_is_400(client: httpx.Client, store: BlobStore) -> None:
    put_merged(store, "svc", cpu_profile())
    assert_error(client.get("/api/profile/svc?trim=all"), 400, "unknown trim")


def test_list_merged_profiles(client: httpx.Client, store: BlobStore) -> None:
    assert client.get("/api/profile").json() == {"profiles": []}
    put_merged(store, "beta", cpu_profile(scale=2))
    put_merged(store, "alpha", cpu_profile())
    client.post("/api/profile/gamma", content=CPU)  # staged only: not listed
    store.put(rejected_key("delta"), CPU)
    response = client.get("/api/profile")
    assert response.status_code == 200
    profiles = response.json()["profiles"]
    assert [p["key"] for p in profiles] == ["alpha", "beta"]
    for p in profiles:
        info = store.stat(merged_key(p["key"]))
        assert p["size"] == info.size
        assert RFC3339_UTC.fullmatch(p["lastModified"]), p["lastModified"]
    assert client.head("/api/profile").status_code == 200


# --------------------------------------------------------------------------- delete


def rejected_key(app: str) -> str:
    """Where the merge flow puts an upload it could not merge: the staged name, and why."""
    staged = new_staging_key(app)
    return f"{rejected_prefix(app)}{staged.rsplit('/', 1)[1]}.reason"


def merged_of(generation: int) -> bytes:
    """A merged profile as the merge flow writes it: its data are of ``generation``."""
    p = cpu_profile()
    p.comments = ["autopgo.batch=b1", f"autopgo.generation={generation}"]
    return encode(p)


@pytest.mark.parametrize("stored", ["merged", "staged", "rejected"])
def test_delete_hides_the_app_at_once_and_emits_event(
    client: httpx.Client, store: BlobStore, sink: RecordingSink, stored: str
) -> None:
    where = {"merged": merged_key, "staged": new_staging_key, "rejected": rejected_key}
    key = where[stored]("svc")
    store.put(key, CPU)
    put_merged(store, "svc-other", CPU)  # a prefix of another app's name is not "svc"
    response = client.delete("/api/profile/svc")
    assert response.status_code == 202
    assert response.json()["app"] == "svc"
    assert [(e.type, e.app) for e in sink.events] == [(DELETED, "svc")]
    assert sink.events[0].payload() == {"app": "svc"}
    assert read_generation(store, "svc").number == 1
    assert key in keys(store)  # removing it is a flow's job ...
    assert client.get("/api/profile/svc").status_code == 404  # ... but it is hidden at once
    assert client.head("/api/profile/svc").status_code == 404
    assert client.get("/api/profile/svc?trim=pgo").status_code == 404
    assert [p["key"] for p in client.get("/api/profile").json()["profiles"]] == ["svc-other"]
    assert_error(client.delete("/api/profile/svc"), 404, "nothing is stored")  # nothing left to delete
    assert client.get("/api/profile/svc-other").status_code == 200


def test_delete_404_when_nothing_stored(client: httpx.Client, store: BlobStore, sink: RecordingSink) -> None:
    store.put(merged_key("svc-other"), CPU)
    assert_error(client.delete("/api/profile/svc"), 404, "nothing is stored")
    assert sink.events == []
    assert keys(store) == [merged_key("svc-other")]


def test_a_delete_from_before_generations_still_hides_what_came_before_it(
    client: httpx.Client, store: BlobStore
) -> None:
    tombstone = 1_700_000_000_000_000_000  # written by a delete then, by its time
    store.put(f"{tombstone_prefix('svc')}{tombstone:020d}", b"")
    for app, since in (("svc", tombstone - 1), ("svc", tombstone)):
        p = cpu_profile()
        p.comments = ["autopgo.batch=old", f"autopgo.since={since}"]
        store.put(merged_key(app), encode(p))
        served = since >= tombstone
        assert client.get("/api/profile/svc").status_code == (200 if served else 404)
        assert client.head("/api/profile/svc").status_code == (200 if served else 404)
        assert [p["key"] for p in client.get("/api/profile").json()["profiles"]] == (["svc"] if served else [])
    assert client.delete("/api/profile/svc").status_code == 202  # a delete now hides it, whatever its time
    assert client.get("/api/profile/svc").status_code == 404
    assert client.get("/api/profile").json()["profiles"] == []


def test_data_after_a_deletion_is_served(client: httpx.Client, store: BlobStore, sink: RecordingSink) -> None:
    put_merged(store, "svc", CPU)
    assert client.delete("/api/profile/svc").status_code == 202
    assert client.post("/api/profile/svc", content=CPU).status_code == 201  # a new upload counts again
    assert client.delete("/api/profile/svc").status_code == 202
    assert client.get("/api/profile/svc").status_code == 404

    generation = read_generation(store, "svc").number
    store.put(merged_key("svc"), merged_of(generation))  # merged from uploads after it
    response = client.get("/api/profile/svc")
    assert response.status_code == 200 and response.content == merged_of(generation)
    assert client.head("/api/profile/svc").status_code == 200
    assert client.get("/api/profile/svc?trim=pgo").status_code == 200
    assert [p["key"] for p in client.get("/api/profile").json()["profiles"]] == ["svc"]


def test_delete_succeeds_when_the_event_is_lost(
    client: httpx.Client, store: BlobStore, sink: RecordingSink, caplog: pytest.LogCaptureFixture
) -> None:
    put_merged(store, "svc", CPU)
    sink.fail = EventError("prefect is down")
    with caplog.at_level(logging.WARNING, logger="autopgo.api"):
        assert client.delete("/api/profile/svc").status_code == 202
    assert "prefect is down" in caplog.text
    assert find_pending(store).deleted == {"svc"}  # the sweep finds the delete
    assert client.get("/api/profile/svc").status_code == 404


# --------------------------------------------------------------------------- events


def test_upload_succeeds_when_the_sink_fails(
    client: httpx.Client, store: BlobStore, sink: RecordingSink, caplog: pytest.LogCaptureFixture
) -> None:
    sink.fail = EventError("cannot reach Prefect")
    with caplog.at_level(logging.WARNING, logger="autopgo.api"):
        response = client.post("/api/profile/svc", content=CPU)
    assert response.status_code == 201
    key = response.json()["key"]
    assert keys(store) == [key] and store.get(key) == CPU
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and key in r.getMessage()]
    assert warnings and "cannot reach Prefect" in warnings[0].getMessage()

    sink.fail = RuntimeError("a bug in a sink")  # not even a sink's bug loses the upload
    assert client.post("/api/profile/svc", content=CPU).status_code == 201
    assert len(keys(store)) == 2


def test_prefect_sink_posts_prefect_events() -> None:
    with fake_prefect() as prefect:
        sink = PrefectEventSink(prefect.api_url, timeout=5, api_key="pnu_key")
        try:
            sink.check()
            sink.emit(Event(UPLOADED, "svc", "svc/staging/1-a.pb.gz"))
            sink.emit(Event(DELETED, "svc"))
        finally:
            sink.close()
    assert prefect.paths == ["/api/health", "/api/events", "/api/events"]
    assert all(h["Authorization"] == "Bearer pnu_key" for h in prefect.headers)
    assert all(h["Content-Type"] == "application/json" for h in prefect.headers)
    (uploaded,), (deleted,) = prefect.posted  # each POST is a JSON list of events
    assert uploaded["event"] == "profile.uploaded"
    assert uploaded["resource"] == {"prefect.resource.id": "autopgo.app.svc", "prefect.resource.name": "svc"}
    assert uploaded["payload"] == {"app": "svc", "profileKey": "svc/staging/1-a.pb.gz"}
    assert uploaded["related"] == []
    assert RFC3339_UTC.fullmatch(uploaded["occurred"])
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", uploaded["id"])
    assert deleted["event"] == "profile.deleted" and deleted["payload"] == {"app": "svc"}
    assert deleted["id"] != uploaded["id"]


def test_prefect_event_validates_against_prefects_own_schema() -> None:
    """The JSON we send parses as Prefect's server-side Event (prefect is imported here only)."""
    schemas = pytest.importorskip("prefect.server.events.schemas.events")
    event = schemas.Event.model_validate(prefect_event(Event(UPLOADED, "svc", "svc/staging/k.pb.gz")))
    assert event.event == "profile.uploaded"
    assert event.resource.id == "autopgo.app.svc"
    assert event.payload == {"app": "svc", "profileKey": "svc/staging/k.pb.gz"}


def test_prefect_sink_raises_on_a_closed_port() -> None:
    sink = PrefectEventSink(f"http://127.0.0.1:{closed_port()}/api", timeout=2)
    try:
        with pytest.raises(EventError, match="cannot send profile.uploaded to Prefect"):
            sink.emit(Event(UPLOADED, "svc", "k"))
        with pytest.raises(EventError, match="unreachable"):
            sink.check()
    finally:
        sink.close()


def test_prefect_sink_raises_on_an_error_status() -> None:
    with fake_prefect(status=500) as prefect:
        sink = PrefectEventSink(prefect.api_url, timeout=5)
        try:
            with pytest.raises(EventError, match="HTTP 500"):
                sink.emit(Event(UPLOADED, "svc", "k"))
        finally:
            sink.close()


def test_prefect_sink_basic_auth_string() -> None:
    with fake_prefect() as prefect:
        sink = PrefectEventSink(prefect.api_url, api_key="ignored", auth_string="admin:pass")
        try:
            sink.emit(Event(DELETED, "svc"))
        finally:
            sink.close()
    assert prefect.headers[0]["Authorization"] == "Basic YWRtaW46cGFzcw=="


def test_log_sink_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="autopgo.events"):
        LogEventSink().emit(Event(UPLOADED, "svc", "svc/staging/k"))
    assert 'profile.uploaded {"app": "svc", "profileKey": "svc/staging/k"}' in caplog.text


def test_events_config_choice() -> None:
    assert EventsConfig.choose(None, None, {}).kind == "log"
    assert EventsConfig.choose(None, None, {"PREFECT_API_URL": "http://p/api"}).kind == "prefect"
    assert EventsConfig.choose("log", None, {"PREFECT_API_URL": "http://p/api"}).kind == "log"
    assert EventsConfig.choose(None, None, {"AUTOPGO_EVENTS": "log", "PREFECT_API_URL": "http://p/api"}).kind == "log"
    chosen = EventsConfig.choose(None, "http://x/api", {"PREFECT_API_KEY": "k"})
    assert (chosen.kind, chosen.prefect_api_url, chosen.prefect_api_key) == ("prefect", "http://x/api", "k")
    with pytest.raises(ValueError, match="PREFECT_API_URL"):
        EventsConfig.choose("prefect", None, {})
    with pytest.raises(ValueError, match="unknown event sink"):
        EventsConfig.choose("kafka", None, {})
    assert isinstance(open_sink(EventsConfig()), LogEventSink)
    prefect = open_sink(EventsConfig("prefect", "http://127.0.0.1:1/api"))
    assert isinstance(prefect, PrefectEventSink)
    prefect.close()


# --------------------------------------------------------------------------- auth


def test_token_guards_uploads_and_deletes(store: BlobStore, sink: RecordingSink) -> None:
    with thread_server(store, sink, token=TOKEN) as running, httpx.Client(base_url=running.url) as c:
        wrong = ["Bearer wrong", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x", TOKEN]
        for headers in [{}, *({"Authorization": value} for value in wrong)]:
            response = c.post("/api/profile/svc", content=CPU, headers=headers)
            assert_error(response, 401, "token")
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert_error(c.delete("/api/profile/svc", headers=headers), 401, "token")
        assert keys(store) == [] and sink.events == []
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert c.post("/api/profile/svc", content=CPU, headers=good).status_code == 201
        assert c.delete("/api/profile/svc", headers=good).status_code == 202
        # reads need no token
        assert c.get("/api/profile").status_code == 200
        assert c.get("/api/profile/svc").status_code == 404
        assert c.get("/api/health").status_code == 200


def test_token_is_checked_before_the_body_is_read(store: BlobStore, sink: RecordingSink) -> None:
    with thread_server(store, sink, token=TOKEN) as running:
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
            # the client waits for 100 Continue, which never comes: the answer is final at once
            expect = {"Expect": "100-continue", "Content-Length": str(10 << 20)}
            head = request_bytes("POST", "/api/profile/svc", headers=expect)
            sock.sendall(head)
            response = read_response(sock)
        assert response.status == 401
    assert keys(store) == []


# --------------------------------------------------------------------------- health


def test_health_and_ready(client: httpx.Client, sink: RecordingSink) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "dependencies": [{"name": "blobStore", "status": "ok"}, {"name": "events", "status": "ok"}],
        "targets": [],
    }
    assert client.get("/api/ready").json() == {"status": "ready"}

    sink.down = EventError("Prefect at http://p/api is unreachable")
    response = client.get("/api/health")
    assert_error(response, 503, "events")
    assert response.json()["dependencies"][1] == {
        "name": "events",
        "status": "down",
        "message": "Prefect at http://p/api is unreachable",
    }
    assert client.get("/api/ready").status_code == 200  # readiness is about this process only


class BrokenStore:
    """A store whose every call fails, as an unreachable S3 would."""

    def __getattr__(self, name: str) -> object:
        def fail(*args: object, **kwargs: object) -> None:
            raise BlobStoreError("s3://bucket: connection refused")

        return fail

    def close(self) -> None:
        return None


def test_store_down_is_503(sink: RecordingSink) -> None:
    broken: BlobStore = BrokenStore()  # type: ignore[assignment]
    with thread_server(broken, sink) as running, httpx.Client(base_url=running.url) as c:
        health = c.get("/api/health")
        assert_error(health, 503, "blobStore")
        assert health.json()["dependencies"][0]["status"] == "down"
        assert_error(c.post("/api/profile/svc", content=CPU), 503, "blob store unavailable")
        assert_error(c.get("/api/profile/svc"), 503, "blob store unavailable")
        assert_error(c.get("/api/profile"), 503, "blob store unavailable")
        assert_error(c.delete("/api/profile/svc"), 503, "blob store unavailable")
    assert sink.events == []


def test_domain_errors_become_statuses_in_one_place(caplog: pytest.LogCaptureFixture) -> None:
    """api_error: a bad profile is the client's 400 (413 when too large), a failing store or staging
    the server's 503, any other domain error a bug (500, logged with its traceback); ApiErrors pass."""
    cases = [
        (ProfileTooLargeError("larger than 10 bytes decompressed"), 413, "larger than 10 bytes decompressed"),
        (PgoUnusableError("no CPU samples"), 400, "profile cannot be used for Go's PGO: no CPU samples"),
        (ProfileError("empty profile"), 400, "bad profile: empty profile"),
        (StagingError("could not stage"), 503, "could not stage"),
        (BlobStoreError("s3://bucket: refused"), 503, "blob store unavailable: s3://bucket: refused"),
        (PreconditionFailedError("k changed"), 500, "internal server error"),
        (ApiError(418, "teapot"), 418, "teapot"),
    ]
    with caplog.at_level(logging.ERROR, logger="autopgo.api"):
        for exc, status, message in cases:
            answer = api_error(exc)
            assert (answer.status, answer.message) == (status, message), exc
    assert [r.exc_info is not None for r in caplog.records] == [False, True]  # the store's reason, then the bug


def test_ready_is_503_while_draining(client: httpx.Client, server: ThreadServer) -> None:
    server.api.stopping.set()
    assert_error(client.get("/api/ready"), 503, "shutting down")


# --------------------------------------------------------------------------- concurrency


def test_200_concurrent_uploads_land_under_distinct_keys(
    server: ThreadServer, store: BlobStore, sink: RecordingSink, cpu_profiles: list[Path]
) -> None:
    datas = [p.read_bytes() for p in cpu_profiles]

    def upload(worker: int) -> list[str]:
        out = []
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for i in range(worker, 200, 16):
                response = c.post(f"/api/profile/app{i % 3}", content=datas[i % len(datas)])
                assert response.status_code == 201, response.text
                out.append(response.json()["key"])
        return out

    with ThreadPoolExecutor(16) as pool:
        uploaded = [key for keys_ in pool.map(upload, range(16)) for key in keys_]
    assert len(uploaded) == len(set(uploaded)) == 200
    assert sorted(uploaded) == keys(store)
    assert sorted(e.profile_key or "" for e in sink.events) == sorted(uploaded)


# --------------------------------------------------------------------------- the command


def test_server_command_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    with fake_prefect() as prefect:
        args = ["--blob-store", f"file://{tmp_path}/blobs", "--events", "prefect", "--prefect-api-url", prefect.api_url]
        with ServerProcess(args) as proc:
            assert proc.url.startswith("http://127.0.0.1:")
            response = httpx.post(f"{proc.url}/api/profile/svc", content=CPU)
            assert response.status_code == 201
            assert httpx.get(f"{proc.url}/api/health").status_code == 200
            proc.terminate()
            assert proc.wait(15) == 0
            log = proc.stderr()
    assert [event["payload"]["profileKey"] for (event,) in prefect.posted] == [response.json()["key"]]
    assert '"POST /api/profile/svc" 201' in log  # the access log
    assert (tmp_path / "blobs").is_dir()


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_server_logs_no_http_client_requests_unless_debug(tmp_path: Path, level: str) -> None:
    """httpx logs every request it sends at INFO: an event per upload would fill the log."""
    with fake_prefect() as prefect:
        args = ["--blob-store", f"file://{tmp_path}/blobs", "--events", "prefect", "--prefect-api-url", prefect.api_url]
        with ServerProcess([*args, "--log-level", level]) as proc:
            for _ in range(3):
                assert httpx.post(f"{proc.url}/api/profile/svc", content=CPU).status_code == 201
            proc.terminate()
            assert proc.wait(15) == 0
            log = proc.stderr()
    assert len(prefect.posted) == 3
    assert '"POST /api/profile/svc" 201' in log  # the server's own access log stays
    requests = [line for line in log.splitlines() if "HTTP Request: POST" in line]
    assert len(requests) == (3 if level == "DEBUG" else 0), log


@pytest.mark.parametrize("to", ["process", "group"])
def test_sigterm_lets_an_inflight_upload_finish(tmp_path: Path, to: str) -> None:
    """SIGTERM to the server, or to its whole process group (its validation workers too)."""
    store_url = f"file://{tmp_path}/blobs"
    with ServerProcess(["--blob-store", store_url, "--events", "log", "--workers", "1"], new_session=True) as proc:
        with socket.create_connection(("127.0.0.1", proc.port), timeout=30) as sock:
            sock.sendall(request_bytes("POST", "/api/profile/svc", headers={"Content-Length": str(len(CPU))}))
            sock.sendall(CPU[:50])
            # an idle keep-alive connection must not hold the shutdown up
            idle = httpx.Client(base_url=proc.url)
            assert idle.get("/api/ready").status_code == 200
            time.sleep(0.3)
            proc.terminate(group=to == "group")
            for i in range(50, len(CPU), 200):  # the rest of the body, slowly, after SIGTERM
                time.sleep(0.02)
                sock.sendall(CPU[i : i + 200])
            response = read_response(sock)
            idle.close()
        assert response.status == 201, response.body
        assert response.headers["Connection"] == "close"
        assert proc.wait(15) == 0
        key = response.json()["key"]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proc.port), timeout=2).close()
    stored = open_store(store_url)
    assert keys(stored) == [key] and stored.get(key) == CPU
    stored.close()


def test_server_command_errors_are_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AUTOPGO_"))}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = [
            (["--port", str(port), "--blob-store", str(tmp_path)], f"cannot listen on 127.0.0.1:{port}"),
            (["--port", "0", "--blob-store", "ftp://example.com/x"], "unknown scheme"),
            (["--port", "0", "--blob-store", "file://host/x"], "invalid blob store URL"),
            (["--port", "0", "--blob-store", "file:relative"], "invalid blob store URL"),
            (["--port", "0", "--blob-store", str(tmp_path), "--max-body", "lots"], "--max-body: expected a size"),
            (["--port", "0", "--blob-store", str(tmp_path), "--events", "prefect"], "PREFECT_API_URL"),
        ]
        for args, expected in cases:
            result = subprocess.run(
                [str(AUTOPGO), "server", "--host", "127.0.0.1", *args],
                capture_output=True,
                text=True,
                timeout=30,
                env=env,
            )
            assert result.returncode == 1, (args, result.stderr)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("autopgo server: "), (args, result.stderr)
            assert expected in lines[0], (args, lines[0])
            assert result.stdout == ""


def test_server_size_errors_name_the_flag_or_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AUTOPGO_"))}
    cases = [
        (["--max-body", "0"], {}, "autopgo server: --max-body: must be more than 0 bytes, not '0'"),
        (["--max-decompressed", "1.5"], {}, "autopgo server: --max-decompressed: 1.5 is not a whole number of bytes"),
        ([], {"AUTOPGO_MAX_BODY": "lots"}, "autopgo server: AUTOPGO_MAX_BODY: expected a size such as 1048576, 64MiB or 1G, not 'lots'"),
        ([], {"AUTOPGO_MAX_DECOMPRESSED": "-1M"}, "autopgo server: AUTOPGO_MAX_DECOMPRESSED: must not be negative, not '-1M'"),
        ([], {"AUTOPGO_EVENTS_TIMEOUT": "soon"}, "autopgo server: AUTOPGO_EVENTS_TIMEOUT: expected a duration such as 90s, 5m or 1h30m, not 'soon'"),
    ]
    for args, extra, expected in cases:
        result = subprocess.run(
            [str(AUTOPGO), "server", "--port", "0", "--blob-store", str(tmp_path), *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={**env, **extra},
        )
        assert (result.returncode, result.stdout, result.stderr) == (1, "", expected + "\n"), (args, extra)


def test_server_command_relative_store_and_sizes_with_units(tmp_path: Path) -> None:
    """``file://./blobs`` is the current folder's; ``--max-body 2KB`` and ``AUTOPGO_MAX_DECOMPRESSED=1.5KiB``
    are 2048 and 1536 bytes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AUTOPGO_"))}
    env["AUTOPGO_MAX_DECOMPRESSED"] = "1.5KiB"
    args = ["--blob-store", "file://./blobs", "--events", "log", "--workers", "0", "--max-body", "2KB"]
    raw = encode_raw(cpu_profile())
    assert len(CPU) < len(raw) <= 1536
    with ServerProcess(args, env=env, cwd=tmp_path) as proc:
        uploaded = httpx.post(f"{proc.url}/api/profile/svc", content=CPU)
        assert uploaded.status_code == 201, uploaded.text
        assert_error(httpx.post(f"{proc.url}/api/profile/svc", content=CPU + bytes(2049 - len(CPU))), 413)
        bomb = gzip.compress(raw + bytes(1537 - len(raw)))
        assert_error(httpx.post(f"{proc.url}/api/profile/svc", content=bomb), 413, "larger than the limit")
    stored = open_store(str(tmp_path / "blobs"))
    assert keys(stored) == [uploaded.json()["key"]]
    stored.close()


def test_events_timeout_is_seconds_or_a_duration() -> None:
    assert EventsConfig.choose(None, None, {}).timeout == 5.0
    assert EventsConfig.choose(None, None, {"AUTOPGO_EVENTS_TIMEOUT": "2.5"}).timeout == 2.5
    assert EventsConfig.choose(None, None, {"AUTOPGO_EVENTS_TIMEOUT": "1500ms"}).timeout == 1.5
    assert EventsConfig.choose(None, None, {"AUTOPGO_EVENTS_TIMEOUT": "1m"}).timeout == 60.0
    for bad in ("0", "-1", "soon", "5 s"):
        with pytest.raises(ValueError, match="^AUTOPGO_EVENTS_TIMEOUT: "):
            EventsConfig.choose(None, None, {"AUTOPGO_EVENTS_TIMEOUT": bad})


def test_every_response_is_json_with_a_message(server: ThreadServer) -> None:
    for request in (
        request_bytes("GET", "/nope"),
        request_bytes("PUT", "/api/health"),
        request_bytes("POST", "/api/profile/svc", b"junk"),
        request_bytes("POST", "/api/profile/Bad", b"junk"),
        b"GET /api/health HTTP/9.9\r\n\r\n",
    ):
        response = raw_request(server.port, request)
        assert response.status >= 400
        assert response.headers["Content-Type"] == "application/json"
        assert set(json.loads(response.body)) == {"message"}


def _pgo_variants() -> dict[str, Profile]:
    base = cpu_profile()
    only_root_has_start_line = cpu_profile()
    only_root_has_start_line.functions = [
        f._replace(start_line=10 if f.name == "main.main" else 0) for f in only_root_has_start_line.functions
    ]
    deep = cpu_profile(start_line=0)  # start lines only below the caller: the compiler never looks there
    deep.samples = [Sample((1, 2, 3), (1, 1))]
    deep.functions = [f._replace(start_line=7) if f.name == "runtime.mallocgc" else f for f in deep.functions]
    negative = cpu_profile()
    negative.samples = [*negative.samples, Sample((3,), (-1, -1))]
    zero_weight = cpu_profile(start_line=0)
    zero_weight.samples = [Sample(s.location_ids, (0, 0)) for s in zero_weight.samples]
    no_lines = cpu_profile()
    no_lines.locations = [loc._replace(lines=()) for loc in no_lines.locations]
    return {
        "cpu": base,
        "no start_line": cpu_profile(start_line=0),
        "heap": heap_profile(),
        "only the caller has a start_line": only_root_has_start_line,
        "start_line beyond the caller": deep,
        "negative weight": negative,
        "all weights zero": zero_weight,
        "no samples": Profile(sample_types=[ValueType("cpu", "nanoseconds")]),
        "locations without lines": no_lines,
    }


@pytest.mark.parametrize("case", list(_pgo_variants()))
def test_pgo_usable_check_agrees_with_pgo_edges(case: str) -> None:
    from profiling.pprof import check_pgo_usable, from_profile, pgo_edges

    profile = _pgo_variants()[case]
    try:
        pgo_edges(profile)
        expected = None
    except ProfileError as exc:
        expected = str(exc)
    try:
        check_pgo_usable(from_profile(profile))
        got = None
    except ProfileError as exc:
        got = str(exc)
    assert got == expected


def test_pgo_usable_check_accepts_real_profiles(cpu_profiles: list[Path]) -> None:
    from profiling.pprof import check_pgo_usable, decode_tables

    for path in cpu_profiles:
        check_pgo_usable(decode_tables(path.read_bytes()))


def test_validation_in_worker_processes(store: BlobStore, sink: RecordingSink, cpu_profiles: list[Path]) -> None:
    limits = Limits(MAX_BODY, MAX_DECOMPRESSED)
    with thread_server(store, sink, limits=limits, workers=2) as running, httpx.Client(base_url=running.url) as c:
        checker = running.api.checker
        assert len(checker.worker_pids()) == 2
        for path in cpu_profiles:
            assert c.post("/api/profile/svc", content=path.read_bytes()).status_code == 201
        for case in ("garbage", "truncated gzip", "heap profile", "no start_line"):
            data, expected = BAD_PROFILES[case]
            assert_error(c.post("/api/profile/svc", content=data), 400, expected)
        assert_error(c.post("/api/profile/svc", content=TOO_LARGE_PROFILES["gzip bomb"]), 413, "larger than the limit")
        assert len(keys(store)) == len(cpu_profiles)

        os.kill(checker.worker_pids()[0], signal.SIGKILL)  # a worker dies (say, out of memory)
        statuses = [c.post("/api/profile/svc", content=CPU).status_code for _ in range(3)]
        assert statuses == [201, 201, 201]  # a fresh pool takes over
        assert len(checker.worker_pids()) == 2
    assert running.api.checker.worker_pids() == []


def test_no_free_worker_is_a_503_not_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    checker = workers.ProfileChecker(max_decompressed=MAX_DECOMPRESSED, require_pgo=True, workers=1)
    try:
        checker.check(CPU)
        busy = checker._idle.get()  # as if its request never ended
        monkeypatch.setattr(workers, "_WAIT_FOR_WORKER", 0.2)
        with pytest.raises(ApiError) as info:
            checker.check(CPU)
        assert info.value.status == 503 and "no validation worker is free" in info.value.message
        checker._idle.put(busy)
        checker.check(CPU)
    finally:
        checker.close()
    assert checker.worker_pids() == []


def test_worker_loop_answers_each_upload(monkeypatch: pytest.MonkeyPatch) -> None:
    ours, theirs = Pipe()
    loop = threading.Thread(target=workers.serve, args=(theirs, MAX_DECOMPRESSED, True))
    loop.start()
    ours.send_bytes(CPU)
    assert ours.recv_bytes() == b""
    ours.send_bytes(b"garbage")
    assert ours.recv_bytes().decode().startswith("400 bad profile: not a pprof profile")
    ours.send_bytes(encode(heap_profile()))
    assert ours.recv_bytes().decode().startswith("400 profile cannot be used for Go's PGO: not a CPU profile")
    ours.send_bytes(TOO_LARGE_PROFILES["gzip bomb"])
    too_large = f"413 decompressed profile is larger than the limit of {MAX_DECOMPRESSED} bytes"
    assert ours.recv_bytes().decode() == too_large

    def broken(*args: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(workers, "profile_problem", broken)
    ours.send_bytes(CPU)
    assert ours.recv_bytes() == b"\0KeyError: 'a bug'"  # the worker lives on
    ours.close()
    loop.join(5)
    assert not loop.is_alive()  # EOF ends it


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "autopgo.api.access"]


def test_access_log_line(client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="autopgo.api.access"):
        client.get("/api/profile/svc?trim=pgo")
        client.post("/api/profile/svc", content=CPU)
        deadline = time.monotonic() + 5
        while len(access_lines(caplog)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # the server logs a request just after answering it
    lines = access_lines(caplog)
    assert re.fullmatch(r'127\.0\.0\.1 "GET /api/profile/svc\?trim=pgo" 404 \d+ \d+\.\dms', lines[0]), lines
    assert re.fullmatch(r'127\.0\.0\.1 "POST /api/profile/svc" 201 \d+ \d+\.\dms', lines[1]), lines


def test_labels_of_a_merged_profile_are_read_once_per_version(
    client: httpx.Client, server: ThreadServer, store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import api.visibility

    calls = []
    real = api.visibility.labels_of

    def counting(data: bytes, max_decompressed: int) -> Labels:
        calls.append(len(data))
        return real(data, max_decompressed)

    monkeypatch.setattr(api.visibility, "labels_of", counting)
    put_merged(store, "svc", CPU)
    assert client.delete("/api/profile/svc").status_code == 202
    store.put(merged_key("svc"), merged_of(1))
    for _ in range(3):
        assert client.get("/api/profile/svc").content == merged_of(1)
        assert client.head("/api/profile/svc").status_code == 200
    assert len(calls) == 1
