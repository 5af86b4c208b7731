"""Benchmark: upload throughput and latency of the API server against a bare ceiling.

What it measures
    16 client threads (one ``httpx.Client`` each, keep-alive) upload real Go
    CPU profiles, ``--requests`` in all (2000 by default, after a warm-up of
    ``--warmup``), as fast as the server answers, against, in the same run:

      (a) ``autopgo server`` (a subprocess: FileStore in a temporary
          directory, LogEventSink, the default INFO log to a file and the
          default number of validation worker processes, or
          ``AUTOPGO_WORKERS``), which validates each profile with the
          engine, checks it is usable for PGO, stages it with a durable
          create-only write (fsync) and emits the event;
      (b) a bare ``http.server.ThreadingHTTPServer`` (a subprocess too) whose
          handler only reads the body and writes it to a new file: the
          ceiling of Python's HTTP server on this machine with this client.

    Reported per server: uploads/s (requests over wall time), and the median
    and 99th percentile of each request's latency; then (a)'s throughput as a
    share of (b)'s, and the CPU time each server process and the clients
    spent per upload. ``--rounds`` repeats both, alternating, and reports
    the round with the median throughput. The target is at least 70% of the
    ceiling's throughput and a p99 under 100 ms.

    On a machine with few cores the clients, the server and its validation
    workers compete for them: the CPU figures show how much of the gap is
    work the ceiling does not do (decoding each profile, fsyncing it).

Profiles
    ``--scrape`` (16) real CPU profiles of about 25 KB each, cached in
    bench/.data/ingest-profiles/ (git-ignored): the first run builds the Go
    test service (tests/goservice) into bench/.data/ and scrapes a fresh
    instance of it for 2 seconds per profile.

How to run (by hand, from the project root; never by pytest)
    .venv/bin/python bench/ingest.py
    .venv/bin/python bench/ingest.py --requests 5000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "bench" / ".data"
PROFILE_DIR = DATA_DIR / "ingest-profiles"
PROFILE_SECONDS = 2
CLIENTS = 16
DEFAULT_REQUESTS = 2000
DEFAULT_WARMUP = 200
DEFAULT_SCRAPE = 16
TARGET_SHARE = 0.70
TARGET_P99_MS = 100.0
APP = "bench"

sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from processes import terminate  # noqa: E402


# --------------------------------------------------------------------------- profiles


def load_profiles(scrape: int) -> list[bytes]:
    paths = sorted(PROFILE_DIR.glob("cpu*.pb.gz"))
    if not paths:
        paths = scrape_profiles(scrape)
    return [p.read_bytes() for p in paths]


def scrape_profiles(n: int) -> list[Path]:
    import harness

    print(
        f"no cached profiles: building the Go test service into {DATA_DIR} and scraping {n} "
        f"({PROFILE_SECONDS}s each) ...",
        flush=True,
    )
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    binary = harness.build_service(DATA_DIR)
    paths = []
    for i in range(n):
        # a fresh instance each time: the service's profiles grow with its uptime
        with harness.Service(binary).start() as service:
            path = PROFILE_DIR / f"cpu{i:03d}.pb.gz"
            path.write_bytes(service.profile(seconds=PROFILE_SECONDS))
            paths.append(path)
    return paths


# --------------------------------------------------------------------------- servers


class BareHandler(BaseHTTPRequestHandler):
    """Reads the body, writes it to a new file, answers 201 with a small JSON body."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    directory: Path
    names = count()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        name = f"{next(self.names):08d}.pb.gz"
        (self.directory / name).write_bytes(body)
        answer = json.dumps({"key": name}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return None


class BareServer(ThreadingHTTPServer):
    request_queue_size = 128  # the listen backlog, as the API server's
    daemon_threads = True


def serve_bare(directory: str) -> None:
    BareHandler.directory = Path(directory)
    server = BareServer(("127.0.0.1", 0), BareHandler)
    print(f"bare server listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


@dataclass
class Server:
    name: str
    process: subprocess.Popen[str]
    url: str

    def stop(self) -> None:
        terminate(self.process, 30)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start(name: str, command: Sequence[str], log_path: Path) -> Server:
    with open(log_path, "w") as log:
        process = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=log, text=True)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if "listening on " not in line:
        process.kill()
        process.wait()
        raise RuntimeError(f"{name} did not start; see {log_path}")
    return Server(name, process, line.rsplit(" ", 1)[-1])


def start_autopgo(work: Path) -> Server:
    autopgo = Path(sys.executable).with_name("autopgo")
    command = [
        str(autopgo), "server", "--host", "127.0.0.1", "--port", "0",
        "--blob-store", f"file://{work}/blobs", "--events", "log", "--log-level", "INFO",
    ]  # fmt: skip
    return start("autopgo server", command, work / "autopgo.log")


def start_bare(work: Path) -> Server:
    (work / "bare").mkdir(exist_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--serve-bare", str(work / "bare")]
    return start("bare ThreadingHTTPServer", command, work / "bare.log")


# --------------------------------------------------------------------------- load


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User + system CPU time so far of a process, and of its live descendants (Linux /proc).

    The descendants count: the API server validates in worker processes.
    """
    own = descendants = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(child) for child in (task / "children").read_text().split())
        except FileNotFoundError:
            continue  # exited meanwhile
        if current == pid:
            own = seconds
        else:
            descendants += seconds
    return own, descendants


@dataclass(frozen=True)
class Result:
    server: str
    requests: int
    seconds: float
    latencies_ms: list[float]
    server_cpu: float  # seconds of CPU time of the server process during the run
    workers_cpu: float  # seconds of CPU time of its child processes (validation workers)
    client_cpu: float  # seconds of this (client) process's CPU time during the run

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def line(self) -> str:
        return (
            f"{self.server:<26} {self.rate:8.0f} uploads/s   p50 {self.percentile(0.50):6.1f} ms"
            f"   p99 {self.percentile(0.99):6.1f} ms   CPU per upload:"
            f" server {self.server_cpu / self.requests * 1000:.2f} ms"
            f" + workers {self.workers_cpu / self.requests * 1000:.2f} ms,"
            f" clients {self.client_cpu / self.requests * 1000:.2f} ms"
        )


def load(url: str, profiles: list[bytes], requests: int) -> tuple[float, list[float]]:
    """Upload ``requests`` profiles from CLIENTS threads; wall time and per-request latencies."""
    import httpx

    tickets = iter(range(requests))
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    ready = threading.Barrier(CLIENTS + 1)

    def client() -> None:
        mine: list[float] = []
        with httpx.Client(base_url=url, timeout=60) as c:
            ready.wait()
            try:
                while True:
                    with lock:
                        i = next(tickets, None)
                    if i is None:
                        break
                    started = time.perf_counter()
                    response = c.post(f"/api/profile/{APP}", content=profiles[i % len(profiles)])
                    mine.append((time.perf_counter() - started) * 1000)
                    if response.status_code != 201:
                        errors.append(f"{response.status_code} {response.text[:200]}")
                        break
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    ready.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed against {url}, e.g. {errors[0]}")
    return elapsed, latencies


def measure(server: Server, profiles: list[bytes], requests: int, warmup: int) -> Result:
    load(server.url, profiles, warmup)
    (server_before, workers_before), client_before = cpu_seconds(server.process.pid), time.process_time()
    seconds, latencies = load(server.url, profiles, requests)
    server_after, workers_after = cpu_seconds(server.process.pid)
    client_cpu = time.process_time() - client_before
    return Result(
        server.name, requests, seconds, latencies, server_after - server_before, workers_after - workers_before, client_cpu
    )


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS)
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--scrape", type=int, default=DEFAULT_SCRAPE, help="profiles to scrape if none are cached")
    parser.add_argument("--serve-bare", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return 0

    profiles = load_profiles(args.scrape)
    sizes = [len(p) for p in profiles]
    print(
        f"{len(profiles)} real CPU profiles, {statistics.mean(sizes) / 1024:.1f} KB on average "
        f"({min(sizes) / 1024:.1f}-{max(sizes) / 1024:.1f} KB); {CLIENTS} clients, {args.requests} uploads "
        f"after {args.warmup} to warm up; {os.cpu_count()} CPUs",
        flush=True,
    )
    rounds: list[tuple[Result, Result]] = []
    with tempfile.TemporaryDirectory(prefix="autopgo-ingest-") as tmp:
        for r in range(args.rounds):
            work = Path(tmp) / f"round{r}"
            work.mkdir()
            results = {}
            for starter in (start_autopgo, start_bare) if r % 2 == 0 else (start_bare, start_autopgo):
                server = starter(work)
                try:
                    results[starter] = measure(server, profiles, args.requests, args.warmup)
                finally:
                    server.stop()
            stored = sum(1 for p in (work / "blobs").rglob("*.pb.gz"))
            if stored != args.requests + args.warmup:
                raise RuntimeError(f"the API server stored {stored} uploads, not {args.requests + args.warmup}")
            rounds.append((results[start_autopgo], results[start_bare]))
            if args.rounds > 1:
                print(f"round {r + 1}: {results[start_autopgo].rate:.0f} vs {results[start_bare].rate:.0f} uploads/s")
    rounds.sort(key=lambda pair: pair[0].rate)
    api, bare = rounds[len(rounds) // 2]
    print(api.line())
    print(bare.line())
    share = api.rate / bare.rate
    p99 = api.percentile(0.99)
    verdict = "meets" if share >= TARGET_SHARE and p99 < TARGET_P99_MS else "misses"
    print(
        f"autopgo / bare: {share:.0%} of the ceiling's throughput, p99 {p99:.1f} ms "
        f"({verdict} the target of {TARGET_SHARE:.0%} and p99 < {TARGET_P99_MS:.0f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
