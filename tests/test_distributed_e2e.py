"""autopgo spread over machines, end to end, with real parts only (all on 127.0.0.1):

- the distributed Prefect stack of ``distributed.py`` (PostgreSQL, Redis with prefect-redis, two
  API servers, one services process) and one SeaweedFS bucket as autopgo's blob store;
- two ``autopgo server`` processes on that bucket, each sending events to another Prefect API
  server, the second with its clock 5 minutes ahead (``AUTOPGO_CLOCK_OFFSET``: the machine's
  clock is never touched);
- ``autopgo deploy --create-pool``, the zombie-run automation the README shows
  (``prefect automation create --from-file crash-zombie-runs.yaml``), and two ``autopgo worker`` processes, each polling another
  API server, their flow runs sending heartbeats (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``).

Uploads of uniquely marked real Go profiles for three apps go to both API servers; one app is
deleted (through the server whose clock is ahead) once its profile is served, then uploaded
again; the worker running the merge is killed -9 with its flow run, as a machine dies, and more
uploads follow. Then every app serves, through both servers, exactly google/pprof's merge of the
uploads acknowledged after its delete, each once; the killed run ends Crashed (the automation),
every other run reaches a final state, and nothing of the stack is left running.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from distributed import Stack, distributed_stack, readme_block, run_client, start_autopgo_server, start_autopgo_worker
from processes import BIN, processes_using, wait_for
from seaweed import SeaweedFS, seaweedfs  # noqa: F401  (seaweedfs is a session fixture)

from profiling.pipeline import DEFAULT_RECOVER_AFTER, LABEL_COMMENTS, time_of
from profiling.pprof import (
    BUILTIN_NEVER_INLINE,
    Function,
    Line,
    Location,
    Profile,
    Sample,
    decode,
    encode,
    guard_never_inline,
    merge,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

POOL = "autopgo"
SKEW = "5m"
SKEW_NS = 5 * 60 * 1_000_000_000
APPS = ("alpha", "beta", "gone")
DELETED = "gone"
MARKER = "autopgo.test.upload_"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RECOVER_WAIT = DEFAULT_RECOVER_AFTER.total_seconds() + 120  # then a sweep (every 60 s) takes the batch over


@dataclass(frozen=True)
class Upload:
    """An acknowledged upload: its app, its marker number, the server that took it, its staged key."""

    app: str
    n: int
    server: int
    key: str
    body: bytes = field(repr=False)


@dataclass
class Uploader:
    """Uploads real Go profiles, each marked by a function of its own, and keeps what was acknowledged."""

    servers: list[str]
    bases: list[Profile]
    done: list[Upload] = field(default_factory=list)

    def upload(self, app: str, server: int) -> Upload:
        n = len(self.done)
        body = encode(marked(self.bases[n % len(self.bases)], n))
        response = httpx.post(f"{self.servers[server]}/api/profile/{app}", content=body, timeout=60)
        assert response.status_code == 201, response.text
        upload = Upload(app, n, server, response.json()["key"], body)
        self.done.append(upload)
        return upload

    def round(self, apps: Iterable[str]) -> list[Upload]:
        """One upload per app through each server."""
        return [self.upload(app, server) for app in apps for server in range(len(self.servers))]


def marked(base: Profile, n: int) -> Profile:
    """``base`` with one more sample, in a function named after ``n`` (found once in a merge)."""
    function_id = max((f.id for f in base.functions), default=0) + 1
    location_id = max((loc.id for loc in base.locations), default=0) + 1
    values = tuple(1 if t.type == "samples" else base.period for t in base.sample_types)
    return dataclasses.replace(
        base,
        samples=[*base.samples, Sample((location_id,), values)],
        locations=[*base.locations, Location(location_id, 0, 0, (Line(function_id, 11),))],
        functions=[*base.functions, Function(function_id, f"{MARKER}{n}", f"{MARKER}{n}", "upload.go", 10)],
    )


def markers(p: Profile) -> dict[int, int]:
    """Samples of each upload's marker function in ``p``."""
    names = {f.id: f.name for f in p.functions}
    leaf = {loc.id: names[loc.lines[0].function_id] for loc in p.locations if loc.lines}
    found: dict[int, int] = {}
    for s in p.samples:
        if not s.location_ids:  # Go records some samples without a stack
            continue
        name = leaf.get(s.location_ids[0], "")
        if name.startswith(MARKER):
            n = int(name.removeprefix(MARKER))
            found[n] = found.get(n, 0) + s.values[0]
    return found


