"""The whole pipeline with real parts only: `autopgo up` (a real Prefect server on SQLite, the
API and the served deployments), the project's Go service under load, a scrape run by its
deployment, uploads through the API, a merge run created by the upload event, a download that
equals google/pprof's merge of what was scraped, `go build -pgo` on it, then a delete. Reads are
protected, with the token in the environment only: the API, the scrape runs and the CLI take it there.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import harness
import httpx
import pytest
from processes import free_port, healthy, processes_using, stop_group, wait_for

from profiling.pipeline import LABEL_COMMENTS, generation_key
from profiling.pprof import BUILTIN_NEVER_INLINE, NOINLINE_SUFFIX, Profile, guard_never_inline, read_profile
from profiling.storage import open_store

pytestmark = pytest.mark.slow

APP = "e2e"
TOKEN = "e2e-token-1234"
RUNTIME = r"^runtime\."  # a never_inline pattern that matches callees in any Go CPU profile


class RecordingProxy:
    """Forwards /debug/pprof/profile to a Go service and keeps a copy of every profile it served."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.profiles: list[bytes] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                response = httpx.get(f"{proxy.upstream}{self.path}", timeout=120)
                if response.status_code == 200:
                    proxy.profiles.append(response.content)
                self.send_response(response.status_code)
                self.send_header("Content-Length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> RecordingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def strip_batch_comments(p: Profile) -> Profile:
    p.comments = [c for c in p.comments if not c.startswith(LABEL_COMMENTS)]
    return p


def test_scrape_merge_download_build_delete(service_binary: Path, tmp_path: Path) -> None:
    api_port, prefect_port = free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}"
    prefect = f"http://127.0.0.1:{prefect_port}/api"
    blobs = tmp_path / "blobs"
    data = tmp_path / "data"

    with harness.Service(service_binary) as one, harness.Service(service_binary) as two, RecordingProxy(
        one.url
    ) as proxy_one, RecordingProxy(two.url) as proxy_two:
        config = tmp_path / "autopgo.yaml"
        config.write_text(
            f"""
blob_store: {blobs}
api:
  url: {api}
  protect_reads: true
sweep_every: 1h
apps:
  - name: {APP}
    scrape:
      every: 24h
      duration: 1s
      sample_size: 2
      targets:
        static:
          - {{address: "{proxy_one.address}"}}
          - {{address: "{proxy_two.address}"}}
    never_inline: ['{RUNTIME}']
"""
        )
        # AUTOPGO_PORT would part the API from the flows, which upload to api.url: up ignores it.
        env = {**os.environ, "PREFECT_API_URL": prefect, "AUTOPGO_API_TOKEN": TOKEN, "AUTOPGO_PORT": str(free_port())}
        up_log = tmp_path / "up.log"  # what `autopgo up` and its children log, at the default level
        with up_log.open("wb") as log_file:
            up = subprocess.Popen(
                [str(Path(sys.executable).parent / "autopgo"), "up", "-c", str(config), "--data", str(data),
                 "--prefect-port", str(prefect_port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                start_new_session=True,
            )
        try:
            wait_for("the API", lambda: healthy(f"{api}/api/ready"), 120)
            deployment = wait_for(
                "the scrape deployment",
                lambda: _json(httpx.get(f"{prefect}/deployments/name/scrape/now", timeout=5)),
                120,
            )
            run_now = {"parameters": {"apps": [APP]}}
            wait_for(
                "a scrape run to be created",
                lambda: httpx.post(f"{prefect}/deployments/{deployment['id']}/create_flow_run", json=run_now, timeout=10)
                .is_success,
                60,
            )

            wait_for("two scraped profiles", lambda: len(proxy_one.profiles) + len(proxy_two.profiles) >= 2, 120)
            scraped_dir = tmp_path / "scraped"
            scraped_dir.mkdir()
            scraped = []
            for i, body in enumerate(proxy_one.profiles + proxy_two.profiles):
                scraped.append(scraped_dir / f"{i}.pb.gz")
                scraped[-1].write_bytes(body)
            expected = []
            for order in (scraped, scraped[::-1]):
                out = tmp_path / f"pprof-{len(expected)}.pb.gz"
                harness.pprof_merge(order, out)
                expected.append(guard_never_inline(read_profile(out), [*BUILTIN_NEVER_INLINE, re.compile(RUNTIME)]))

            downloaded = tmp_path / "default.pgo"
            cli = [str(Path(sys.executable).parent / "autopgo")]
            cli_env = {**os.environ, "AUTOPGO_API_TOKEN": TOKEN}

            def merged_as_expected() -> bool:
                result = subprocess.run(
                    [*cli, "download", APP, "-o", str(downloaded), "--api-url", api], capture_output=True, env=cli_env
                )
                return result.returncode == 0 and strip_batch_comments(read_profile(downloaded)) in expected

            wait_for("the merged profile of both uploads", merged_as_expected, 120, every=1)
            # The app's never_inline applied: runtime functions the compiler sees as callees are renamed.
            assert any(fn.name.endswith(NOINLINE_SUFFIX) for fn in read_profile(downloaded).functions)
            artifacts = wait_for(
                "the merge run's artifact",
                lambda: httpx.post(
                    f"{prefect}/artifacts/filter", json={"artifacts": {"key": {"any_": [f"merge-{APP}"]}}}, timeout=10
                ).json(),
                60,
            )
            assert "Top functions" in artifacts[0]["data"] and "inputs merged" in artifacts[0]["data"]
            top = artifacts[0]["data"].split("Top functions", 1)[1]
            # flat and cum as pprof prints them (0.01s), never raw nanoseconds
            unit = r"[0-9.]+(ns|us|ms|s|hrs)"
            assert re.search(rf"^\| {unit} \| [0-9.]+% \| {unit} \| [0-9.]+% \| `", top, re.M), top
            # and what PGO acts on: the hottest call edges, each with its share
            assert re.search(r"^\| [0-9.]+% \| \d+ \| `\S+ -> \S+ \(line \+\d+\)` \|$", artifacts[0]["data"], re.M)
            assert not re.search(r"\| \d{5,} \|", top), top

            binary = harness.build_service(tmp_path, pgo=downloaded)
            assert "-pgo=" in harness.go("version", "-m", str(binary))

            assert httpx.get(f"{api}/api/profile/{APP}", timeout=10).status_code == 401  # reads are protected
            subprocess.run([*cli, "delete", APP, "--api-url", api], check=True, env=cli_env)
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            assert httpx.get(f"{api}/api/profile/{APP}", headers=bearer, timeout=10).status_code == 404  # hidden at once
            store = open_store(str(blobs))
            wait_for(
                "the delete flow",
                lambda: [i.key for i in store.list(f"{APP}/")] == [generation_key(APP)],  # all but the generation
                120,
            )
        finally:
            status = stop_group(up)
    assert status == 0
    log = up_log.read_text(errors="replace")
    # the served runs' lines reach autopgo up's output: what the merge did for the app
    assert "started flows" in log and f"{APP}: 1 batches, " in log, log[-3000:]
    # the API's settings: the environment's token, the file's address and protection
    for line in (
        "setting token = set (from env AUTOPGO_API_TOKEN)",
        f"setting port = {api_port} (from config {config} (api.url))",
        f"setting protect_reads = True (from config {config} (api.protect_reads))",
        "AUTOPGO_PORT is ignored: the API and the flows take api.url from the configuration",
    ):
        assert line in log, line
    assert TOKEN not in log
    # no line per HTTP request sent: readiness checks, events, scrapes, uploads
    assert [line for line in log.splitlines() if "HTTP Request:" in line] == []
    assert wait_for("no process left behind", lambda: not processes_using(str(data)), 20) is True


def _json(response: httpx.Response):
    return response.json() if response.is_success else None
