"""``autopgo scrape``: profiling an app's instances now, against the real Go test service."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import harness
import pytest
from apiserver import AUTOPGO, RecordingSink, thread_server

from cli.scrape import DONE, FAILED, PROFILING, UPLOADING, TargetProgress, profile_filename, render_progress
from profiling.discovery import Target
from profiling.pprof import ValueType, decode
from profiling.storage import open_store

APP = "checkout"


@pytest.fixture(scope="module")
def services(service_binary: Path) -> Iterator[list[harness.Service]]:
    with harness.Service(service_binary).start() as first, harness.Service(service_binary).start() as second:
        yield [first, second]


@pytest.fixture
def dead_address() -> str:
    """host:port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def url_of(address: str) -> str:
    return f"http://{address}/debug/pprof/profile"


def write_config(tmp_path: Path, addresses: list[str] | list[dict[str, str]], *, api_url: str = "http://127.0.0.1:9", sample_size: int = 3,
                 duration: str = "1s") -> Path:
    path = tmp_path / "autopgo.yaml"
    static = json.dumps([{"address": a} if isinstance(a, str) else a for a in addresses])
    path.write_text(
        f"api:\n  url: {api_url}\napps:\n  - name: {APP}\n    scrape:\n      every: 5m\n"
        f"      duration: {duration}\n      sample_size: {sample_size}\n      targets:\n        static: {static}\n"
    )
    return path


