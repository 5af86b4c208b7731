"""`autopgo deploy` and `autopgo worker` against a real Prefect server: a deploy after an edit of
autopgo.yaml leaves exactly its deployments and schedules; a worker runs deployed flows with the
configuration and stops on SIGTERM with its runs; every failure is one line."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.schemas.schedules import IntervalSchedule
from processes import BIN, Process, free_port, healthy, prefect_env, prefect_server_argv, processes_using, wait_for
from sample_profiles import cpu_profile

from flows.workpool import on_schedule
from profiling.pipeline import merged_key, new_staging_key
from profiling.pprof import encode
from profiling.storage import open_store

pytestmark = pytest.mark.slow

POOL = "autopgo"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class Server:
    api: str
    env: dict[str, str]  # of a client of this server, without any AUTOPGO_ setting
    tmp: Path

    def autopgo(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "autopgo"), *args], env=env or self.env, cwd=self.tmp, capture_output=True, text=True, timeout=300
        )

    def post(self, path: str, body: dict[str, Any]) -> Any:
        def answer() -> httpx.Response | None:  # a busy Prefect server may answer 503 for a moment
            response = httpx.post(f"{self.api}{path}", json=body, timeout=30)
            return None if response.status_code == 503 else response

        response = wait_for(f"an answer to POST {path}", answer, 60, every=1)
        response.raise_for_status()
        return response.json()

    def deployments(self) -> dict[str, dict[str, Any]]:
        """Every deployment on the server, by flow/deployment name."""
        flows = {f["id"]: f["name"] for f in self.post("/flows/filter", {})}
        return {f"{flows[d['flow_id']]}/{d['name']}": d for d in self.post("/deployments/filter", {})}

    def run(self, deployment: str, parameters: dict[str, Any]) -> str:
        found = httpx.get(f"{self.api}/deployments/name/{deployment}", timeout=30).json()
        return self.post(f"/deployments/{found['id']}/create_flow_run", {"parameters": parameters})["id"]

    def state(self, run_id: str) -> dict[str, Any]:
        return httpx.get(f"{self.api}/flow_runs/{run_id}", timeout=30).json()["state"]

    def final_state(self, run_id: str, timeout: float) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            state = self.state(run_id)
            return state if state["type"] in FINAL else None

        return wait_for("the flow run to end", final, timeout, every=1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("deploy")
    port = free_port()
    env = {k: v for k, v in prefect_env(tmp / "prefect", port).items() if not k.startswith("AUTOPGO_")}
    process = Process(prefect_server_argv(port), env, tmp / "prefect.log")
    try:
        api = env["PREFECT_API_URL"]
        wait_for("the Prefect server", lambda: healthy(f"{api}/health"), 180)
        yield Server(api, {**env, "PREFECT_WORKER_QUERY_SECONDS": "1"}, tmp)
    finally:
        process.stop()


def config(path: Path, blobs: Path, sweep: str, clean: str | None, apps: dict[str, str]) -> Path:
    """An autopgo.yaml with the given sweep and clean intervals and apps scraped every so often."""
    text = f"blob_store: {blobs}\nsweep_every: {sweep}\n"
    if clean:
        text += f"clean:\n  every: {clean}\n  older_than: 720h\n"
    text += "apps:\n" if apps else ""
    for name, every in apps.items():
        text += f"  - name: {name}\n    scrape:\n      every: {every}\n      targets:\n        static: [{{address: '127.0.0.1:1'}}]\n"
    path.write_text(text)
    return path


def schedules(deployment: dict[str, Any]) -> list[tuple[float, bool]]:
    return sorted((s["schedule"]["interval"], s["active"]) for s in deployment["schedules"])


def test_a_second_deploy_leaves_exactly_the_edited_configurations_deployments(server: Server) -> None:
    first = config(server.tmp / "first.yaml", server.tmp / "blobs", "30s", "2h", {"a": "5m", "b": "1m", "c": "10m", "d": "5m"})
    done = server.autopgo("deploy", "-c", str(first), "--work-pool", POOL, "--create-pool")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout.splitlines() == [
        f"created work pool {POOL}",
        "created merge/on-upload",
        "created sweep/sweep",
        "created delete/on-delete",
        "created scrape/now",
        "created clean/clean",
        "created scrape-tick/every-1m",
        "created scrape-tick/every-5m",
        "created scrape-tick/every-10m",
    ]
    deployed = server.deployments()
    assert schedules(deployed["sweep/sweep"]) == [(30, True)]
    assert schedules(deployed["clean/clean"]) == [(7200, True)]
    assert schedules(deployed["scrape-tick/every-10m"]) == [(300, True)]  # a tick is at most 5 minutes
    assert deployed["scrape-tick/every-10m"]["parameters"] == {"every_seconds": 600}
    assert {d["work_pool_name"] for d in deployed.values()} == {POOL}
    assert deployed["merge/on-upload"]["entrypoint"] == "flows.merge.merge"  # from the installed package

    # Someone else's deployment of a flow of the same name, without the autopgo tag: not the pipeline's.
    flow_id = server.post("/flows/", {"name": "clean"})["id"]
    server.post("/deployments/", {"name": "someone-else", "flow_id": flow_id})

    # An interval changed (a: 5m -> 2m), apps removed (b, d) with the intervals only they used (1m, 5m),
    # the sweep's interval changed, the clean removed.
    second = config(server.tmp / "second.yaml", server.tmp / "blobs", "45s", None, {"a": "2m", "c": "10m"})
    done = server.autopgo("deploy", "-c", str(second), "--work-pool", POOL)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout.splitlines() == [
        "updated merge/on-upload",
        "updated sweep/sweep",
        "updated delete/on-delete",
        "updated scrape/now",
        "created scrape-tick/every-2m",
        "updated scrape-tick/every-10m",
        "removed clean/clean",
        "removed scrape-tick/every-1m",
        "removed scrape-tick/every-5m",
    ]
    deployed = server.deployments()
    assert {name: schedules(d) for name, d in deployed.items()} == {
        "merge/on-upload": [],
        "sweep/sweep": [(45, True)],
        "delete/on-delete": [],
        "scrape/now": [],
        "scrape-tick/every-2m": [(120, True)],
        "scrape-tick/every-10m": [(300, True)],
        "clean/someone-else": [],
    }
    # The triggers were replaced, not added to: one automation each.
    automations = server.post("/automations/filter", {})
    assert sorted(a["trigger"]["expect"][0] for a in automations) == ["profile.deleted", "profile.uploaded"]
    targets = {a["actions"][0]["deployment_id"] for a in automations}
    assert targets == {deployed["merge/on-upload"]["id"], deployed["delete/on-delete"]["id"]}
    # No run is left scheduled for a removed deployment, nor on the sweep's old interval.
    scheduled = server.post("/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}})
    ids = {d["id"] for d in deployed.values()}
    assert all(run["deployment_id"] in ids for run in scheduled), scheduled
    sweeps = sorted(r["expected_start_time"] for r in scheduled if r["deployment_id"] == deployed["sweep/sweep"]["id"])
    assert all(_seconds_between(a, b) % 45 == 0 for a, b in zip(sweeps, sweeps[1:])), sweeps


def test_a_worker_runs_deployed_flows_with_the_configuration_and_stops_its_runs_on_sigterm(server: Server) -> None:
    blobs = server.tmp / "worker-blobs"
    # A third deploy: no scrape intervals left, and a sweep that does not fire while the test runs.
    settings = config(server.tmp / "worker.yaml", blobs, "24h", None, {})
    done = server.autopgo("deploy", "-c", str(settings), "--work-pool", POOL, "--create-pool")  # if no test made it
    assert done.returncode == 0, done.stderr
    assert not [name for name in server.deployments() if name.startswith("scrape-tick/")]
    store = open_store(str(blobs))
    try:
        store.put(new_staging_key("svc"), encode(cpu_profile()))
    finally:
        store.close()

    marker = f"AUTOPGO_TEST_WORKER={uuid.uuid4()}"
    name, _, value = marker.partition("=")
    worker = Process([str(BIN / "autopgo"), "worker", "--pool", POOL, "-c", str(settings)],
                     {**server.env, name: value}, server.tmp / "worker.log")
    try:
        # The sweep reads the configuration the worker gave it, and merges into its store.
        swept = server.final_state(server.run("sweep/sweep", {}), 180)
        assert swept["type"] == "COMPLETED", swept
        store = open_store(str(blobs))
        try:
            assert store.get(merged_key("svc"))
        finally:
            store.close()

        lingering = server.run("merge/on-upload", {"linger_seconds": 600})
        wait_for("the merge run to start", lambda: server.state(lingering)["type"] == "RUNNING", 180, every=1)
        os.kill(worker.popen.pid, signal.SIGTERM)
        assert worker.popen.wait(90) == 0
        wait_for("no process of the worker left", lambda: not processes_using(marker), 30)
        assert server.final_state(lingering, 30)["type"] == "CRASHED"  # reported, not left running
    finally:
        worker.stop()
    log = (server.tmp / "worker.log").read_text(errors="replace")
    assert "received SIGTERM" in log, log


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no api url", "autopgo {cmd}: PREFECT_API_URL is not set: point it at the Prefect server's API"),
        ("unreachable", "autopgo {cmd}: cannot reach the Prefect server at http://127.0.0.1:{port}/api: "),
        ("unknown pool", "autopgo {cmd}: no work pool 'nosuch' on {api}: create it with autopgo deploy --create-pool"),
        ("other pool type", "autopgo {cmd}: work pool 'elsewhere' is of type 'kubernetes': autopgo runs on a 'process' pool"),
        ("no config", "autopgo {cmd}: no autopgo.yaml here: give the pipeline's configuration with -c FILE"),
    ],
)
@pytest.mark.parametrize("cmd", ["deploy", "worker"])
def test_errors_are_one_line(server: Server, tmp_path: Path, cmd: str, case: str, expected: str) -> None:
    closed = free_port()
    settings = config(tmp_path / "autopgo.yaml", tmp_path / "blobs", "1m", None, {})
    env = dict(server.env)
    pool = POOL
    if case == "no api url":
        env.pop("PREFECT_API_URL")
        env["PREFECT_HOME"] = str(tmp_path / "fresh-prefect-home")  # no profile naming a server either
    elif case == "unreachable":
        env["PREFECT_API_URL"] = f"http://127.0.0.1:{closed}/api"
    elif case == "unknown pool":
        pool = "nosuch"
    elif case == "other pool type":
        pool = "elsewhere"
        httpx.post(f"{server.api}/work_pools/", json={"name": pool, "type": "kubernetes"}, timeout=30)
    args = [cmd, "--work-pool" if cmd == "deploy" else "--pool", pool]
    if case != "no config":
        args += ["-c", str(settings)]
    empty = tmp_path / "empty"  # no ./autopgo.yaml
    empty.mkdir()
    done = subprocess.run([str(BIN / "autopgo"), *args], env=env, cwd=empty, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(expected.format(cmd=cmd, port=closed, api=server.api)), done.stderr


def _seconds_between(a: str, b: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def test_the_workers_environment_names_the_configuration_absolutely_and_ships_the_domains_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.worker import environment

    monkeypatch.chdir(tmp_path)
    env = environment({"PREFECT_LOGGING_EXTRA_LOGGERS": "mine", "OTHER": "kept"}, Path("autopgo.yaml"))
    assert env == {
        "PREFECT_LOGGING_EXTRA_LOGGERS": "mine,profiling",
        "OTHER": "kept",
        "AUTOPGO_CONFIG": str(tmp_path / "autopgo.yaml"),
    }
    assert environment({}, tmp_path / "autopgo.yaml")["PREFECT_LOGGING_EXTRA_LOGGERS"] == "profiling"


def test_a_run_is_on_an_interval_schedule_only_at_its_anchor_plus_whole_intervals() -> None:
    every_45s = IntervalSchedule(interval=timedelta(seconds=45), anchor_date=datetime(2020, 1, 1, tzinfo=UTC))
    assert on_schedule(datetime(2026, 12, 3, 15, 0, 0, tzinfo=UTC), every_45s)  # 45 divides the seconds since
    assert not on_schedule(datetime(2026, 12, 3, 15, 0, 30, tzinfo=UTC), every_45s)  # a point of an old 30 s one
    assert on_schedule(datetime(2020, 1, 1, 0, 0, 45), every_45s)  # a naive time is UTC
