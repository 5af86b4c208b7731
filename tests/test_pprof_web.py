"""The README's ``go tool pprof http://HOST:8080/api/profile/APP``: pprof fetches a merged
profile (whole or ``?trim=pgo``) straight from a live API, parses it and serves its web UI."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import harness
import httpx
import pytest
from apiserver import RecordingSink, ThreadServer, thread_server
from processes import terminate

from profiling.pipeline import merged_key
from profiling.pprof import decode, encode, merge
from profiling.storage import open_store

APP = "checkout"
README = Path(__file__).resolve().parent.parent / "README.md"


TOKEN = "pprof-token-1234"


@contextmanager
def serving(tmp_path: Path, cpu_profiles: list[Path], **auth: Any) -> Iterator[ThreadServer]:
    """A live API holding the merge of the real Go profiles as the app's profile."""
    store = open_store(str(tmp_path / "blobs"))
    store.put(merged_key(APP), encode(merge([decode(p.read_bytes()) for p in cpu_profiles])))
    try:
        with thread_server(store, RecordingSink(), **auth) as running:
            yield running
    finally:
        store.close()


@pytest.fixture
def api(tmp_path: Path, cpu_profiles: list[Path]) -> Iterator[ThreadServer]:
    with serving(tmp_path, cpu_profiles) as running:
        yield running


def pprof_env(tmp_path: Path) -> dict[str, str]:
    env = harness.go_env()
    env.update(HOME=str(tmp_path), PPROF_TMPDIR=str(tmp_path))  # where pprof saves what it fetched
    return env


def total_samples(data: bytes) -> int:
    """The profile's samples/count total, as pprof's ``-sample_index=samples`` adds it up."""
    profile = decode(data)
    index = [t.type for t in profile.sample_types].index("samples")
    return sum(s.values[index] for s in profile.samples)


@pytest.mark.slow
@pytest.mark.parametrize("query", ["", "?trim=pgo"])
def test_go_tool_pprof_reads_a_merged_profile_from_the_api(api: ThreadServer, tmp_path: Path, query: str) -> None:
    url = f"{api.url}/api/profile/{APP}{query}"
    served = httpx.get(url).content
    result = subprocess.run(
        [harness.go_executable(), "tool", "pprof", "-top", "-sample_index=samples", url],
        env=pprof_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"Fetching profile over HTTP from {url}" in result.stderr
    total = total_samples(served)
    assert total > 0 and f"% of {total} total" in result.stdout, result.stdout
    names = {f.name for f in decode(served).functions}
    listed = re.findall(r"^\s*\d+\s+\S+%\s+\S+%\s+\d+\s+\S+%\s+(.+?)(?: \((?:partial-)?inline\))?$", result.stdout, re.M)
    assert listed and set(listed) <= names


@pytest.mark.slow
def test_pprof_web_ui_serves_the_profile_fetched_from_the_api(api: ThreadServer, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"{api.url}/api/profile/{APP}"
    pprof = subprocess.Popen(
        [harness.go_executable(), "tool", "pprof", f"-http=127.0.0.1:{port}", "-no_browser", url],
        env=pprof_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        page = None
        deadline = time.monotonic() + 120
        while page is None and time.monotonic() < deadline and pprof.poll() is None:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/ui/top", timeout=5)
            except httpx.TransportError:
                time.sleep(0.2)
        assert page is not None, pprof.stderr.read() if pprof.poll() is not None else "pprof did not serve in 120 s"
        assert page.status_code == 200
        functions = {f.name for f in decode(httpx.get(url).content).functions}
        assert sum(name in page.text for name in functions) >= 5
    finally:
        terminate(pprof, 10)
        assert pprof.stderr is not None
        pprof.stderr.close()


def test_the_readme_shows_pprof_on_the_api() -> None:
    text = README.read_text()
    assert "go tool pprof -http=: http://autopgo:8080/api/profile/checkout" in text
    assert "go tool pprof -http=: 'http://autopgo:8080/api/profile/checkout?trim=pgo'" in text


@pytest.mark.slow
def test_with_reads_protected_the_readme_downloads_with_the_token_for_pprof(
    tmp_path: Path, cpu_profiles: list[Path]
) -> None:
    """pprof's own fetch gets 401; each of the README's two ways round it, run as written, opens the profile."""
    text = README.read_text()
    block = text[text.index("pprof sends no token") :]
    lines = re.search(r"```sh\n(.*?)\n```", block, re.S).group(1).splitlines()  # type: ignore[union-attr]
    assert [line.split()[0] for line in lines] == ["AUTOPGO_API_TOKEN=...", "curl"]
    go = harness.go_executable()
    env = pprof_env(tmp_path)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), str(Path(go).parent), env.get("PATH", "")])
    with serving(tmp_path, cpu_profiles, token=TOKEN, protect_reads=True) as api:
        url = f"{api.url}/api/profile/{APP}"
        direct = subprocess.run(
            [go, "tool", "pprof", "-top", url], env=env, capture_output=True, text=True, timeout=300
        )
        assert direct.returncode != 0 and "401" in direct.stderr, direct.stderr
        served = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).content
        for line in lines:
            work = tmp_path / f"work-{lines.index(line)}"
            work.mkdir()
            command = (
                line.replace("AUTOPGO_API_TOKEN=...", f"AUTOPGO_API_TOKEN={TOKEN}")
                .replace("http://autopgo:8080", api.url)
                .replace("-http=:", "-top -sample_index=samples")
            )
            result = subprocess.run(
                ["bash", "-c", command], cwd=work, capture_output=True, text=True, timeout=300,
                env={**env, "AUTOPGO_API_URL": api.url, "AUTOPGO_API_TOKEN": TOKEN},
            )
            assert result.returncode == 0, f"{command}: {result.stderr}"
            assert (work / "checkout.pgo").read_bytes() == served
            assert f"% of {total_samples(served)} total" in result.stdout, result.stdout
