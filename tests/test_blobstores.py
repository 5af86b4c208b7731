"""One contract for every blob store: the filesystem store in tmp_path, and the
S3 store against a real SeaweedFS server on 127.0.0.1 (one per session, a
fresh key prefix per test). Then what only one of them has: path safety,
hidden temp/lock files and atomic replaces on disk; unreachable servers, bad
credentials and prefixes in S3; and ``open_store`` URL parsing."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from seaweed import SeaweedFS, seaweedfs  # noqa: F401  (seaweedfs is a session fixture)

from profiling.errors import BlobNotFoundError, BlobStoreError, PreconditionFailedError
from profiling.storage import (
    BlobInfo,
    BlobStore,
    FileStore,
    S3Store,
    StoreLocation,
    StoreURLError,
    open_store,
    parse_store_url,
)

ROOT = Path(__file__).resolve().parent.parent
S3_PAGE_SIZE = 7  # small, so listings in these tests span several pages


@pytest.fixture(scope="session")
def boto_session() -> object:
    """One boto3 session for the test stores: its loaded S3 model makes each client quick to build."""
    import boto3

    return boto3.session.Session()


def s3_store(server: SeaweedFS, prefix: str, session: object = None, **overrides: object) -> S3Store:
    options: dict[str, object] = dict(
        session=session,
        endpoint_url=server.endpoint,
        region=server.region,
        page_size=S3_PAGE_SIZE,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        connect_timeout=2.0,
        read_timeout=20.0,
        max_attempts=2,
    )
    options.update(overrides)
    return S3Store(server.bucket, prefix, **options)  # type: ignore[arg-type]


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.slow)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    """Each contract test runs once per store, each time on an empty store."""
    if request.param == "file":
        blob_store: BlobStore = FileStore(tmp_path / "store")
    else:
        server: SeaweedFS = request.getfixturevalue("seaweedfs")
        session = request.getfixturevalue("boto_session")
        blob_store = s3_store(server, f"t-{uuid.uuid4().hex[:12]}", session)
    try:
        yield blob_store
    finally:
        blob_store.close()


def keys(store: BlobStore, prefix: str = "") -> list[str]:
    return [info.key for info in store.list(prefix)]


def assert_same_object(a: BlobInfo, b: BlobInfo) -> None:
    """Same key, size and etag; times equal to within S3's one-second resolution."""
    assert (a.key, a.size, a.etag) == (b.key, b.size, b.etag)
    assert abs(a.last_modified - b.last_modified) <= timedelta(seconds=2)


def assert_utc(moment: datetime) -> None:
    assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=5)


# ------------------------------------------------------------------ the contract


def test_put_get_stat_open_round_trip(store: BlobStore) -> None:
    data = os.urandom(10_000)
    info = store.put("shop/default.pgo", data)
    assert info.key == "shop/default.pgo" and info.size == len(data) and info.etag
    assert '"' not in info.etag
    assert_utc(info.last_modified)
    assert store.get("shop/default.pgo") == data
    assert_same_object(store.stat("shop/default.pgo"), info)
    opened, stream = store.open("shop/default.pgo")
    with stream:
        assert stream.read(100) == data[:100]
        assert stream.read() == data[100:]
    assert_same_object(opened, info)
    [listed] = store.list()
    assert_same_object(listed, info)


def test_put_from_file_objects_and_empty_blobs(store: BlobStore) -> None:
    big = os.urandom(3 << 20)

    class Unseekable(io.RawIOBase):
        """A pipe-like stream: readable once, no seek, no length."""

        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
            chunk = self._data.read(min(len(buffer), 65536))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    assert store.put("a/seekable", io.BytesIO(big)).size == len(big)
    assert store.put("a/stream", io.BufferedReader(Unseekable(big))).size == len(big)
    source = io.BytesIO(b"skip:rest")
    source.seek(5)
    assert store.put("a/from-position", source).size == 4
    assert store.put("a/empty", b"").size == 0
    assert store.get("a/seekable") == big and store.get("a/stream") == big
    assert store.get("a/from-position") == b"rest"
    assert store.get("a/empty") == b""
    info, stream = store.open("a/stream")
    with stream:
        chunks = iter(lambda: stream.read(1 << 16), b"")
        assert b"".join(chunks) == big and info.size == len(big)


def test_replacing_changes_content_and_etag(store: BlobStore) -> None:
    etags = [store.put("k", f"version {n}".encode()).etag for n in range(5)]
    assert len(set(etags)) == 5
    assert store.get("k") == b"version 4"
    assert store.stat("k").etag == etags[-1]


