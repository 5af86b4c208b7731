"""autopgo on Prefect's distributed setup (tests/distributed.py): two API servers and the
services process sharing PostgreSQL and Redis. A process work pool is created and autopgo's
sweep and merge-on-upload deployed through one API server; a worker polling the other runs
the sweep against S3 (SeaweedFS), then the merge that an upload event sent to the first
triggers; the event is read back from the second; once stopped, no process is left.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from distributed import Stack, distributed_stack
from processes import BIN, wait_for
from seaweed import SeaweedFS, seaweedfs  # noqa: F401  (seaweedfs is a session fixture)

from profiling.pipeline import UPLOADED, Event, PrefectEventSink, new_staging_key, read_merged
from profiling.storage import open_store

pytestmark = pytest.mark.slow

# Deploys autopgo's sweep, and its merge with the upload trigger `autopgo up` uses (without
# the linger, to end at once), from the installed code: module paths, so a worker needs
# autopgo installed, not a checkout; no image, nothing built or pushed. Prints their ids.
DEPLOY = """
import sys
from prefect import deploy
from prefect.deployments.runner import EntrypointType
from flows.deployments import upload_trigger
from flows.merge import merge, sweep

module = EntrypointType.MODULE_PATH
ids = deploy(
    sweep.to_deployment(name="sweep", entrypoint_type=module),
    merge.to_deployment(name="on-upload", entrypoint_type=module, triggers=[upload_trigger()],
                        parameters={"linger_seconds": 0}),
    work_pool_name=sys.argv[1], build=False, push=False, print_next_steps_message=False, ignore_warnings=True,
)
print(*ids)
"""


def test_workers_of_one_api_server_run_autopgo_deployed_and_triggered_through_the_other(
    seaweedfs: SeaweedFS,  # noqa: F811
    cpu_profiles: list[Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    swept, uploaded, pool = f"swept-{uuid.uuid4().hex[:8]}", f"uploaded-{uuid.uuid4().hex[:8]}", "autopgo"
    store_url = seaweedfs.url(f"stack-{uuid.uuid4().hex[:8]}")
    config = tmp_path / "autopgo.yaml"
    config.write_text(f"blob_store: {json.dumps(store_url)}\n")
    for name, value in seaweedfs.credentials_env().items():
        monkeypatch.setenv(name, value)
    store = open_store(store_url)
    store.put(new_staging_key(swept), cpu_profiles[0].read_bytes(), if_none_match=True)

    with distributed_stack(seaweedfs) as stack:
        first, second = stack.api_urls
        prefect(stack, "work-pool", "create", pool, "--type", "process")
        worker = stack.start(
            "worker",
            [str(BIN / "prefect"), "worker", "start", "--pool", pool],
            stack.client_env("worker", api=1, PREFECT_WORKER_QUERY_SECONDS="1", AUTOPGO_CONFIG=str(config)),
        )
        sweep_id, merge_id = python(stack, DEPLOY, pool).splitlines()[-1].split()

        run = httpx.post(f"{first}/deployments/{sweep_id}/create_flow_run", json={}, timeout=30)
        run.raise_for_status()
        state = wait_for("the worker's sweep", lambda: final_state(second, run.json()["id"]), 120, every=1)
        assert state == "COMPLETED", stack.log_of("worker")[-5000:]
        assert read_merged(store, swept) is not None  # the run merged the staged upload on S3

        key = new_staging_key(uploaded)
        store.put(key, cpu_profiles[1].read_bytes(), if_none_match=True)
        sink = PrefectEventSink(first)
        sink.emit(Event(UPLOADED, uploaded, key))  # what the API does after staging
        sink.close()
        state = wait_for("the triggered merge", lambda: final_state_of_deployment(second, merge_id), 240, every=1)
        assert state == "COMPLETED", stack.log_of("worker")[-5000:]
        assert read_merged(store, uploaded) is not None
        assert list(store.list(f"{uploaded}/staging/")) == []
        assert worker.popen.poll() is None

        events = read_events(second, uploaded, UPLOADED)  # the merge's profile.merged may be there too
        assert [(e["event"], e["payload"]) for e in events] == [(UPLOADED, {"app": uploaded, "profileKey": key})]

    assert stack.leftovers() == []  # the stack's stop also fails on any process left
    assert not stack.workdir.exists()


def prefect(stack: Stack, *args: str) -> str:
    """Run the prefect CLI as a client of the first API server."""
    return run([str(BIN / "prefect"), *args], stack, "cli")


def python(stack: Stack, code: str, *args: str) -> str:
    """Run ``code`` in a Python process that is a client of the first API server."""
    return run([sys.executable, "-c", code, *args], stack, "deploy")


def run(argv: list[str], stack: Stack, name: str) -> str:
    done = subprocess.run(argv, env=stack.client_env(name), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{argv[:3]} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


def final_state(api_url: str, flow_run_id: str) -> str | None:
    """The flow run's state type once it is final, else None."""
    flow_run = httpx.get(f"{api_url}/flow_runs/{flow_run_id}", timeout=10).json()
    state = (flow_run.get("state") or {}).get("type")
    return state if state in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None


def final_state_of_deployment(api_url: str, deployment_id: str) -> str | None:
    """The state type of the deployment's first flow run once it is final, else None."""
    body = {"deployments": {"id": {"any_": [deployment_id]}}, "limit": 1}
    runs = httpx.post(f"{api_url}/flow_runs/filter", json=body, timeout=10).json()
    return final_state(api_url, runs[0]["id"]) if runs else None


def read_events(api_url: str, app: str, name: str) -> list[dict]:
    body = {"filter": {"event": {"name": [name]}, "resource": {"id": [f"autopgo.app.{app}"]}}, "limit": 10}
    response = httpx.post(f"{api_url}/events/filter", json=body, timeout=10)
    response.raise_for_status()
    return response.json()["events"]
