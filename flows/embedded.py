"""The embedded pipeline on one machine: `autopgo up`.

Starts, in this order, a local Prefect server (SQLite under the data folder,
127.0.0.1, analytics off), the upload/download API, and a process serving
every deployment; prints where the UI and the API are; and on Ctrl-C, SIGTERM
or the death of any of them stops all three. Each runs in its own process
group, which is signalled as a whole, so nothing they started is left behind.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from profiling.config import Config

from .settings import CONFIG_ENV, STATE_ENV

log = logging.getLogger(__name__)

STOP_TIMEOUT = 15.0


@dataclass
class Embedded:
    config: Config
    config_path: Path | None  # None: the defaults, no file
    data_dir: Path
    prefect_port: int = 4200
    ready_timeout: float = 120.0
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def prefect_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}"

    def environment(self) -> dict[str, str]:
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
        env[STATE_ENV] = str(self.data_dir / "state")
        if self.config_path is not None:
            env[CONFIG_ENV] = str(self.config_path)
        else:
            env.pop(CONFIG_ENV, None)
        return env

    def start(self) -> None:
        env = self.environment()
        bin_dir = Path(sys.executable).parent
        self._spawn(
            "prefect",
            [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.prefect_port)],
            env,
        )
        self._wait_ready("prefect", f"{self.prefect_url}/api/health")
        host, port = self.config.listen_address()
        server = [
            str(bin_dir / "autopgo"),
            "server",
            "--host",
            host,
            "--port",
            str(port),
            "--blob-store",
            self.config.blob_store,
            "--events",
            "prefect",
            "--prefect-api-url",
            f"{self.prefect_url}/api",
        ]
        if self.config_path is not None:
            server += ["--config", str(self.config_path)]
        if self.config.api_token:
            env = {**env, "AUTOPGO_API_TOKEN": self.config.api_token}
        self._spawn("api", server, env)
        self._wait_ready("api", f"{self.config.api_url}/api/ready")
        self._spawn("flows", [sys.executable, "-m", "flows.serve"], env)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log.info("starting %s: %s", name, " ".join(argv))
        self.processes[name] = subprocess.Popen(argv, env=env, start_new_session=True)

    def _wait_ready(self, name: str, url: str) -> None:
        deadline = time.monotonic() + self.ready_timeout
        process = self.processes[name]
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with status {process.returncode} while starting")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{name} was not ready at {url} within {self.ready_timeout:.0f}s")

    def wait(self, stop: threading.Event) -> int:
        """Until ``stop`` is set (0) or a process dies (1)."""
        while not stop.wait(0.5):
            for name, process in self.processes.items():
                if process.poll() is not None:
                    log.error("%s exited with status %s; stopping everything", name, process.returncode)
                    return 1
        return 0

    def stop(self) -> None:
        for name, process in reversed(list(self.processes.items())):
            _stop_group(name, process)
        self.processes.clear()


def _stop_group(name: str, process: subprocess.Popen) -> None:
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs; killing it", name, STOP_TIMEOUT)
    # Whatever the process left in its group (flow runs, server workers) goes too.
    _signal_group(process, signal.SIGKILL)
    process.wait()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def run(config: Config, config_path: Path | None, data_dir: Path, prefect_port: int = 4200) -> int:
    """Run the embedded pipeline until Ctrl-C or SIGTERM; returns the exit status."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    pipeline = Embedded(config, config_path, data_dir, prefect_port)
    try:
        pipeline.start()
        print(f"Prefect UI:  {pipeline.prefect_url}", flush=True)
        print(f"autopgo API: {config.api_url}", flush=True)
        return pipeline.wait(stop)
    finally:
        pipeline.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