@pytest.mark.parametrize("operation", ["get", "stat", "open"])
def test_missing_keys_raise_not_found(store: BlobStore, operation: str) -> None:
    store.put("present/x", b"x")
    for key in ("absent", "present/y", "present/x/deeper", "present"):
        with pytest.raises(BlobNotFoundError) as caught:
            getattr(store, operation)(key)
        assert caught.value.key == key


def test_delete(store: BlobStore) -> None:
    assert store.delete("never") is False
    store.put("d/one", b"1")
    store.put("d/two", b"2")
    assert store.delete("d/one") is True
    assert store.delete("d/one") is False
    with pytest.raises(BlobNotFoundError):
        store.get("d/one")
    assert keys(store) == ["d/two"]
    assert store.delete("d/two") is True
    assert keys(store) == []
    store.put("d/one", b"again")  # a deleted key can be used again
    assert store.get("d/one") == b"again"


def test_list_by_prefix_in_key_order_with_sizes(store: BlobStore) -> None:
    contents = {
        "shop/staging/00000000000000000002-b.pb.gz": b"22",
        "shop/default.pgo": b"merged",
        "shop/staging/00000000000000000001-a.pb.gz": b"1",
        "shop/rejected/00000000000000000000-c.pb.gz": b"333",
        "shop2/default.pgo": b"4444",
        "cart/default.pgo": b"55555",
        "%2e%2e": b"literal",
        "odd/sp ace+plus=eq&amp": b"x",
        "odd/ünïcode": b"u",
    }
    for key, data in contents.items():
        store.put(key, data)
    everything = list(store.list())
    assert [info.key for info in everything] == sorted(contents)
    assert {info.key: info.size for info in everything} == {k: len(v) for k, v in contents.items()}
    assert keys(store, "shop/") == sorted(k for k in contents if k.startswith("shop/"))
    assert keys(store, "shop") == sorted(k for k in contents if k.startswith("shop"))
    assert keys(store, "shop/staging/") == [
        "shop/staging/00000000000000000001-a.pb.gz",
        "shop/staging/00000000000000000002-b.pb.gz",
    ]
    assert keys(store, "shop/sta") == keys(store, "shop/staging/")
    assert keys(store, "shop/default.pgo") == ["shop/default.pgo"]
    assert keys(store, "nothing/") == [] and keys(store, "sh0") == []
    for info in everything:
        assert_utc(info.last_modified)
        assert info.etag == store.stat(info.key).etag
        assert store.get(info.key) == contents[info.key]


def test_list_orders_keys_as_strings_across_separators(store: BlobStore) -> None:
    """'-' and '.' sort before '/': p/a-c < p/a.b < p/a/b < p/a0, as S3 orders keys.

    SeaweedFS lists in directory-walk order (p/a/b before p/a-c), which the
    protocol allows: callers that need a strict order sort.
    """
    wanted = ["p/a!", "p/a-c", "p/a.b", "p/a/b", "p/a/c/d", "p/a0", "p/b"]
    for key in reversed(wanted):
        store.put(key, b".")
    listed = keys(store)
    assert (sorted(listed) if isinstance(store, S3Store) else listed) == wanted


