"""prefect.yaml: nothing in it can disagree with autopgo.yaml or with flows/deployments.py, and on a
Prefect server `prefect deploy --all` plus `autopgo worker` run it, with an upload through the API
merged by a worker's run of the triggered deployment.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from prefect.events import DeploymentEventTrigger

from flows.deployments import deployments, for_workers
from profiling.client import Client, ClientError
from profiling.config import parse_config
from processes import BIN, Process, free_port, healthy, prefect_env, prefect_server_argv, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_prefect_yaml_holds_only_what_autopgo_yaml_does_not_shape_as_the_code_builds_it() -> None:
    """The scheduled deployments (sweep, clean, scrape ticks) take their intervals from autopgo.yaml,
    so prefect.yaml leaves them to `autopgo deploy`; the others it declares as deployments() has them."""
    declared = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    built = {d.name: for_workers(d) for d in deployments(parse_config({}))}
    unscheduled = {name for name, d in built.items() if not d.schedules}
    assert {entry["name"] for entry in declared} == unscheduled
    for entry in declared:
        code = built[entry["name"]]
        assert "schedules" not in entry and "schedule" not in entry, entry["name"]
        assert entry["entrypoint"] == code.entrypoint
        assert entry.get("parameters", {}) == code.parameters, entry["name"]
        assert entry.get("concurrency_limit") == code.concurrency_limit, entry["name"]
        assert "job_variables" not in entry["work_pool"]  # the worker's environment, not the deployer's
        assert "autopgo" in entry["tags"]  # `autopgo deploy` owns it
        triggers = [DeploymentEventTrigger.model_validate(t).model_dump(mode="json") for t in entry.get("triggers", [])]
        assert triggers == [t.model_dump(mode="json") for t in code.triggers], entry["name"]


def test_deploy_all_and_a_worker_run_the_pipeline(cpu_profiles: list[Path], tmp_path: Path) -> None:
    prefect_port, api_port = free_port(), free_port()
    prefect_api = f"http://127.0.0.1:{prefect_port}/api"
    api = f"http://127.0.0.1:{api_port}"
    config = tmp_path / "autopgo.yaml"
    config.write_text(f"blob_store: {tmp_path / 'blobs'}\napi:\n  url: {api}\n")
    env = prefect_env(tmp_path / "prefect", prefect_port, PREFECT_WORKER_QUERY_SECONDS="1")
    env.pop("AUTOPGO_CONFIG", None)
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
        assert names == {"on-upload", "on-delete", "now"}
        automations = httpx.post(f"{prefect_api}/automations/filter", json={}, timeout=10).json()
        assert {a["trigger"]["expect"][0] for a in automations} == {"profile.uploaded", "profile.deleted"}

        start([str(BIN / "autopgo"), "server", "--port", str(api_port), "--blob-store", str(tmp_path / "blobs"),
               "--events", "prefect", "--prefect-api-url", prefect_api, "--workers", "0"], "api")
        wait_for("the API", lambda: healthy(f"{api}/api/ready"), 60)
        start([str(BIN / "autopgo"), "worker", "--pool", "autopgo", "-c", str(config)], "worker")

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