def content(p: Profile) -> dict[str, Any]:
    """What a merge means, whatever the order its inputs came in (which fixes only the ids):
    sample values summed by stack (resolved to mappings, addresses, functions and lines) and
    labels, and the header; without the comments that label batches and generations."""
    functions = {f.id: f[1:] for f in p.functions}
    mappings = {m.id: (m.file, m.build_id, m.start, m.limit, m.offset) for m in p.mappings}
    locations = {
        loc.id: (mappings.get(loc.mapping_id), loc.address, tuple((functions[ln.function_id], ln.line) for ln in loc.lines))
        for loc in p.locations
    }
    samples: dict[Any, tuple[int, ...]] = {}
    for s in p.samples:
        key = (tuple(locations[i] for i in s.location_ids), s.labels)
        before = samples.get(key, (0,) * len(s.values))
        samples[key] = tuple(a + b for a, b in zip(before, s.values, strict=True))
    return {
        "header": (tuple(p.sample_types), p.period_type, p.period, p.duration_nanos, p.default_sample_type),
        "comments": sorted(c for c in p.comments if not c.startswith(LABEL_COMMENTS)),
        "samples": samples,
    }


def expected_content(uploads: list[Upload]) -> dict[str, Any]:
    """The engine's merge (google/pprof's ``Merge``) of ``uploads``, guarded as the pipeline guards it."""
    return content(guard_never_inline(merge([decode(u.body) for u in uploads]), BUILTIN_NEVER_INLINE))


def served(server: str, app: str) -> Profile | None:
    response = httpx.get(f"{server}/api/profile/{app}", timeout=30)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return decode(response.content)


def serves(servers: list[str], app: str, uploads: list[Upload]) -> bool:
    """Whether every server serves exactly the merge of ``uploads`` for ``app``, each once."""
    want = {u.n: 1 for u in uploads}
    for server in servers:
        p = served(server, app)
        if p is None or markers(p) != want:
            return False
    return True


def test_servers_with_skewed_clocks_and_a_killed_worker_lose_nothing_and_leave_no_run_stuck(
    seaweedfs: SeaweedFS,  # noqa: F811
    cpu_profiles: list[Path],
    tmp_path: Path,
) -> None:
    store_url = seaweedfs.url(f"e2e-{uuid.uuid4().hex[:8]}")
    config = tmp_path / "autopgo.yaml"
    config.write_text(f'blob_store: "{store_url}"\n')  # sweep_every: the default, 60s
    bases = [decode(path.read_bytes()) for path in cpu_profiles]

    with distributed_stack(seaweedfs) as stack:
        autopgo = str(BIN / "autopgo")
        run_client(stack, "deploy", [autopgo, "deploy", "-c", str(config), "--work-pool", POOL, "--create-pool"])
        automation = tmp_path / "crash-zombie-runs.yaml"
        automation.write_text(readme_block("# crash-zombie-runs.yaml\n"))
        run_client(stack, "automation", [str(BIN / "prefect"), "automation", "create", "--from-file", str(automation)], api=1)

        servers = [
            start_autopgo_server(stack, i, ["--blob-store", store_url, "--workers", "1"], AUTOPGO_CLOCK_OFFSET=offset)
            for i, offset in enumerate(["0", SKEW])
        ]
        workers = [start_autopgo_worker(stack, i, POOL, config, PREFECT_WORKER_QUERY_SECONDS="1") for i in range(2)]
        prefect = stack.api_urls[0]
        merge_deployment = wait_for("the merge deployment", lambda: deployment_id(prefect, "merge/on-upload"), 60)

        uploader = Uploader(servers, bases)
        before = uploader.round(APPS)
        now = time.time_ns()
        skewed = [u for u in before if u.server == 1]
        assert all(time_of(u.key) - now > SKEW_NS - 60 * 10**9 for u in skewed), [u.key for u in skewed]

        # A merge run takes the uploads; once the app to delete is served, delete it through
        # the server whose clock is ahead, and upload to it again through both.
        merge_run = wait_for("a merge run on a worker", lambda: running_on_worker(stack, prefect, merge_deployment), 180)
        wait_for(f"{DELETED} merged", lambda: serves(servers, DELETED, [u for u in before if u.app == DELETED]), 120)
        response = httpx.delete(f"{servers[1]}/api/profile/{DELETED}", timeout=30)
        assert response.status_code == 202, response.text
        for server in servers:
            assert served(server, DELETED) is None  # hidden at once, through either server
        after = uploader.round(APPS)

        # The machine of the worker running the merge dies: the worker and its flow run.
        run_id, worker = merge_run
        assert flow_run_state(prefect, run_id) == "RUNNING"
        killed = kill_machine(stack, worker, workers)
        assert killed, f"no process of worker{worker} to kill"
        later = uploader.round(APPS)

        survivor = 1 - worker
        assert workers[survivor].popen.poll() is None
        for app in APPS:
            acknowledged = [u for u in uploader.done if u.app == app and (app != DELETED or u in after + later)]
            # A batch the killed run left open is taken over after DEFAULT_RECOVER_AFTER (5 minutes).
            whole = wait_for_or_false(lambda: serves(servers, app, acknowledged), RECOVER_WAIT)
            assert whole, f"{app}: served {[markers(p) if p else None for p in (served(s, app) for s in servers)]}, " \
                f"acknowledged {sorted(u.n for u in acknowledged)}"
            for server in servers:
                p = served(server, app)
                assert p is not None and content(p) == expected_content(acknowledged), f"{app} through {server}"
        assert not set(markers(served(servers[0], DELETED))) & {u.n for u in before}  # type: ignore[arg-type]

        # No run stays stuck: the dead machine's run is marked Crashed by the automation once
        # its heartbeats stop, and every other run ends.
        state = wait_for("the killed run to end", lambda: final_state(prefect, run_id), 240, every=2)
        assert state == "CRASHED", state
        stuck: list[str] = []

        def all_ended() -> bool:
            stuck[:] = unfinished(prefect)
            return not stuck

        assert wait_for_or_false(all_ended, 240), f"flow runs still not ended: {stuck}"
        for i, worker_process in enumerate(workers):
            if i != worker:
                assert worker_process.popen.poll() is None, stack.log_of(f"worker{i}")[-3000:]

    assert stack.leftovers() == []