def test_listing_paginates(store: BlobStore) -> None:
    names = [f"many/{n:04d}" for n in range(3 * S3_PAGE_SIZE + 4)]
    for name in reversed(names):
        store.put(name, name.encode())
    store.put("manx", b"not under many/")
    requests: list[str] = []
    if isinstance(store, S3Store):
        store._client.meta.events.register(
            "before-call.s3.ListObjectsV2", lambda **kwargs: requests.append("list")
        )
    listed = list(store.list("many/"))
    assert [info.key for info in listed] == names
    assert [info.size for info in listed] == [len(n) for n in names]
    if isinstance(store, S3Store):
        assert len(requests) == -(-len(names) // S3_PAGE_SIZE)  # one request per page


def test_create_only(store: BlobStore) -> None:
    first = store.put("once", b"first", if_none_match=True)
    with pytest.raises(PreconditionFailedError) as caught:
        store.put("once", b"second", if_none_match=True)
    assert caught.value.key == "once"
    assert store.get("once") == b"first" and store.stat("once").etag == first.etag
    store.delete("once")
    assert store.put("once", b"third", if_none_match=True).size == 5


def test_replace_if_unchanged(store: BlobStore) -> None:
    v1 = store.put("cas", b"v1")
    v2 = store.put("cas", b"v2", if_match=v1.etag)
    assert v2.etag != v1.etag and store.get("cas") == b"v2"
    with pytest.raises(PreconditionFailedError):
        store.put("cas", b"stale", if_match=v1.etag)
    assert store.get("cas") == b"v2"
    v3 = store.put("cas", b"v3", if_match=f'"{v2.etag}"')  # a quoted etag is the same etag
    assert store.stat("cas").etag == v3.etag
    with pytest.raises(PreconditionFailedError):
        store.put("missing", b"x", if_match=v3.etag)
    with pytest.raises(BlobNotFoundError):
        store.stat("missing")
    with pytest.raises(ValueError):
        store.put("cas", b"both", if_match=v3.etag, if_none_match=True)


BAD_KEYS = ["", "/abs", "..", "a/../../x", "a/./b", "a//b", "a/", "a\x00b", "a\\b", ".autopgo-tmp-x", "x" * 1025]


def short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 20 else f"{text[:12]}...({len(text)})"


@pytest.mark.parametrize("key", BAD_KEYS, ids=short_repr)
def test_invalid_keys_are_value_errors(store: BlobStore, key: str) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.put(key, b"x"),
        lambda: store.get(key),
        lambda: store.stat(key),
        lambda: store.open(key),
        lambda: store.delete(key),
    ]
    for call in calls:
        with pytest.raises(ValueError) as caught:
            call()
        assert "\n" not in str(caught.value)
    assert keys(store) == []


@pytest.mark.parametrize("prefix", ["/abs", "../", "a/../", "a//", "a\x00"], ids=repr)
def test_invalid_list_prefixes_are_value_errors(store: BlobStore, prefix: str) -> None:
    with pytest.raises(ValueError):
        list(store.list(prefix))


def test_concurrent_create_only_has_exactly_one_winner(store: BlobStore) -> None:
    writers = 16
    barrier = threading.Barrier(writers)
    outcomes: dict[int, BlobInfo | Exception] = {}

    def write(n: int) -> None:
        barrier.wait()
        try:
            outcomes[n] = store.put("race/once", f"writer {n}".encode(), if_none_match=True)
        except Exception as exc:  # noqa: BLE001 - recorded and checked below
            outcomes[n] = exc

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(outcomes) == writers
    winners = {n: info for n, info in outcomes.items() if isinstance(info, BlobInfo)}
    losers = [exc for exc in outcomes.values() if not isinstance(exc, BlobInfo)]
    assert len(winners) == 1, outcomes
    assert all(isinstance(exc, PreconditionFailedError) for exc in losers), losers
    [(n, info)] = winners.items()
    assert store.get("race/once") == f"writer {n}".encode()
    assert store.stat("race/once").etag == info.etag


def increment(store: BlobStore, key: str, times: int) -> int:
    """Add ``times`` to the counter at ``key`` by compare-and-swap; returns the conflicts seen."""
    conflicts = 0
    for _ in range(times):
        while True:
            info, stream = store.open(key)
            with stream:
                value = int(stream.read())
            try:
                store.put(key, str(value + 1).encode(), if_match=info.etag)
                break
            except PreconditionFailedError:
                conflicts += 1
    return conflicts