def autopgo(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it; its output is a pipe, not a terminal."""
    return subprocess.run([str(AUTOPGO), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120)


def check_cpu_profile(data: bytes) -> None:
    assert ValueType("cpu", "nanoseconds") in decode(data).sample_types


@pytest.mark.slow
def test_scrape_uploads_each_profile_to_the_api_and_prints_its_key(
    tmp_path: Path, services: list[harness.Service]
) -> None:
    store = open_store(str(tmp_path / "blobs"))
    try:
        with thread_server(store, RecordingSink()) as running:
            config = write_config(tmp_path, [s.address for s in services], api_url=running.url)
            result = autopgo("scrape", APP, "-c", config, cwd=tmp_path)
        staged = {info.key: store.get(info.key) for info in store.list(f"{APP}/staging/")}
    finally:
        store.close()
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    # Without a terminal: one line per target as it finishes, "URL KEY".
    assert sorted(line.split(" ")[0] for line in lines) == sorted(url_of(s.address) for s in services)
    assert all(re.fullmatch(rf"http://127\.0\.0\.1:\d+/debug/pprof/profile {APP}/staging/\S+", line) for line in lines)
    assert sorted(line.split(" ")[1] for line in lines) == sorted(staged)
    for data in staged.values():
        check_cpu_profile(data)
        assert 0.9e9 <= decode(data).duration_nanos < 5e9  # the configured duration: 1s


@pytest.mark.slow
def test_scrape_output_saves_the_profiles_and_uploads_nothing(
    tmp_path: Path, services: list[harness.Service], dead_address: str
) -> None:
    out = tmp_path / "profiles" / "new"
    # The configured API is dead: with --output nothing is sent to it.
    config = write_config(tmp_path, [s.address for s in services], api_url=f"http://{dead_address}", duration="30s")
    before = datetime.now(UTC).replace(microsecond=0)
    result = autopgo("scrape", APP, "-c", config, "--output", out, "--duration", "1s", "--sample-size", "1", cwd=tmp_path)
    after = datetime.now(UTC)
    assert (result.returncode, result.stderr) == (0, "")
    files = list(out.iterdir())
    assert len(files) == 1  # --sample-size 1 of the two targets
    [line] = result.stdout.splitlines()
    url, saved = line.split(" ")
    assert saved == str(files[0])
    match = re.fullmatch(rf"{APP}_127\.0\.0\.1-(\d+)_(\d{{8}}T\d{{6}}Z)\.pb\.gz", files[0].name)
    assert match, files[0].name
    assert url == url_of(f"127.0.0.1:{match.group(1)}")
    assert before <= datetime.strptime(match.group(2), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) <= after
    data = files[0].read_bytes()
    check_cpu_profile(data)
    assert decode(data).duration_nanos < 5e9  # --duration 1s, not the configured 30s


@pytest.mark.slow
def test_output_saves_only_profiles(tmp_path: Path, services: list[harness.Service]) -> None:
    # The service's /debug/pprof/cmdline answers 200 with its command line, not a profile.
    cmdline = {"address": services[0].address, "path": "/debug/pprof/cmdline"}
    config = write_config(tmp_path, [cmdline])
    out = tmp_path / "profiles"
    result = autopgo("scrape", APP, "-c", config, "--output", out, cwd=tmp_path)
    assert (result.returncode, result.stdout, list(out.iterdir())) == (1, "", [])
    [error] = result.stderr.splitlines()
    assert error.startswith(f"autopgo scrape: http://{services[0].address}/debug/pprof/cmdline: "), error


@pytest.mark.slow
def test_a_dead_target_is_one_error_line_and_status_one_while_the_good_one_lands(
    tmp_path: Path, services: list[harness.Service], dead_address: str
) -> None:
    good = services[0].address
    store = open_store(str(tmp_path / "blobs"))
    try:
        with thread_server(store, RecordingSink()) as running:
            config = write_config(tmp_path, [good, dead_address], api_url=running.url)
            result = autopgo("scrape", APP, "-c", config, cwd=tmp_path)
        staged = [info.key for info in store.list(f"{APP}/staging/")]
    finally:
        store.close()
    assert result.returncode == 1
    assert result.stdout == f"{url_of(good)} {staged[0]}\n" and len(staged) == 1
    [error] = result.stderr.splitlines()
    assert error.startswith(f"autopgo scrape: {url_of(dead_address)}: ConnectError"), error


@pytest.mark.slow
def test_a_refused_upload_is_the_targets_error(tmp_path: Path, services: list[harness.Service]) -> None:
    store = open_store(str(tmp_path / "blobs"))
    try:
        with thread_server(store, RecordingSink(), token="s3cret") as running:
            config = write_config(tmp_path, [services[0].address], api_url=running.url)
            refused = autopgo("scrape", APP, "-c", config, cwd=tmp_path)
            accepted = autopgo("scrape", APP, "-c", config, "--token", "s3cret", cwd=tmp_path)
    finally:
        store.close()
    assert (refused.returncode, refused.stdout) == (1, "")
    [error] = refused.stderr.splitlines()
    assert error.startswith(f"autopgo scrape: {url_of(services[0].address)}: POST {running.url}/api/profile/{APP}: 401 ")
    assert error.endswith("(no API token was given)"), error
    assert (accepted.returncode, accepted.stderr) == (0, "")


def test_an_app_without_scrape_settings_is_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, ["127.0.0.1:1"])
    result = autopgo("scrape", "payments", "-c", config, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"autopgo scrape: app payments has no scrape settings in {config}\n"


def test_a_source_without_targets_is_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, [])
    result = autopgo("scrape", APP, "-c", config, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (1, f"autopgo scrape: app {APP}: its static source lists no targets\n")


def test_a_broken_target_file_is_reported_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "targets.yaml").write_text("- address: nowhere\n")
    config = tmp_path / "autopgo.yaml"
    config.write_text(f"apps:\n  - name: {APP}\n    scrape:\n      targets:\n        file: targets.yaml\n")
    result = autopgo("scrape", APP, "-c", config, cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"autopgo scrape: {tmp_path / 'targets.yaml'}:1: ") and "host:port" in line, line


@pytest.mark.parametrize(
    ("flag", "value", "problem"),
    [
        ("--duration", "10", "10 has no unit"),
        ("--duration", "soon", "expected a duration"),
        ("--sample-size", "0", "at least 1"),
        ("--sample-size", "two", "at least 1"),
    ],
)
def test_malformed_flags_are_usage_errors(tmp_path: Path, flag: str, value: str, problem: str) -> None:
    result = autopgo("scrape", APP, flag, value, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(f"autopgo scrape: error: argument {flag}: ")
    assert problem in result.stderr


# -- the live lines on a terminal, rendered purely ----------------------------------------------


def test_render_progress_shows_elapsed_and_expected_then_the_result() -> None:
    a, b, c = (f"http://10.0.0.{i}:6060/debug/pprof/profile" for i in (1, 2, 3))
    rows = [
        TargetProgress("http://10.0.0.10:6060/debug/pprof/profile", 30, started=100.0),
        TargetProgress(a, 30, started=100.0, step=UPLOADING),
        TargetProgress(b, 30, started=100.0, step=DONE, ended=131.2, result=f"{APP}/staging/1-ab.pb.gz"),
        TargetProgress(c, 30, started=100.0, step=FAILED, ended=100.4, result="ConnectError: refused"),
    ]
    assert render_progress(rows, now=112.6) == [
        "http://10.0.0.10:6060/debug/pprof/profile  profiling   13s/30s",
        f"{a}   uploading   13s/30s",
        f"{b}   done        31s/30s  {APP}/staging/1-ab.pb.gz",
        f"{c}   failed       0s/30s  ConnectError: refused",
    ]
    assert rows[0].step == PROFILING


def test_render_progress_clips_lines_to_the_terminal() -> None:
    row = TargetProgress("http://h:1/p", 5, started=0.0, step=FAILED, ended=1.0, result="x" * 100)
    [line] = render_progress([row], now=3.0, width=40)
    assert len(line) == 40 and line.endswith("...") and line.startswith("http://h:1/p  failed       1s/5s  xxx")
    assert render_progress([], now=0.0) == []


def test_profile_filename_names_app_target_and_time() -> None:
    when = datetime(2025, 3, 4, 5, 6, 7, 890, tzinfo=UTC)
    assert profile_filename(APP, Target("10.0.0.5:6060"), when) == f"{APP}_10.0.0.5-6060_20250304T050607Z.pb.gz"
    assert profile_filename(APP, Target("[::1]:6060", "/x/profile"), when) == f"{APP}_--1-6060-x-profile_20250304T050607Z.pb.gz"
