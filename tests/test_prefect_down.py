"""Uploads taken while the Prefect server is down are merged by the sweep once it is back.

Real processes: a Prefect server on SQLite, the API sending events to it, and the served
deployments; the Prefect server is stopped, profiles are uploaded (the API still answers 201
and keeps them), the server is started again on the same database, and the sweep merges them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from profiling.batches import read_merged
from profiling.client import Client
from profiling.fileio import read_profile
from profiling.stores import open_store
from test_pipeline_e2e import free_port, wait_for

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


class Process:
    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log.open("ab")
        self.popen = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait()
        self.log.close()


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_uploads_while_prefect_is_down_are_swept(cpu_profiles: list[Path], tmp_path: Path) -> None:
    prefect_port, api_port = free_port(), free_port()
    prefect_api = f"http://127.0.0.1:{prefect_port}/api"
    api = f"http://127.0.0.1:{api_port}"
    blobs = tmp_path / "blobs"
    config = tmp_path / "autopgo.yaml"
    config.write_text(f"blob_store: {blobs}\napi:\n  url: {api}\nsweep_every: 5s\n")
    home = tmp_path / "prefect"
    home.mkdir()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": prefect_api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "AUTOPGO_CONFIG": str(config),
    }
    server_argv = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)]
    started: list[Process] = []

    def start(argv: list[str], name: str) -> Process:
        started.append(Process(argv, env, tmp_path / f"{name}.log"))
        return started[-1]

    try:
        prefect = start(server_argv, "prefect")
        wait_for("the Prefect server", lambda: healthy(f"{prefect_api}/health"), 120)
        start([str(BIN / "autopgo"), "server", "--port", str(api_port), "--blob-store", str(blobs),
               "--events", "prefect", "--prefect-api-url", prefect_api, "--workers", "0"], "api")
        wait_for("the API", lambda: healthy(f"{api}/api/ready"), 60)
        flows = start([sys.executable, "-m", "flows.serve"], "flows")
        wait_for("the sweep deployment", lambda: healthy(f"{prefect_api}/deployments/name/sweep/sweep"), 120)

        prefect.stop()
        started.remove(prefect)
        assert httpx.get(f"{api}/api/health", timeout=10).status_code == 503  # events cannot go out
        with Client(api) as client:
            keys = [client.upload("downtime", path.read_bytes()) for path in cpu_profiles[:3]]
        store = open_store(str(blobs))
        assert sorted(i.key for i in store.list("downtime/staging/")) == sorted(keys)  # durable, no event

        prefect = start(server_argv, "prefect-again")
        wait_for("the Prefect server again", lambda: healthy(f"{prefect_api}/health"), 120)
        if flows.popen.poll() is not None:  # the runner gave up while its server was away
            started.remove(flows)
            flows = start([sys.executable, "-m", "flows.serve"], "flows-again")

        merged = wait_for("the sweep", lambda: read_merged(store, "downtime"), 120, every=1)
        uploaded = sum(s.values[0] for path in cpu_profiles[:3] for s in read_profile(path).samples)
        assert sum(values[0] for values in merged.tables.sample_values) == uploaded  # each exactly once
        assert list(store.list("downtime/staging/")) == []
    finally:
        for process in reversed(started):
            process.stop()
