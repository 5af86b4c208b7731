"""The embedded pipeline on one machine, `autopgo up`: starting its processes and supervising them.

Starts, in this order, a local Prefect server (SQLite under the data folder,
127.0.0.1, analytics off), the upload/download API, and a process serving
every deployment, each once the one before is ready; prints where the UI and
the API are; and then supervises them. A child that dies is restarted, with
backoff, once the rest of its process group is gone: the Prefect server too,
since SQLite leaves its database consistent after a crash and, its old
processes gone, no two servers write it at once. A child whose restarts keep
failing stops everything. Ctrl-C or SIGTERM stops all three. Each runs in its
own process group, which is signalled as a whole, so nothing they started is
left behind.

The pieces: ``RestartPolicy`` decides, from a child's past deaths alone,
whether and when to restart it; ``Child`` is the process handling (spawn,
readiness, stopping a whole group); ``Supervisor`` is the loop joining them.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from profiling.config import Config
from profiling.logs import LOG_LEVEL_ENV

from .settings import CONFIG_ENV, STATE_ENV

log = logging.getLogger(__name__)

STOP_TIMEOUT = 15.0
# The API server's variables for what the flows take from autopgo.yaml alone (where scrape runs
# upload, the store merges read), by the key they stand for: under `autopgo up` the API takes
# these from the file too, or the two would part.
FLOWS_READ_FROM_CONFIG = {"AUTOPGO_HOST": "api.url", "AUTOPGO_PORT": "api.url", "AUTOPGO_BLOB_STORE": "blob_store"}
GROUP_GONE_TIMEOUT = 10.0  # how long a restart waits for what a dead child left in its group to exit
POLL_EVERY = 0.5


@dataclass(frozen=True)
class Run:
    """One life of a child that has ended, in ``time.monotonic()`` seconds."""

    started: float
    ended: float

    @property
    def uptime(self) -> float:
        """Seconds the child was up in this life."""
        return self.ended - self.started


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart a child that died: exponential backoff, and when to give up.

    The delay starts at ``first_delay`` and doubles with each death in a row that
    came less than ``stable_after`` seconds after its start, up to ``max_delay``; a
    child that stayed up that long starts again from ``first_delay``. A child that
    died ``max_deaths`` times within ``window`` seconds is given up on.
    """

    first_delay: float = 1.0
    max_delay: float = 30.0
    stable_after: float = 60.0
    max_deaths: int = 5
    window: float = 300.0

    def restart_delay(self, deaths: Sequence[Run]) -> float | None:
        """Seconds to wait before restarting after the last of ``deaths`` (oldest first); None: give up."""
        if not deaths:
            raise ValueError("restart_delay needs at least one death")
        last = deaths[-1].ended
        if sum(1 for run in deaths if run.ended > last - self.window) >= self.max_deaths:
            return None
        short = 0  # the latest deaths in a row that each came soon after a start
        for run in reversed(deaths):
            if run.uptime >= self.stable_after:
                break
            short += 1
        doublings = min(max(short - 1, 0), 32)  # bounded: 2**32 s is past any max_delay
        return min(self.max_delay, self.first_delay * 2**doublings)


def describe_exit(returncode: int) -> str:
    """``exit status 1`` or ``killed by SIGKILL``, from a ``Popen.returncode``."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


@dataclass
class Child:
    """One supervised command, run in a process group of its own; ready when ``ready_url`` answers 200."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ready_url: str | None = None
    process: subprocess.Popen | None = None
    started: float = 0.0
    deaths: list[Run] = field(default_factory=list)

    def spawn(self) -> None:
        """Start the command in a process group of its own and note when (logged as a start, or a restart)."""
        self.process = subprocess.Popen(self.argv, env=self.env, start_new_session=True)
        self.started = time.monotonic()
        verb = "restarted" if self.deaths else "started"
        log.info("%s %s (pid %d): %s", verb, self.name, self.process.pid, " ".join(self.argv))

    def exit_status(self) -> int | None:
        """The return code once the process has exited; None while it runs (or before it is spawned)."""
        return None if self.process is None else self.process.poll()

    def wait_ready(self, timeout: float, stop: threading.Event) -> str | None:
        """None once ready (or once ``stop`` is set); else why it is not, in one line."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            status = self.process.poll()
            if status is not None:
                return f"{self.name} exited ({describe_exit(status)}) while starting"
            if self.ready_url is None or _answers(self.ready_url):
                return None
            if time.monotonic() > deadline:
                return f"{self.name} was not ready at {self.ready_url} within {timeout:.0f}s"
            stop.wait(0.3)
        return None

    def reap(self) -> Run:
        """Record the death of the exited process and end what it left in its group.

        Waits (boundedly) until the group is empty, so that a restart finds the port
        free and no leftover process still using the child's files.
        """
        assert self.process is not None and self.process.returncode is not None
        run = Run(self.started, time.monotonic())
        self.deaths.append(run)
        _signal_group(self.process, signal.SIGKILL)
        if not _group_gone(self.process.pid, GROUP_GONE_TIMEOUT):
            log.warning("what %s left in its process group has not exited yet", self.name)
        self.process = None
        return run

    def stop(self) -> None:
        """SIGTERM the group and wait up to STOP_TIMEOUT for the child, then SIGKILL whatever is left."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs; killing it", self.name, STOP_TIMEOUT)
        # Whatever the process left in its group (flow runs, server workers) goes too.
        _signal_group(process, signal.SIGKILL)
        process.wait()