def deployment_id(api_url: str, name: str) -> str | None:
    response = httpx.get(f"{api_url}/deployments/name/{name}", timeout=10)
    return response.json()["id"] if response.is_success else None


def flow_runs(api_url: str, **filters: Any) -> list[dict[str, Any]]:
    response = httpx.post(f"{api_url}/flow_runs/filter", json={"flow_runs": filters, "limit": 200}, timeout=10)
    response.raise_for_status()
    return response.json()


def flow_run_state(api_url: str, flow_run_id: str) -> str | None:
    flow_run = httpx.get(f"{api_url}/flow_runs/{flow_run_id}", timeout=10).json()
    return (flow_run.get("state") or {}).get("type")


def final_state(api_url: str, flow_run_id: str) -> str | None:
    state = flow_run_state(api_url, flow_run_id)
    return state if state in FINAL else None


def unfinished(api_url: str) -> list[str]:
    """Runs started or taken by a worker and not ended (scheduled runs are not yet anyone's)."""
    runs = flow_runs(api_url, state={"type": {"any_": ["PENDING", "RUNNING", "CANCELLING"]}})
    return [f"{r['name']} {r['id']} of deployment {r['deployment_id']}: {r['state']['name']} since "
            f"{r['state']['timestamp']}" for r in runs]


def wait_for_or_false(check: Callable[[], bool], timeout: float) -> bool:
    """Whether ``check`` came true within ``timeout`` seconds (asked every second)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


def running_on_worker(stack: Stack, api_url: str, deployment: str) -> tuple[str, int] | None:
    """A Running flow run of ``deployment`` and the worker whose child process runs it."""
    runs = flow_runs(api_url, deployment_id={"any_": [deployment]}, state={"type": {"any_": ["RUNNING"]}})
    for flow_run in runs:
        pids = set(processes_using(flow_run["id"]))
        for i in range(2):
            if pids & set(processes_using(worker_home(stack, i))):
                return flow_run["id"], i
    return None


def worker_home(stack: Stack, i: int) -> str:
    """The Prefect home of worker ``i``: in its environment and its flow runs'."""
    return f"PREFECT_HOME={stack.workdir / 'homes' / f'worker{i}'}\0"


def kill_machine(stack: Stack, i: int, workers: list[Any]) -> list[int]:
    """SIGKILL worker ``i``'s process group and every process it started (its flow runs, which
    Prefect starts in groups of their own), as when its machine dies."""
    pids = processes_using(worker_home(stack, i))
    os.killpg(workers[i].popen.pid, signal.SIGKILL)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    workers[i].popen.wait(30)
    wait_for(f"worker{i}'s processes to die", lambda: not processes_using(worker_home(stack, i)), 30)
    return pids
