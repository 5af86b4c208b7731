"""`autopgo server`: where each setting comes from (flag, environment, autopgo.yaml, default),
and the token that guards reads when asked to."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from apiserver import AUTOPGO, RecordingSink, thread_server
from processes import terminate, wait_until_ready
from sample_profiles import cpu_profile

from cli.server import choose_settings
from profiling.client import Client, ClientError
from profiling.config import parse_config
from profiling.pipeline import merged_key
from profiling.pprof import encode
from profiling.storage import BlobStore, open_store

TOKEN = "file-token-1234"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AUTOPGO_", "PREFECT_"))}


# --------------------------------------------------------------------------- precedence


def test_flag_then_environment_then_file_then_default(tmp_path: Path) -> None:
    config = parse_config(
        {"blob_store": "file-store", "api": {"url": "http://127.0.0.1:9100", "token": "from-file"}}, base=tmp_path
    )
    flags = {"port": 9300}
    env = {"AUTOPGO_PORT": "9200", "AUTOPGO_HOST": "127.0.0.2", "AUTOPGO_API_TOKEN": "from-env"}
    chosen = choose_settings(flags, env, config, "autopgo.yaml")
    assert (chosen["port"].value, chosen["port"].origin) == (9300, "flag --port")
    assert (chosen["host"].value, chosen["host"].origin) == ("127.0.0.2", "env AUTOPGO_HOST")
    assert (chosen["token"].value, chosen["token"].origin) == ("from-env", "env AUTOPGO_API_TOKEN")
    assert chosen["blob_store"].value == f"file://{tmp_path / 'file-store'}"
    assert chosen["blob_store"].origin == "config autopgo.yaml (blob_store)"
    assert (chosen["max_body"].value, chosen["max_body"].origin) == ("64MiB", "default")

    chosen = choose_settings({}, {}, config, "autopgo.yaml")
    assert (chosen["host"].value, chosen["port"].value) == ("127.0.0.1", 9100)
    assert chosen["token"].value == "from-file"


def test_settings_the_file_leaves_out_keep_their_defaults(tmp_path: Path) -> None:
    chosen = choose_settings({}, {}, parse_config({"apps": []}, base=tmp_path), "autopgo.yaml")
    assert {name: c.origin for name, c in chosen.items()} == {name: "default" for name in chosen}
    assert (chosen["host"].value, chosen["port"].value, chosen["blob_store"].value) == (
        "127.0.0.1",
        8080,
        "file://./data/blobs",
    )


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match="^AUTOPGO_PORT: bad port 'http'$"):
        choose_settings({}, {"AUTOPGO_PORT": "http"}, None, None)


# --------------------------------------------------------------------------- the server command


def _start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([str(AUTOPGO), "server", *argv], stdout=out, stderr=subprocess.STDOUT, env=env)


@pytest.mark.slow
def test_server_takes_store_address_and_token_from_the_config(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "autopgo.yaml").write_text(
        f"blob_store: ./store\napi:\n  url: http://127.0.0.1:{port}\n  token: {TOKEN}\n  protect_reads: true\n"
    )
    log = tmp_path / "server.log"
    process = _start(["--config", str(tmp_path / "autopgo.yaml"), "--events", "log"], log, clean_env())
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, url, log)
        profile = encode(cpu_profile())
        with Client(url) as anonymous:
            with pytest.raises(ClientError) as refused:
                anonymous.upload("svc", profile)
            assert refused.value.status == 401
            with pytest.raises(ClientError) as unread:
                anonymous.list()
            assert unread.value.status == 401
        with Client(url, token=TOKEN) as api:
            key = api.upload("svc", profile)
            assert api.list() == []
        assert (tmp_path / "store" / key).is_file()  # the file's store, relative to the file
    finally:
        terminate(process, 10)
    text = log.read_text()
    assert f"setting port = {port} (from config {tmp_path / 'autopgo.yaml'} (api.url))" in text
    assert f"setting blob_store = file://{tmp_path / 'store'} (from config {tmp_path / 'autopgo.yaml'} (blob_store))" in text
    assert "setting token = set (from" in text and "setting max_body = 64MiB (from default)" in text
    assert TOKEN not in text


@pytest.mark.slow
def test_a_flag_beats_the_environment_which_beats_the_file(tmp_path: Path) -> None:
    file_port, env_port, flag_port = free_port(), free_port(), free_port()
    config = tmp_path / "autopgo.yaml"
    config.write_text(
        f"blob_store: ./file-store\napi:\n  url: http://127.0.0.1:{file_port}\n  token: {TOKEN}\n"
    )
    env_token = "env-token-5678"
    env = {
        **clean_env(),
        "AUTOPGO_CONFIG": str(config),  # the file by its variable, as a worker machine would name it
        "AUTOPGO_PORT": str(env_port),
        "AUTOPGO_BLOB_STORE": str(tmp_path / "env-store"),
        "AUTOPGO_API_TOKEN": env_token,
    }
    log = tmp_path / "server.log"
    process = _start(["--port", str(flag_port), "--events", "log"], log, env)
    url = f"http://127.0.0.1:{flag_port}"
    try:
        wait_until_ready(process, url, log)
        for other in (file_port, env_port):
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{other}/api/ready", timeout=2)
        profile = encode(cpu_profile())
        with Client(url, token=TOKEN) as file_token, pytest.raises(ClientError) as refused:
            file_token.upload("svc", profile)
        assert refused.value.status == 401
        with Client(url, token=env_token) as api:
            key = api.upload("svc", profile)
        assert (tmp_path / "env-store" / key).is_file()
        assert not (tmp_path / "file-store").exists()
    finally:
        terminate(process, 10)
    lines = set(log.read_text().splitlines())
    expected = [
        f"setting config = {config} (from env AUTOPGO_CONFIG)",
        f"setting host = 127.0.0.1 (from config {config} (api.url))",
        f"setting port = {flag_port} (from flag --port)",
        f"setting blob_store = file://{tmp_path / 'env-store'} (from env AUTOPGO_BLOB_STORE)",
        "setting token = set (from env AUTOPGO_API_TOKEN)",
        "setting protect_reads = False (from default)",
        "setting events = log (from flag --events)",
    ]
    assert [line for line in expected if not any(logged.endswith(line) for logged in lines)] == []
    assert TOKEN not in log.read_text() and env_token not in log.read_text()


def test_a_mistyped_switch_is_refused_not_read_as_off() -> None:
    with pytest.raises(ValueError, match=r"^AUTOPGO_PROTECT_READS: expected 1 or 0 .*, not 'ture'$"):
        choose_settings({}, {"AUTOPGO_PROTECT_READS": "ture"}, None)
    chosen = choose_settings({}, {"AUTOPGO_PROTECT_READS": "off", "AUTOPGO_ACCEPT_ANY_PROFILE": "Yes"}, None)
    assert (chosen["protect_reads"].value, chosen["accept_any_profile"].value) == (False, True)


def refusal(*args: str) -> str:
    """The last line `autopgo server ARGS` writes when it refuses to start (status 1)."""
    result = subprocess.run(
        [str(AUTOPGO), "server", "--port", "0", *args], capture_output=True, text=True, env=clean_env(), timeout=60
    )
    assert result.returncode == 1, result.stderr
    return result.stderr.splitlines()[-1]


def test_protecting_reads_without_a_token_is_one_line(tmp_path: Path) -> None:
    assert refusal("--protect-reads", "--blob-store", str(tmp_path)) == (
        "autopgo server: protecting reads (flag --protect-reads) needs a token: set --token, AUTOPGO_API_TOKEN or api.token"
    )


def test_protecting_reads_in_the_file_without_a_token_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "autopgo.yaml"
    config.write_text("api:\n  protect_reads: true\n")
    assert refusal("--config", str(config), "--blob-store", str(tmp_path)) == (
        f"autopgo server: protecting reads (config {config} (api.protect_reads)) needs a token: "
        "set --token, AUTOPGO_API_TOKEN or api.token"
    )


# --------------------------------------------------------------------------- protected reads


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BlobStore]:
    store = open_store(str(tmp_path / "blobs"))
    yield store
    store.close()


@pytest.mark.parametrize("path", ["/api/profile", "/api/profile/svc", "/api/profile/svc?trim=pgo"])
def test_protected_reads_need_the_token(store: BlobStore, path: str) -> None:
    store.put(merged_key("svc"), encode(cpu_profile()))
    with thread_server(store, RecordingSink(), token=TOKEN, protect_reads=True) as running:
        with httpx.Client(base_url=running.url) as c:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                for method in ("GET", "HEAD"):
                    response = c.request(method, path, headers=headers)
                    assert response.status_code == 401
                    assert response.headers["WWW-Authenticate"].startswith("Bearer")
                    if method == "GET":  # the same JSON error as a write without the token gets
                        assert response.json() == {"message": f"{'missing' if not headers else 'invalid'} bearer token"}
            response = c.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
            assert response.status_code == 200


def test_reads_stay_open_without_protection(store: BlobStore) -> None:
    store.put(merged_key("svc"), encode(cpu_profile()))
    with thread_server(store, RecordingSink(), token=TOKEN) as running, httpx.Client(base_url=running.url) as c:
        assert c.get("/api/profile/svc", headers={"Authorization": "Bearer wrong"}).status_code == 200


def test_probes_stay_open_when_reads_are_protected(store: BlobStore) -> None:
    with thread_server(store, RecordingSink(), token=TOKEN, protect_reads=True) as running:
        with httpx.Client(base_url=running.url) as c:
            assert c.get("/api/health").status_code == 200
            assert c.get("/api/ready").status_code == 200


def test_the_cli_reads_a_protected_server_with_its_token(store: BlobStore, tmp_path: Path) -> None:
    merged = encode(cpu_profile())
    store.put(merged_key("svc"), merged)
    with thread_server(store, RecordingSink(), token=TOKEN, protect_reads=True) as running:
        env = {**clean_env(), "AUTOPGO_API_URL": running.url}
        out = tmp_path / "default.pgo"
        run = [str(AUTOPGO), "download", "svc", "-o", str(out)]
        denied = subprocess.run(run, capture_output=True, text=True, env=env, timeout=60)
        assert denied.returncode == 1 and "401" in denied.stderr and "(no API token was given)" in denied.stderr
        allowed = subprocess.run(run, capture_output=True, text=True, env={**env, "AUTOPGO_API_TOKEN": TOKEN}, timeout=60)
        assert allowed.returncode == 0, allowed.stderr
        assert out.read_bytes() == merged
        listed = subprocess.run(
            [str(AUTOPGO), "list"], capture_output=True, text=True, env={**env, "AUTOPGO_API_TOKEN": TOKEN}, timeout=60
        )
        assert listed.returncode == 0 and "svc" in listed.stdout


def test_the_cli_takes_the_token_from_the_configuration_after_flag_and_environment(
    store: BlobStore, tmp_path: Path
) -> None:
    merged = encode(cpu_profile())
    store.put(merged_key("svc"), merged)
    with thread_server(store, RecordingSink(), token=TOKEN, protect_reads=True) as running:
        config = tmp_path / "autopgo.yaml"
        config.write_text(f"api:\n  url: {running.url}\n  token: {TOKEN}\n")
        out = tmp_path / "default.pgo"

        def autopgo(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(AUTOPGO), *argv], capture_output=True, text=True, env={**clean_env(), **env}, timeout=60
            )

        # api.url and api.token from the file named by the flag, or by AUTOPGO_CONFIG
        downloaded = autopgo("download", "svc", "-o", str(out), "-c", str(config))
        assert downloaded.returncode == 0, downloaded.stderr
        assert out.read_bytes() == merged
        listed = autopgo("list", AUTOPGO_CONFIG=str(config))
        assert listed.returncode == 0 and "svc" in listed.stdout, listed.stderr
        # the variable, then the flag, come before the file, as for the server
        denied = autopgo("list", "-c", str(config), AUTOPGO_API_TOKEN="wrong")
        assert denied.returncode == 1 and "401" in denied.stderr
        allowed = autopgo("list", "-c", str(config), "--token", TOKEN, AUTOPGO_API_TOKEN="wrong")
        assert allowed.returncode == 0, allowed.stderr


def test_scrape_runs_send_the_token_the_server_takes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client scrape runs upload with, against a real server whose token is in the environment only."""
    import asyncio

    from apiserver import ServerProcess

    from flows.settings import api_client

    env = {**clean_env(), "AUTOPGO_API_TOKEN": TOKEN}
    server = ServerProcess(["--blob-store", str(tmp_path / "blobs"), "--protect-reads", "--events", "log"], env=env)
    server.start()
    try:
        config = parse_config({"api": {"url": server.url, "token": "stale-file-token"}}, base=tmp_path)
        monkeypatch.setenv("AUTOPGO_API_TOKEN", TOKEN)

        async def upload() -> str:
            async with api_client(config) as api:
                return await api.upload("svc", encode(cpu_profile()))

        key = asyncio.run(upload())
        assert (tmp_path / "blobs" / key).is_file()
    finally:
        server.stop()
