"""Benchmark: the embedded pipeline (`autopgo up`) from upload to downloadable profile.

What it measures
    1. Latency: uploads a real CPU profile (with a unique comment) every
       ``--spacing`` seconds and times each one from the API's 201 to the
       moment the downloadable merged profile includes it. Target: median
       under 3 s.
    2. Burst: 500 real profiles over 5 apps from 16 threads at once, then how
       long until every app's merged profile holds each of its uploads
       exactly once (checked by the sum of sample values), and how many merge
       flow runs that took. Target: within 60 s.

Profiles are the real ones bench/merge.py caches in bench/.data/profiles.
Everything runs on 127.0.0.1 in a temporary folder, and `autopgo up` is
stopped at the end.

How to run (by hand, from the project root)
    .venv/bin/python bench/pipeline.py
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from profiling.client import Client, ClientError  # noqa: E402
from profiling.pprof import (  # noqa: E402
    Profile,  # noqa: E402
    decode,
    encode,
)

PROFILES = ROOT / "bench" / ".data" / "profiles"
BURST_APPS = 5
BURST_UPLOADS = 500
BURST_THREADS = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_profiles() -> list[Profile]:
    paths = sorted(PROFILES.glob("*.pb.gz"))
    if not paths:
        raise SystemExit(f"no profiles in {PROFILES}: run bench/merge.py once to scrape them")
    return [decode(p.read_bytes()) for p in paths]


def tagged(p: Profile, tag: str) -> bytes:
    p.comments = [tag]
    return encode(p)


def total_samples(p: Profile) -> int:
    return sum(s.values[0] for s in p.samples)


class Pipeline:
    def __init__(self, work: Path) -> None:
        self.api = f"http://127.0.0.1:{free_port()}"
        self.prefect = f"http://127.0.0.1:{free_port()}/api"
        config = work / "autopgo.yaml"
        config.write_text(f"blob_store: {work / 'blobs'}\napi:\n  url: {self.api}\nsweep_every: 30s\n")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "autopgo"), "up", "-c", str(config), "--data", str(work / "data"),
             "--prefect-port", self.prefect.split(":")[2].split("/")[0]],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"{self.api}/api/ready", timeout=2).status_code == 200
                deployed = httpx.get(f"{self.prefect}/deployments/name/merge/on-upload", timeout=2).status_code == 200
                if ready and deployed:
                    time.sleep(3)  # let the served runner start polling
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit("autopgo up did not become ready")

    def merge_runs_since(self, since: datetime) -> int:
        body = {"flows": {"name": {"any_": ["merge"]}}, "flow_runs": {"expected_start_time": {"after_": since.isoformat()}}}
        return int(httpx.post(f"{self.prefect}/flow_runs/count", json=body, timeout=10).json())

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)


def download(client: Client, app: str) -> Profile | None:
    try:
        return decode(client.download(app).content)
    except ClientError as exc:
        if exc.status == 404:
            return None
        raise


def latency(pipeline: Pipeline, profiles: list[Profile], count: int, spacing: float) -> list[float]:
    out = []
    with Client(pipeline.api) as client:
        for n in range(count):
            tag = f"bench-latency-{n}"
            client.upload("latency", tagged(profiles[n % len(profiles)], tag))
            start = time.perf_counter()
            while True:
                merged = download(client, "latency")
                if merged is not None and tag in merged.comments:
                    out.append(time.perf_counter() - start)
                    break
                if time.perf_counter() - start > 120:
                    raise SystemExit(f"upload {n} not merged within 120 s")
                time.sleep(0.05)
            print(f"  upload {n}: {out[-1]:.2f} s", flush=True)
            time.sleep(spacing)
    return out


def burst(pipeline: Pipeline, profiles: list[Profile]) -> tuple[float, int, bool]:
    apps = [f"burst-{i}" for i in range(BURST_APPS)]
    jobs = [(apps[n % BURST_APPS], tagged(profiles[n % len(profiles)], f"bench-burst-{n}")) for n in range(BURST_UPLOADS)]
    expected = {app: 0 for app in apps}
    for n, (app, _) in enumerate(jobs):
        expected[app] += total_samples(profiles[n % len(profiles)])
    since = datetime.now(timezone.utc)
    start = time.perf_counter()
    with Client(pipeline.api) as client, ThreadPoolExecutor(BURST_THREADS) as pool:
        list(pool.map(lambda job: client.upload(*job), jobs))
    uploaded = time.perf_counter() - start
    print(f"  {BURST_UPLOADS} uploads in {uploaded:.1f} s", flush=True)
    with Client(pipeline.api) as client:
        while True:
            totals = {app: total_samples(p) if (p := download(client, app)) else 0 for app in apps}
            if totals == expected:
                break
            if any(totals[app] > expected[app] for app in apps):
                print(f"  OVERCOUNTED: {totals} > {expected}")
                return time.perf_counter() - start, pipeline.merge_runs_since(since), False
            if time.perf_counter() - start > 180:
                print(f"  not all merged after 180 s: {totals} of {expected}")
                return time.perf_counter() - start, pipeline.merge_runs_since(since), False
            time.sleep(0.5)
    return time.perf_counter() - start, pipeline.merge_runs_since(since), True


def main() -> int:
    parser = argparse.ArgumentParser(description="Time the embedded pipeline from upload to downloadable profile.")
    parser.add_argument("--uploads", type=int, default=20, help="latency samples (default 20)")
    parser.add_argument("--spacing", type=float, default=1.0, help="seconds between latency uploads (default 1)")
    args = parser.parse_args()
    profiles = load_profiles()
    with tempfile.TemporaryDirectory(prefix="autopgo-pipeline-") as tmp:
        pipeline = Pipeline(Path(tmp))
        try:
            print("starting autopgo up ...", flush=True)
            pipeline.wait_ready()
            print(f"latency: {args.uploads} uploads, {args.spacing:.1f} s apart", flush=True)
            times = latency(pipeline, profiles, args.uploads, args.spacing)
            print(f"burst: {BURST_UPLOADS} uploads over {BURST_APPS} apps from {BURST_THREADS} threads", flush=True)
            seconds, runs, exact = burst(pipeline, profiles)
        finally:
            pipeline.stop()
    median = statistics.median(times)
    print()
    print(f"latency: median {median:.2f} s, p90 {statistics.quantiles(times, n=10)[-1]:.2f} s, max {max(times):.2f} s"
          f" -> target median < 3 s: {'met' if median < 3 else 'NOT met'}")
    print(f"burst: all merged {'exactly once' if exact else 'NOT exactly once'} after {seconds:.1f} s with {runs} merge runs"
          f" -> target 60 s: {'met' if exact and seconds <= 60 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
