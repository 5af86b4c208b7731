"""prefect.yaml on a Prefect server: `prefect deploy --all` plus `prefect worker start` run the
pipeline, with an upload through the API merged by a worker's run of the triggered deployment.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from profiling.client import Client, ClientError
from processes import BIN, Process, free_port, healthy, prefect_env, prefect_server_argv, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_deploy_all_and_a_worker_run_the_pipeline(cpu_profiles: list[Path], tmp_path: Path) -> None:
    prefect_port, api_port = free_port(), free_port()
    prefect_api = f"http://127.0.0.1:{prefect_port}/api"
    api = f"http://127.0.0.1:{api_port}"
    config = tmp_path / "autopgo.yaml"
    config.write_text(f"blob_store: {tmp_path / 'blobs'}\napi:\n  url: {api}\n")
    env = prefect_env(
        tmp_path / "prefect",
        prefect_port,
        PREFECT_WORKER_QUERY_SECONDS="1",
        AUTOPGO_HOME=str(ROOT),
        AUTOPGO_CONFIG=str(config),
    )
    started: list[Process] = []

    def start(argv: list[str], name: str) -> None:
        started.append(Process(argv, env, tmp_path / f"{name}.log"))

    def prefect(*args: str) -> None:
        subprocess.run([str(BIN / "prefect"), *args], env=env, cwd=ROOT, check=True, capture_output=True, timeout=300)

    try:
        start(prefect_server_argv(prefect_port), "prefect")
        wait_for("the Prefect server", lambda: healthy(f"{prefect_api}/health"), 120)
        prefect("work-pool", "create", "autopgo", "--type", "process")
        prefect("--no-prompt", "deploy", "--all")

        names = {d["name"] for d in httpx.post(f"{prefect_api}/deployments/filter", json={}, timeout=10).json()}
        assert {"on-upload", "sweep", "on-delete", "clean", "now", "every-5m"} <= names
        automations = httpx.post(f"{prefect_api}/automations/filter", json={}, timeout=10).json()
        assert {a["trigger"]["expect"][0] for a in automations} == {"profile.uploaded", "profile.deleted"}

        start([str(BIN / "autopgo"), "server", "--port", str(api_port), "--blob-store", str(tmp_path / "blobs"),
               "--events", "prefect", "--prefect-api-url", prefect_api, "--workers", "0"], "api")
        wait_for("the API", lambda: healthy(f"{api}/api/ready"), 60)
        start([str(BIN / "prefect"), "worker", "start", "--pool", "autopgo"], "worker")

        with Client(api) as client:
            client.upload("deployed", cpu_profiles[0].read_bytes())
            wait_for("a worker's merge", lambda: _download(client, "deployed"), 180, every=1)
    finally:
        for process in reversed(started):
            process.stop()


def _download(client: Client, app: str) -> bytes | None:
    try:
        return client.download(app).content
    except ClientError:
        return None