def test_compare_and_swap_counter_loses_no_update(store: BlobStore) -> None:
    store.put("counter", b"0")
    conflicts: list[int] = []
    threads = [
        threading.Thread(target=lambda: conflicts.append(increment(store, "counter", 10))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(conflicts) == 8
    assert store.get("counter") == b"80"


# ------------------------------------------------------------------ filesystem only


ESCAPES = ["..", "../x", "a/../../x", "/abs", "/etc/passwd", "a\x00b", "a//b", "a/", "./a", "a\\..\\..\\x"]


@pytest.mark.parametrize("key", ESCAPES, ids=repr)
def test_file_keys_cannot_escape_the_root(tmp_path: Path, key: str) -> None:
    root = tmp_path / "outer" / "root"
    store = FileStore(root)
    store.put("inside", b"ok")
    with pytest.raises(ValueError):
        store.put(key, b"escaped")
    with pytest.raises(ValueError):
        store.delete(key)
    everything = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert [p for p in everything if not p.startswith(f"outer{os.sep}root{os.sep}")] == []
    assert keys(store) == ["inside"]


def test_file_odd_names_are_literal(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "root")
    store.put("%2e%2e", b"dots")
    store.put("a/%2e%2e/b", b"nested")
    assert (tmp_path / "root" / "%2e%2e").read_bytes() == b"dots"
    assert (tmp_path / "root" / "a" / "%2e%2e" / "b").read_bytes() == b"nested"
    assert keys(store) == ["%2e%2e", "a/%2e%2e/b"]


def test_file_temp_and_lock_files_never_listed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = FileStore(root)
    store.put("app/x", b"1", if_none_match=True)
    store.put("app/x", b"2", if_match=store.stat("app/x").etag)
    store.put("y", b"3")
    # What a crash mid-write leaves behind, at the top and further down.
    (root / ".autopgo-tmp-deadbeef").write_bytes(b"partial")
    (root / "app" / ".autopgo-tmp-cafef00d").write_bytes(b"partial")
    assert (root / ".autopgo-locks").is_dir() and any((root / ".autopgo-locks").iterdir())
    assert keys(store) == ["app/x", "y"]
    assert keys(store, ".autopgo") == [] and keys(store, "app/.autopgo") == []
    with pytest.raises(ValueError):
        store.get(".autopgo-locks/000.lock")


def test_file_etag_changes_even_for_identical_content(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "root")
    etags = {store.put("k", b"same bytes").etag for _ in range(50)}
    assert len(etags) == 50


def test_file_readers_never_see_a_partial_blob(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "root")
    versions = [bytes([n]) * ((4 << 20) + n * 4096) for n in range(4)]
    store.put("big", versions[0])
    stop = threading.Event()
    problems: list[str] = []
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            data = store.get("big")
            if data not in versions:
                problems.append(f"get saw {len(data)} bytes")
            info, stream = store.open("big")
            with stream:
                data = stream.read()
            if data not in versions or len(data) != info.size:
                problems.append(f"open saw {len(data)} bytes, info says {info.size}")
            reads[0] += 1

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for thread in readers:
        thread.start()
    try:
        for n in range(40):
            store.put("big", versions[n % len(versions)])
    finally:
        stop.set()
        for thread in readers:
            thread.join(30)
    assert problems == []
    assert reads[0] > 5
    assert keys(store) == ["big"]


def test_file_delete_prunes_empty_directories_but_not_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = FileStore(root)
    store.put("a/b/c/d", b"1")
    store.put("a/x", b"2")
    assert store.delete("a/b/c/d")
    assert not (root / "a" / "b").exists() and (root / "a" / "x").is_file()
    assert store.delete("a/x")
    assert not (root / "a").exists()
    assert root.is_dir()
    store.put("top", b"3")
    assert store.delete("top") and root.is_dir()


def test_file_key_cannot_also_be_a_prefix(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "root")
    store.put("a", b"object")
    with pytest.raises(BlobStoreError) as caught:
        store.put("a/b", b"under an object")
    assert "\n" not in str(caught.value)
    store.put("d/e", b"x")
    with pytest.raises(BlobStoreError):
        store.put("d", b"over a directory")
    with pytest.raises(BlobStoreError):
        store.put("d", b"over a directory", if_none_match=True)
    with pytest.raises(BlobNotFoundError):
        store.get("d")
    assert store.delete("d") is False
    assert keys(store) == ["a", "d/e"]


def test_file_check(tmp_path: Path) -> None:
    FileStore(tmp_path / "new" / "root").check()  # created on demand
    assert (tmp_path / "new" / "root").is_dir()
    assert list((tmp_path / "new" / "root").iterdir()) == []
    (tmp_path / "file").write_bytes(b"")
    for root in (tmp_path / "file", tmp_path / "file" / "below"):
        with pytest.raises(BlobStoreError) as caught:
            FileStore(root).check()
        assert str(root) in str(caught.value) and "\n" not in str(caught.value)


PROCESS_COUNTER = """
import sys
sys.path.insert(0, {root!r})
from profiling.errors import PreconditionFailedError
from profiling.storage.filestore import FileStore

store = FileStore(sys.argv[1])
for _ in range(int(sys.argv[2])):
    while True:
        info, stream = store.open("counter")
        with stream:
            value = int(stream.read())
        try:
            store.put("counter", str(value + 1).encode(), if_match=info.etag)
            break
        except PreconditionFailedError:
            pass
"""


def test_file_compare_and_swap_across_processes(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "root")
    store.put("counter", b"0")
    script = tmp_path / "counter.py"
    script.write_text(PROCESS_COUNTER.format(root=str(ROOT)))
    processes = [
        subprocess.Popen([sys.executable, str(script), str(store.root), "25"], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    assert store.get("counter") == b"100"


# ------------------------------------------------------------------ S3 only


def closed_port() -> int:
    """A loopback port nothing listens on (bound and released just now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_s3_unreachable_server_is_a_quick_one_line_store_error() -> None:
    store = S3Store(
        "bucket",
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        region="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        connect_timeout=0.5,
        read_timeout=1,
        max_attempts=2,
    )
    for call in (store.check, lambda: store.get("k"), lambda: store.put("k", b"x"), lambda: list(store.list())):
        started = time.monotonic()
        with pytest.raises(BlobStoreError) as caught:
            call()
        assert time.monotonic() - started < 5
        message = str(caught.value)
        assert "\n" not in message and "127.0.0.1" in message, message
    store.close()


@pytest.mark.slow
def test_s3_bad_credentials_and_missing_bucket(seaweedfs: SeaweedFS) -> None:
    wrong = s3_store(seaweedfs, "x", aws_secret_access_key="not-the-secret")
    for call in (wrong.check, lambda: wrong.get("k"), lambda: wrong.put("k", b"x")):
        with pytest.raises(BlobStoreError) as caught:
            call()
        assert "403" in str(caught.value) and "\n" not in str(caught.value)
    wrong.close()
    missing = S3Store(
        "no-such-bucket",
        endpoint_url=seaweedfs.endpoint,
        region=seaweedfs.region,
        aws_access_key_id=seaweedfs.access_key,
        aws_secret_access_key=seaweedfs.secret_key,
    )
    with pytest.raises(BlobStoreError, match="does not exist"):
        missing.check()
    with pytest.raises(BlobStoreError, match="NoSuchBucket"):
        missing.get("k")  # not BlobNotFoundError: the bucket, not the key, is missing
    missing.close()


@pytest.mark.slow
def test_s3_prefix_is_added_and_stripped(seaweedfs: SeaweedFS) -> None:
    base = f"t-{uuid.uuid4().hex[:12]}"
    inner = s3_store(seaweedfs, f"{base}/inner/")
    sibling = s3_store(seaweedfs, f"{base}/inner-sibling")
    whole = s3_store(seaweedfs, base)
    info = inner.put("app/default.pgo", b"data")
    sibling.put("app/default.pgo", b"other")
    assert info.key == "app/default.pgo"
    raw = seaweedfs.client().head_object(Bucket=seaweedfs.bucket, Key=f"{base}/inner/app/default.pgo")
    assert raw["ETag"] == f'"{info.etag}"'  # quotes on the wire, none in BlobInfo
    assert keys(inner) == ["app/default.pgo"] and keys(sibling) == ["app/default.pgo"]
    assert inner.get("app/default.pgo") == b"data" and sibling.get("app/default.pgo") == b"other"
    assert sorted(keys(whole)) == ["inner-sibling/app/default.pgo", "inner/app/default.pgo"]
    assert inner.delete("app/default.pgo") and keys(sibling) == ["app/default.pgo"]
    for s in (inner, sibling, whole):
        s.close()


@pytest.mark.slow
def test_s3_open_store_uses_the_url_and_the_default_credential_chain(
    seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_") and name != "AWS_CA_BUNDLE":
            monkeypatch.delenv(name)
    for name, value in seaweedfs.credentials_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    prefix = f"t-{uuid.uuid4().hex[:12]}/via-url"
    store = open_store(seaweedfs.url(prefix))
    assert isinstance(store, S3Store) and store.prefix == f"{prefix}/"
    store.check()
    store.put("k", b"through open_store")
    assert store.get("k") == b"through open_store"
    raw = seaweedfs.client().get_object(Bucket=seaweedfs.bucket, Key=f"{prefix}/k")
    assert raw["Body"].read() == b"through open_store"
    store.close()


# ------------------------------------------------------------------ open_store URLs


def test_open_store_file_urls_and_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(f"file://{tmp_path}/blobs")
    assert isinstance(store, FileStore) and store.root == tmp_path / "blobs"
    assert open_store("file://localhost/srv/x%20y").root == Path("/srv/x y")  # type: ignore[attr-defined]
    assert open_store(str(tmp_path / "plain")).root == tmp_path / "plain"  # type: ignore[attr-defined]
    monkeypatch.chdir(tmp_path)
    assert open_store("relative/dir").root == tmp_path / "relative" / "dir"  # type: ignore[attr-defined]
    assert open_store("odd:name").root == tmp_path / "odd:name"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("url", "folder"),
    [
        ("file:///srv/blobs", "/srv/blobs"),
        ("file://localhost/srv/blobs", "/srv/blobs"),
        ("FILE://LOCALHOST/srv/x%20y", "/srv/x y"),
        ("file://./data/blobs", "BASE/data/blobs"),
        ("file://.", "BASE"),
        ("file://../shared", "BASE/../shared"),
        ("file://~/blobs", "HOME/blobs"),
        ("data/blobs", "BASE/data/blobs"),
        ("./data/blobs", "BASE/data/blobs"),
        ("../shared", "BASE/../shared"),
        ("~/blobs", "HOME/blobs"),
        ("/srv/plain", "/srv/plain"),
        ("odd:name", "BASE/odd:name"),
    ],
)
def test_parse_store_url_file_forms(tmp_path: Path, url: str, folder: str) -> None:
    base = tmp_path / "base"
    expected = Path(folder.replace("BASE", str(base)).replace("HOME", str(Path.home())))
    expected = expected.resolve() if not folder.startswith("/") else expected
    location = parse_store_url(url, base)
    assert location == StoreLocation(url=expected.as_uri(), root=expected)
    assert parse_store_url(location.url) == location  # the canonical form reads back the same anywhere
    store = open_store(url, base)
    assert isinstance(store, FileStore) and store.root == expected


def test_parse_store_url_relative_defaults_to_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_store_url("file://./data/blobs").root == tmp_path.resolve() / "data" / "blobs"
    assert open_store("file://./data/blobs").root == tmp_path.resolve() / "data" / "blobs"  # type: ignore[attr-defined]


def test_parse_store_url_s3_without_opening() -> None:
    url = "s3://my-bucket/some/prefix?endpoint=http://127.0.0.1:9000&region=eu-west-1"
    assert parse_store_url(url) == StoreLocation(
        url=url, bucket="my-bucket", prefix="some/prefix", endpoint="http://127.0.0.1:9000", region="eu-west-1"
    )


def test_file_url_with_a_host_says_how_to_write_a_relative_path() -> None:
    with pytest.raises(StoreURLError) as info:
        parse_store_url("file://data/blobs")
    assert str(info.value) == (
        "invalid blob store URL 'file://data/blobs': file URLs cannot name a host ('data'):"
        " write file:///absolute/path or file://./relative/path"
    )
    assert info.value.problem.startswith("file URLs cannot name a host")


def test_open_store_s3_urls() -> None:
    plain = open_store("s3://my-bucket")
    assert isinstance(plain, S3Store)
    assert (plain.bucket, plain.prefix, plain.endpoint_url) == ("my-bucket", "", None)
    full = open_store("s3://my-bucket/some/prefix/?endpoint=http://127.0.0.1:9000&region=eu-west-1")
    assert isinstance(full, S3Store)
    assert (full.bucket, full.prefix) == ("my-bucket", "some/prefix/")
    assert (full.endpoint_url, full.region) == ("http://127.0.0.1:9000", "eu-west-1")
    for store in (plain, full):
        store.close()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://example.com/x",
        "http://127.0.0.1:9000/bucket",
        "s3:bucket",
        "s3://",
        "s3:///prefix",
        "s3://Bad_Bucket",
        "s3://user:secret@bucket",
        "s3://bucket?unknown=1",
        "s3://bucket?endpoint=",
        "s3://bucket?region=a&region=b",
        "s3://bucket?endpoint=ftp://host",
        "s3://bucket?endpoint=http://host:notaport",
        "s3://bucket/a/../b",
        "s3://bucket/a//b",
        "s3://bucket#frag",
        "file:relative",
        "file://otherhost/x",
        "file://data/blobs",
        "file:///x?mode=fast",
        "file://./x#frag",
        "file://",
        "file://localhost",
        "file://~no-such-user-here/x",
        "gs://bucket/pgo",
    ],
)
def test_open_store_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        open_store(url)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("invalid blob store URL")


def test_filesystem_users_never_import_boto3(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from profiling.storage.stores import open_store\n"
        f"s = open_store({str(tmp_path / 'blobs')!r})\n"
        "s.put('k', b'v'); assert s.get('k') == b'v'\n"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'boto3 imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
