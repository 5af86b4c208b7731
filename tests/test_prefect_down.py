"""Uploads taken while the Prefect server is down are merged by the sweep once it is back.

Real processes: a Prefect server on SQLite, the API sending events to it, and the served
deployments; the Prefect server is stopped, profiles are uploaded (the API still answers 201
and keeps them), the server is started again on the same database, and the sweep merges them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from processes import BIN, Process, free_port, healthy, prefect_env, prefect_server_argv, wait_for

from profiling.client import Client
from profiling.pipeline import read_merged
from profiling.pprof import read_profile
from profiling.storage import open_store

pytestmark = pytest.mark.slow


def test_uploads_while_prefect_is_down_are_swept(cpu_profiles: list[Path], tmp_path: Path) -> None:
    prefect_port, api_port = free_port(), free_port()
    prefect_api = f"http://127.0.0.1:{prefect_port}/api"
    api = f"http://127.0.0.1:{api_port}"
    blobs = tmp_path / "blobs"
    config = tmp_path / "autopgo.yaml"
    config.write_text(f"blob_store: {blobs}\napi:\n  url: {api}\nsweep_every: 5s\n")
    env = prefect_env(tmp_path / "prefect", prefect_port, PREFECT_RUNNER_POLL_FREQUENCY="1", AUTOPGO_CONFIG=str(config))
    server_argv = prefect_server_argv(prefect_port)
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
