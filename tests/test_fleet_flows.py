"""The fleet design with a real Prefect server (`autopgo up`): many apps in one scrape run, each a
task run that fails alone; one throttled merge run for every app with pending uploads; a target
file's last good list that outlives the run that read it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakeapis import FakeKubernetes, kubeconfig
from processes import free_port, healthy, stop_group, wait_for
from sample_profiles import cpu_profile

from profiling.pprof import encode
from profiling.storage import open_store

pytestmark = pytest.mark.slow

GOOD = ["good-a", "good-b", "good-c"]
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class Targets:
    """Instances answering like net/http/pprof: /ok/... with a CPU profile, /fail/... with a 500."""

    def __init__(self) -> None:
        profile = encode(cpu_profile())
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.requests.append(self.path)
                ok = self.path.startswith("/ok/")
                body = profile if ok else b"profiler broke"
                self.send_response(200 if ok else 500)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Pipeline:
    prefect: str
    api: str
    blobs: Path
    targets_file: Path
    console: Path  # what `autopgo up` and the runs it serves print
    k8s_url: str  # a Kubernetes API that answers 500 to everything

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to the Prefect API, retried while a busy server answers 503."""

        def post() -> dict[str, Any] | None:
            response = httpx.post(f"{self.prefect}{path}", json=body, timeout=10)
            assert response.status_code in (200, 201, 503), f"{path}: {response.status_code} {response.text}"
            return response.json() if response.status_code != 503 else None

        return wait_for(f"POST {path}", post, 60, every=1)

    def run_now(self, apps: list[str]) -> dict[str, Any]:
        """A run of `scrape/now` for ``apps``, waited for to its final state."""
        deployment = httpx.get(f"{self.prefect}/deployments/name/scrape/now", timeout=10).json()
        run = self.create(f"/deployments/{deployment['id']}/create_flow_run", {"parameters": {"apps": apps}})
        return wait_for("the scrape run to end", lambda: self._final(run["id"]), 180, every=1)

    def _final(self, run_id: str) -> dict[str, Any] | None:
        run = httpx.get(f"{self.prefect}/flow_runs/{run_id}", timeout=10).json()
        return run if run["state"]["type"] in FINAL else None

    def task_runs(self, run_id: str, count: int) -> dict[str, dict[str, Any]]:
        """The run's task runs by name, once ``count`` of them have reached a final state."""

        def final() -> dict[str, dict[str, Any]] | None:
            body = {"flow_runs": {"id": {"any_": [run_id]}}}
            runs = httpx.post(f"{self.prefect}/task_runs/filter", json=body, timeout=10).json()
            done = {r["name"]: r for r in runs if r["state"] and r["state"]["type"] in FINAL}
            return done if len(done) >= count else None

        return wait_for("the task runs", final, 60, every=1)

    def logs(self, run_id: str) -> list[str]:
        body = {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}
        return [entry["message"] for entry in httpx.post(f"{self.prefect}/logs/filter", json=body, timeout=10).json()]

    def artifact(self, key: str) -> dict[str, Any]:
        """The latest artifact under ``key`` (its data is the markdown)."""
        body = {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1}
        found = httpx.post(f"{self.prefect}/artifacts/filter", json=body, timeout=10).json()
        assert found, f"no artifact {key}"
        return {**found[0], "markdown": found[0]["data"]}

    def final_runs(self, flow: str, state: str) -> list[dict[str, Any]]:
        return [run for run in self.flow_runs(flow) if run["state"] and run["state"]["type"] == state]

    def flow_runs(self, flow: str) -> list[dict[str, Any]]:
        body = {"flows": {"name": {"any_": [flow]}}}
        return httpx.post(f"{self.prefect}/flow_runs/filter", json=body, timeout=10).json()

    def merged_apps(self) -> set[str]:
        store = open_store(str(self.blobs))
        try:
            return {info.key.split("/")[0] for info in store.list() if info.key.endswith("/default.pgo")}
        finally:
            store.close()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    tmp = tmp_path_factory.mktemp("fleet")
    targets = Targets()
    fakes = contextlib.ExitStack()
    k8s = fakes.enter_context(FakeKubernetes([]).running())
    k8s.fail = "500"
    api_port, prefect_port, closed = free_port(), free_port(), free_port()
    targets_file = tmp / "targets.yaml"
    targets_file.write_text(f'- address: "{targets.address}"\n  path: /ok/filed\n')

    def app(name: str, source: str) -> str:
        return f"  - name: {name}\n    scrape:\n      every: 24h\n      duration: 1s\n      targets:\n{source}"

    static_good = lambda name: f'        static: [{{address: "{targets.address}", path: /ok/{name}}}]\n'  # noqa: E731
    config = tmp / "autopgo.yaml"
    config.write_text(
        # scrape runs upload with the file's token, which the API also needs for reads
        f"blob_store: {tmp / 'blobs'}\napi:\n  url: http://127.0.0.1:{api_port}\n  token: fleet-token\n"
        "  protect_reads: true\nsweep_every: 1h\napps:\n"
        + "".join(app(name, static_good(name)) for name in GOOD)
        + app(
            "bad-target",
            f'        static: [{{address: "{targets.address}", path: /fail/x}}, {{address: "127.0.0.1:{closed}"}}]\n',
        )
        + app("bad-source", f"        consul: {{address: 'http://127.0.0.1:{closed}', timeout: 2s}}\n")
        + app("filed", f"        file: {targets_file}\n")
        + app("k8s-down", f"        kubernetes: {{kubeconfig: {kubeconfig(tmp / 'kc', k8s.url, token='t')}}}\n")
        + app("bad-merge", static_good("bad-merge"))
    )
    log = (tmp / "up.log").open("wb")
    up = subprocess.Popen(
        [str(Path(sys.executable).parent / "autopgo"), "up", "-c", str(config), "--data", str(tmp / "data"),
         "--prefect-port", str(prefect_port)],
        env={k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AUTOPGO_"))},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    prefect = f"http://127.0.0.1:{prefect_port}/api"
    try:
        wait_for("the API", lambda: healthy(f"http://127.0.0.1:{api_port}/api/ready"), 180)
        wait_for("the deployments", lambda: healthy(f"{prefect}/deployments/name/scrape/now"), 180)
        yield Pipeline(prefect, f"http://127.0.0.1:{api_port}", tmp / "blobs", targets_file, tmp / "up.log", k8s.url)
    finally:
        try:
            stop_group(up)
        finally:
            log.close()
            targets.close()
            fakes.close()


def test_many_apps_in_one_run_each_failing_alone(pipeline: Pipeline) -> None:
    apps = [*GOOD, "bad-target", "bad-source"]
    run = pipeline.run_now(apps)
    assert run["state"]["type"] == "FAILED"
    assert "3 of 5 apps scraped" in run["state"]["message"]
    assert "bad-target" in run["state"]["message"] and "bad-source" in run["state"]["message"]

    tasks = pipeline.task_runs(run["id"], len(apps))
    assert set(tasks) == {f"scrape {app}" for app in apps}
    for app in GOOD:
        assert tasks[f"scrape {app}"]["state"]["type"] == "COMPLETED"
        assert tasks[f"scrape {app}"]["state"]["message"] == f"{app}: 1 uploaded, 0 failed of 1 targets"
    bad_target = tasks["scrape bad-target"]["state"]
    assert bad_target["type"] == "FAILED" and "HTTP 500: profiler broke" in bad_target["message"]
    assert "ConnectError" in bad_target["message"]
    bad_source = tasks["scrape bad-source"]["state"]
    assert bad_source["type"] == "FAILED" and bad_source["message"].startswith("bad-source: cannot list targets: ")
    assert "\n" not in bad_source["message"] + bad_target["message"]
    logs = pipeline.logs(run["id"])
    assert not [line for line in logs if "Traceback" in line or "NoneType" in line], logs
    assert all("\n" not in line for line in logs), logs


def test_a_source_that_cannot_list_is_one_line_without_traceback(pipeline: Pipeline) -> None:
    """The README's promise: a failed discovery is one line naming the app, the source, the URL and why,
    in what the pipeline prints and in the run's logs in Prefect alike; never a traceback."""
    printed_before = pipeline.console.stat().st_size
    run = pipeline.run_now(["k8s-down"])
    assert run["state"]["type"] == "FAILED"
    why = f"kubernetes: {pipeline.k8s_url}/api/v1/pods"
    finished = f"Flow run '{run['name']}' - Finished in state"

    def printed() -> list[str] | None:  # the run's lines, once its last one is out
        with pipeline.console.open("rb") as f:
            f.seek(printed_before)
            lines = f.read().decode(errors="replace").splitlines()
        return lines if any(finished in line for line in lines) else None

    def shipped() -> list[str] | None:  # the run's logs in Prefect, once its last one has landed
        lines = pipeline.logs(run["id"])
        return lines if any(line.startswith("Finished in state Failed('0 of 1 apps") for line in lines) else None

    console = wait_for("the run's last line printed", printed, 30)
    stored = wait_for("the run's last line in Prefect", shipped, 30)
    for where, lines in (("printed", console), ("in Prefect", stored)):
        # The API server, in `autopgo up` too, logs the source's failure on its own (once, at its start).
        about = [line for line in lines if why in line and " autopgo.api: " not in line]
        assert len(about) == 1, (where, about)
        assert "k8s-down" in about[0] and "HTTP 500: internal error: the leader is gone" in about[0], (where, about)
        assert not [line for line in lines if "Traceback" in line or "NoneType" in line], (where, lines)


def test_one_throttled_merge_run_merges_every_pending_app(pipeline: Pipeline) -> None:
    # The uploads of the run above each sent profile.uploaded; a few merge runs serve them all.
    wait_for("every scraped app merged", lambda: set(GOOD) <= pipeline.merged_apps(), 120, every=1)
    runs = pipeline.flow_runs("merge")
    assert 1 <= len(runs) <= 2, [r["name"] for r in runs]
    # No task run per app: each app's artifact says what its merge did.
    for app in GOOD:
        artifact = pipeline.artifact(f"merge-{app}")
        assert artifact["markdown"].startswith(f"# Merge of `{app}`"), artifact
        assert "| 1 |" in artifact["markdown"]  # one input merged


def test_an_app_whose_merge_fails_fails_alone_and_says_why(pipeline: Pipeline) -> None:
    store = open_store(str(pipeline.blobs))
    try:
        store.put("bad-merge/default.pgo", b"not a profile")  # the app's merged profile is corrupt
    finally:
        store.close()
    assert pipeline.run_now(["bad-merge", "good-a"])["state"]["type"] == "COMPLETED"
    failed = wait_for("a merge run to fail", lambda: pipeline.final_runs("merge", "FAILED"), 180, every=1)
    message = failed[0]["state"]["message"]
    assert "failed: bad-merge" in message and "good-a" not in message.split("failed:")[1], message
    artifact = pipeline.artifact("merge-bad-merge")["markdown"]
    assert artifact.startswith("# Merge of `bad-merge` failed") and "not a pprof profile" in artifact, artifact
    assert "\n" not in message
    store = open_store(str(pipeline.blobs))
    try:
        assert store.get("bad-merge/default.pgo") == b"not a profile"  # nothing lost: the upload stays staged
        assert [info.key for info in store.list("bad-merge/staging/")]
    finally:
        store.close()


def test_a_target_files_last_good_list_outlives_the_run(pipeline: Pipeline) -> None:
    first = pipeline.run_now(["filed"])
    assert first["state"]["type"] == "COMPLETED", first["state"]
    pipeline.targets_file.write_text("- address: [not, an, address\n")  # a broken edit
    time.sleep(0.01)
    second = pipeline.run_now(["filed"])  # another run: another process
    assert second["state"]["type"] == "COMPLETED", second["state"]
    tasks = pipeline.task_runs(second["id"], 1)
    assert tasks["scrape filed"]["state"]["message"] == "filed: 1 uploaded, 0 failed of 1 targets"
    # The run's logs are shipped in the background and may land after its final state.
    wait_for(
        "the run's log of the kept list",
        lambda: any("keeping the last good list of 1 targets" in line for line in pipeline.logs(second["id"])),
        30,
    )


def readme_automation() -> str:
    """The automation file the README shows for rebuilding on profile.merged."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("# rebuild-on-merge.yaml\n", 1)[1].split("```", 1)[0]
    return block


def test_profile_merged_reaches_prefect_and_the_readmes_automation_fires_on_it(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    flow = pipeline.create("/flows/", {"name": "build"})
    schema = {"type": "object", "properties": {"app": {"type": "string"}, "batch": {"type": "string"}}}
    build = pipeline.create(
        "/deployments/", {"name": "checkout", "flow_id": flow["id"], "parameter_openapi_schema": schema}
    )
    automation = tmp_path / "rebuild-on-merge.yaml"
    automation.write_text(
        readme_automation().replace("autopgo.app.checkout", "autopgo.app.good-b").replace(
            "YOUR-BUILD-DEPLOYMENT-ID", build["id"]
        )
    )
    env = {**os.environ, "PREFECT_API_URL": pipeline.prefect}
    created = subprocess.run(
        [str(Path(sys.executable).parent / "prefect"), "automation", "create", "--from-file", str(automation)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert created.returncode == 0 and "Failed" not in created.stdout, created.stdout + created.stderr
    time.sleep(2)  # the automation is loaded by the server's triggers service
    assert pipeline.run_now(["good-b"])["state"]["type"] == "COMPLETED"

    def merged_events() -> list[dict[str, Any]]:
        body = {"filter": {"event": {"name": ["profile.merged"]}, "resource": {"id": ["autopgo.app.good-b"]}}}
        return httpx.post(f"{pipeline.prefect}/events/filter", json=body, timeout=10).json()["events"]

    events = wait_for("profile.merged for good-b", merged_events, 180, every=1)
    payload = events[0]["payload"]
    assert payload["app"] == "good-b" and payload["mergedKey"] == "good-b/default.pgo"
    assert payload["profileKey"].startswith("good-b/staging/") and payload["uploads"] >= 1 and payload["batchId"]

    def build_runs() -> list[dict[str, Any]]:
        body = {"deployments": {"id": {"any_": [build["id"]]}}}
        return httpx.post(f"{pipeline.prefect}/flow_runs/filter", json=body, timeout=10).json()

    runs = wait_for("the automation to run the build deployment", build_runs, 60, every=1)
    assert runs[0]["parameters"]["app"] == "good-b"
    batch = runs[0]["parameters"]["batch"]  # the event that fired it is stored a moment later
    wait_for("the firing event", lambda: batch in {e["payload"]["batchId"] for e in merged_events()}, 30)