@dataclass
class Supervisor:
    """Starts children in order, restarts those that die per ``policy``, stops them all."""

    children: list[Child]
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    ready_timeout: float = 120.0

    def start(self, stop: threading.Event) -> None:
        """Start each child and wait until it is ready; RuntimeError if one is not (nothing is restarted yet)."""
        for child in self.children:
            if stop.is_set():
                return
            child.spawn()
            reason = child.wait_ready(self.ready_timeout, stop)
            if reason is not None:
                raise RuntimeError(reason)

    def watch(self, stop: threading.Event) -> int:
        """Until ``stop`` is set (0) or a child is given up on (1), restarting those that die."""
        while not stop.wait(POLL_EVERY):
            for child in self.children:
                status = child.exit_status()
                if status is None:
                    continue
                reason = self._restart(child, status, stop)
                if reason is not None:
                    log.error("%s; stopping everything", reason)
                    return 1
                if stop.is_set():
                    break
        return 0

    def _restart(self, child: Child, status: int, stop: threading.Event) -> str | None:
        """Restart ``child``, which exited with ``status``, after the policy's delay; why not, if it gives up.

        A restart that dies again while starting is left for the next round of ``watch``.
        """
        run = child.reap()
        how = f"{describe_exit(status)} after {run.uptime:.0f}s up"
        delay = self.policy.restart_delay(child.deaths)
        if delay is None:
            deaths, window = self.policy.max_deaths, self.policy.window
            return f"{child.name} died {deaths} times within {window:.0f}s (the last: {how})"
        log.warning("%s died (%s); restarting it in %.0fs", child.name, how, delay)
        if stop.wait(delay):
            return None
        child.spawn()
        reason = child.wait_ready(self.ready_timeout, stop)
        if reason is not None and child.exit_status() is None:
            return reason
        return None

    def stop(self) -> None:
        """Stop every child, the last started first."""
        for child in reversed(self.children):
            child.stop()


@dataclass
class Embedded:
    """What `autopgo up` runs: the three children, their order and environment."""

    config: Config
    config_path: Path | None  # None: the defaults, no file
    data_dir: Path
    prefect_port: int = 4200
    log_level: str = "INFO"  # of the API and the flow server, which read it from LOG_LEVEL_ENV

    @property
    def prefect_url(self) -> str:
        """The local Prefect server's base URL (``http://127.0.0.1:<prefect_port>``)."""
        return f"http://127.0.0.1:{self.prefect_port}"

    def environment(self) -> dict[str, str]:
        """The children's environment: this process's, plus the local Prefect server's settings (home and SQLite
        database under ``data_dir/prefect``, created here), the log level, state folder and configuration file."""
        home = self.data_dir / "prefect"
        home.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            PREFECT_HOME=str(home),
            PREFECT_API_URL=f"{self.prefect_url}/api",
            PREFECT_SERVER_API_HOST="127.0.0.1",
            PREFECT_SERVER_API_PORT=str(self.prefect_port),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            DO_NOT_TRACK="1",
            # Pick up triggered and scheduled runs within a second, not the default ten.
            PREFECT_RUNNER_POLL_FREQUENCY="1",
            # Show the domain's own log lines in the Prefect UI with the flow run's.
            PREFECT_LOGGING_EXTRA_LOGGERS="profiling",
        )
        env[LOG_LEVEL_ENV] = self.log_level
        env[STATE_ENV] = str(self.data_dir / "state")
        if self.config_path is not None:
            env[CONFIG_ENV] = str(self.config_path)
        else:
            env.pop(CONFIG_ENV, None)
        return env

    def children(self) -> list[Child]:
        """The Prefect server, the API and the flow server, in the order they start."""
        env = self.environment()
        bin_dir = Path(sys.executable).parent
        prefect = Child(
            "prefect",
            [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.prefect_port)],
            env,
            ready_url=f"{self.prefect_url}/api/health",
        )
        # The API reads the flows' file (--config) in its own order, a variable before the file:
        # AUTOPGO_API_TOKEN before api.token, as scrape runs take it too.
        server = [
            str(bin_dir / "autopgo"),
            "server",
            "--events",
            "prefect",
            "--prefect-api-url",
            f"{self.prefect_url}/api",
        ]
        if self.config_path is not None:
            server += ["--config", str(self.config_path)]
        api_env = {name: value for name, value in env.items() if name not in FLOWS_READ_FROM_CONFIG}
        api = Child("api", server, api_env, ready_url=f"{self.config.api_url}/api/ready")
        flows = Child("flows", [sys.executable, "-m", "flows.serve"], env)
        return [prefect, api, flows]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def _group_gone(pgid: int, timeout: float) -> bool:
    """Whether process group ``pgid`` has no process left (zombies included) within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def run(
    config: Config, config_path: Path | None, data_dir: Path, prefect_port: int = 4200, *, log_level: str = "INFO"
) -> int:
    """Run the embedded pipeline until Ctrl-C or SIGTERM (0) or until a child is given up on (1)."""
    for name, key in FLOWS_READ_FROM_CONFIG.items():
        if os.environ.get(name, "").strip():
            log.warning("%s is ignored: the API and the flows take %s from the configuration", name, key)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    pipeline = Embedded(config, config_path, data_dir, prefect_port, log_level)
    supervisor = Supervisor(pipeline.children())
    try:
        supervisor.start(stop)
        if stop.is_set():
            return 0
        print(f"Prefect UI:  {pipeline.prefect_url}", flush=True)
        print(f"autopgo API: {config.api_url}", flush=True)
        return supervisor.watch(stop)
    finally:
        supervisor.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
