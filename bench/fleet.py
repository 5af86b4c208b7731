"""Benchmark: `autopgo up` scraping a fleet of N apps x 3 instances, as a black box.

What it does
    1. Starts a fake fleet (bench/fleet_server.py): one asyncio process on
       127.0.0.1 that answers ``GET /fleet/<app>/<i>/debug/pprof/profile?seconds=D``
       like Go's net/http/pprof, after D seconds, with a real Go CPU profile
       made unique by a marker function ``bench.marker_<n>``; like Go, an
       instance refuses a second profile request while one runs (HTTP 500). It
       logs every request: app, instance, arrival, marker, whether the answer
       was written.
    2. Writes an autopgo.yaml with N apps ``bench-0000``... (``scrape: {every: E,
       duration: D, sample_size: 2, targets: {static: [3 instances]}}``), a file
       blob store and free ports, and runs ``autopgo up -c autopgo.yaml --data DIR
       --prefect-port P`` from the checkout under test with PYTHONPATH pointing
       at it: the working tree, or with ``--rev REV`` a temporary ``git
       worktree`` of REV. An import probe (bench/fleet_probe) checks that every
       Python process of the pipeline imports that checkout's code.
    3. Measures for C cycles of E from the first profile request the fleet
       gets (the pipeline's start-up until then is reported apart); lets it run
       30 s more and until the uploads staged by then are merged (at most
       ``--drain`` seconds); reads Prefect; stops ``autopgo up`` (SIGTERM, wait,
       then SIGKILL whatever of its process tree is left) and the fleet; and reports:

       - scrape start lateness, p50 and p99: for each app and due time in the
         measured period, the arrival of its first profile request at the fleet
         minus the due time. Due times come from the checkout's
         ``profiling.schedule.next_due(app, every, after)`` when the pipeline
         has no per-app scrape deployments, and otherwise (the design with one
         deployment ``scrape-<app>`` per app) from each scrape flow run's
         ``expected_start_time`` in Prefect, the run matched to the first scrape
         (burst of requests) for its app after its ``start_time``; ``--due``
         forces either. Against the schedule, a scrape may come up to 5 s before
         its due time; one more than an interval late counts for the next due
         time, and its own never happened. A due scrape that had not reached
         the fleet when ``autopgo up`` was stopped "never happened" and counts
         with the lateness it had reached by then, a lower bound: a percentile
         that depends on one is shown as ">= x s".
       - upload-to-merge, p50 and p99: the blob store's ``<app>/staging/`` is
         polled every second; the time an upload leaves staging minus the
         nanosecond time in its name, for uploads staged in the measured period.
         Uploads still staged at the end were never merged (lower bounds, as
         above); rejected ones are counted apart.
       - the pipeline's own CPU in cores over the measured period: utime, stime,
         cutime and cstime of every process in the tree of ``autopgo up``, from
         /proc every second (the fleet and the bench are not in that tree).
       - errors: lines of ``autopgo up``'s output (which includes the Prefect
         server's) with ERROR, Traceback or "database is locked", from its start
         until the bench stops it (flow runs the stop crashes do not count);
         the number of flow runs Prefect holds, and those due by the end by
         flow and state.
       - exactly once: every marker the fleet served whole to an app before
         the end of the measured period must be in that app's merged profile
         (``<app>/default.pgo``) once, with the values it was served with, and
         no marker that was not served to the app may be there. A marker that
         is still staged, was rejected, or is nowhere (lost) fails its app.

       With ``--compare REV`` the same run is repeated against REV (the design
       before) and the figures are printed side by side with their ratio.

Targets: p99 lateness < 30 s, p99 upload-to-merge < 60 s, CPU < 1 core, no
errors, every app exactly once.

Profiles: 6 real CPU profiles of the Go test service (tests/goservice), scraped
once for 5 s each and cached in ~/.cache/autopgo/bench/fleet/ (or
$AUTOPGO_BENCH_CACHE/fleet/); building and scraping takes under a minute.

How to run (by hand, from the project root; it needs the test extras for Go)
    .venv/bin/python bench/fleet.py                                   # 1000 apps, every 5m, 10s, 3 cycles (~17 min)
    .venv/bin/python bench/fleet.py --apps 10 --every 1m --duration 5s --cycles 2
    .venv/bin/python bench/fleet.py --apps 200 --every 1m --compare main --json fleet.json
    .venv/bin/python bench/fleet.py --rev HEAD~3 --apps 50 --every 1m
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import fleet_measure as fm  # noqa: E402
from fleet_server import load_base, marked  # noqa: E402

from profiling.config import parse_duration  # noqa: E402
from profiling.names import STAGING, REJECTED  # noqa: E402
from profiling.validate import validate  # noqa: E402

CACHE = Path(os.environ.get("AUTOPGO_BENCH_CACHE") or Path.home() / ".cache" / "autopgo" / "bench") / "fleet"
PROFILES = 6
PROFILE_SECONDS = 5
INSTANCES = 3  # per app, in autopgo.yaml
SAMPLE_SIZE = 2
PROBE = BENCH / "fleet_probe"
PROBE_LOG_ENV = "AUTOPGO_BENCH_IMPORT_LOG"
READY_TIMEOUT = 600.0
STOP_TIMEOUT = 90.0  # autopgo up gives each of its three parts 15 s, then kills
# After the measured period, how long the pipeline keeps running at least: a scrape due at the end
# that has not reached the fleet by then is later than the lateness target anyway, and counts as never
# happened; uploads staged by then are waited for (see --drain).
GRACE = 30.0
SLACK = 5.0  # a scrape may reach the fleet this much before it is due
RUN_REACH = 60.0  # a scrape flow run fetches within this long of starting
PROGRESS_EVERY = 30.0
TARGETS = {"lateness_p99": 30.0, "upload_to_merge_p99": 60.0, "cpu_cores": 1.0, "errors": 0}


# --------------------------------------------------------------------------- profiles


def ensure_profiles() -> list[Path]:
    """The cached real profiles; scraped from the Go test service the first time."""
    paths = [CACHE / f"cpu{i}.pb.gz" for i in range(PROFILES)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        import harness

        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"building the Go test service and scraping {len(missing)} profiles of {PROFILE_SECONDS} s "
              f"into {CACHE} ...", flush=True)
        binary = harness.build_service(CACHE)
        with ExitStack() as stack, ThreadPoolExecutor(len(missing)) as pool:
            services = [stack.enter_context(harness.Service(binary, load=4)) for _ in missing]
            datas = list(pool.map(lambda s: s.profile(seconds=PROFILE_SECONDS), services))
        for path, data in zip(missing, datas):
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
    for path in paths:  # what the fleet will serve must pass the API's checks, Go's PGO included
        validate(marked(load_base(path.read_bytes()), 1), require_pgo=True)
    return paths


# --------------------------------------------------------------------------- the checkout under test


@dataclass(frozen=True)
class Checkout:
    root: Path
    label: str  # e.g. "working tree 0c46217+" or "main 0c46217"


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@contextmanager
def checkout(rev: str | None) -> Iterator[Checkout]:
    """The working tree (rev None), or a temporary detached worktree of ``rev``, removed afterwards."""
    if rev is None:
        dirty = "+" if git("status", "--porcelain", "--untracked-files=no") else ""
        yield Checkout(ROOT, f"working tree {git('rev-parse', '--short', 'HEAD')}{dirty}")
        return
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    parent = Path(tempfile.mkdtemp(prefix="autopgo-fleet-rev-"))
    tree = parent / "tree"
    git("worktree", "add", "--detach", str(tree), commit)
    try:
        yield Checkout(tree, f"{rev} {commit[:7]}")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
        shutil.rmtree(parent, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True)


def due_times(tree: Checkout, apps: list[str], every: float, start: float, end: float) -> dict[str, list[float]] | None:
    """Each app's due times in [start, end) by the checkout's profiling.schedule.next_due; None if it has none."""
    script = (
        "import json, sys\n"
        "from datetime import datetime, timedelta, timezone\n"
        "try:\n"
        "    from profiling.schedule import next_due\n"
        "except ImportError:\n"
        "    sys.exit(3)\n"
        "a = json.load(sys.stdin)\n"
        "every, end = timedelta(seconds=a['every']), datetime.fromtimestamp(a['end'], timezone.utc)\n"
        "out = {}\n"
        "for app in a['apps']:\n"
        "    at, times = next_due(app, every, datetime.fromtimestamp(a['start'], timezone.utc)), []\n"
        "    while at < end:\n"
        "        times.append(at.timestamp())\n"
        "        at = next_due(app, every, at + timedelta(microseconds=1))\n"
        "    out[app] = times\n"
        "json.dump(out, sys.stdout)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tree.root)}
    result = subprocess.run([sys.executable, "-c", script], cwd=tree.root, env=env, capture_output=True, text=True,
                            input=json.dumps({"apps": apps, "every": every, "start": start, "end": end}))
    if result.returncode == 3:
        return None
    if result.returncode != 0:
        raise RuntimeError(f"profiling.schedule.next_due of {tree.label} failed:\n{result.stderr}")
    return json.loads(result.stdout)


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_names(n: int) -> list[str]:
    return [f"bench-{i:04d}" for i in range(n)]


def write_config(path: Path, apps: list[str], fleet_port: int, api_port: int, every: float, duration: float) -> None:
    """autopgo.yaml for the fleet (as JSON, which YAML reads)."""
    config = {
        "blob_store": str(path.parent / "blobs"),
        "api": {"url": f"http://127.0.0.1:{api_port}"},
        "apps": [
            {
                "name": app,
                "scrape": {
                    "every": f"{every:g}s",
                    "duration": f"{duration:g}s",
                    "sample_size": SAMPLE_SIZE,
                    "targets": {"static": [
                        {"address": f"127.0.0.1:{fleet_port}", "path": f"/fleet/{app}/{i}/debug/pprof/profile"}
                        for i in range(INSTANCES)
                    ]},
                },
            }
            for app in apps
        ],
    }
    path.write_text(json.dumps(config, indent=1) + "\n")


def start_fleet(work: Path, profiles: list[Path]) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        [sys.executable, str(BENCH / "fleet_server.py"), "--log", str(work / "fleet.jsonl"), *map(str, profiles)],
        stdout=subprocess.PIPE, stderr=(work / "fleet.err").open("wb"), text=True, start_new_session=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.isdigit():
        process.kill()
        raise RuntimeError(f"the fake fleet did not start: {(work / 'fleet.err').read_text()}")
    return process, int(line)


def stop_fleet(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_pipeline(tree: Checkout, work: Path, config: Path, prefect_port: int) -> subprocess.Popen:
    """``autopgo up`` from ``tree``: its cwd and the first thing on PYTHONPATH after the import probe."""
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join([str(PROBE), str(tree.root)]), **{PROBE_LOG_ENV: str(work / "imports.log")})
    autopgo = Path(sys.executable).parent / "autopgo"
    return subprocess.Popen(
        [str(autopgo), "up", "-c", str(config), "--data", str(work / "data"), "--prefect-port", str(prefect_port)],
        cwd=tree.root, env=env, stdin=subprocess.DEVNULL, stdout=(work / "up.log").open("wb"),
        stderr=subprocess.STDOUT, start_new_session=True,
    )


def wait_ready(process: subprocess.Popen, api: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"autopgo up exited with status {process.returncode} while starting:\n{tail}")
        try:
            if httpx.get(f"{api}/api/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"autopgo up was not ready within {READY_TIMEOUT:.0f} s")


def stop_pipeline(process: subprocess.Popen, tree: fm.ProcessTreeCpu) -> list[str]:
    """SIGTERM ``autopgo up``, wait, then SIGKILL whatever of its tree is left; the command lines killed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    tree.sample()
    killed = []
    for pid, start in tree.alive():
        if fm.still_running(pid, start):
            command = fm.command_line(pid)
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(command)
            except ProcessLookupError:
                pass
    return killed


def check_imports(log: Path, tree: Checkout) -> tuple[int, list[str]]:
    """How many processes imported the project's packages, and each import from outside ``tree``."""
    pids, outside = set(), []
    try:
        lines = log.read_text().splitlines()
    except FileNotFoundError:
        return 0, []
    for line in lines:
        pid, name, origin = line.split(" ", 2)
        pids.add(pid)
        if not Path(origin.split(",")[0]).resolve().is_relative_to(tree.root.resolve()):
            outside.append(f"pid {pid}: {name} from {origin}")
    return len(pids), outside


# --------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class Settings:
    apps: int
    every: float
    duration: float
    cycles: int
    drain: float
    due: str  # auto, schedule or runs
    keep: bool


class PipelineDied(Exception):
    """autopgo up exited while it was being measured."""


@dataclass
class Monitor:
    """What is watched once a second while ``autopgo up`` runs."""

    pipeline: subprocess.Popen
    cpu: fm.ProcessTreeCpu
    watcher: fm.StagingWatcher
    requests: fm.FleetLog
    loads: list[float] = field(default_factory=list)  # the machine's 1-minute load average, once a second

    def tick(self) -> float:
        """Sample everything once; the pipeline's CPU seconds so far. Raises PipelineDied."""
        if self.pipeline.poll() is not None:
            raise PipelineDied(f"autopgo up exited with status {self.pipeline.returncode}")
        self.loads.append(os.getloadavg()[0])
        used = self.cpu.sample()
        self.watcher.poll(time.time())
        self.requests.read_new()
        return used

    def wait_first_request(self, timeout: float) -> float:
        """When the fleet got its first profile request: the pipeline has started scraping."""
        deadline = time.time() + timeout
        while not self.requests.requests:
            if time.time() > deadline:
                raise RuntimeError(f"no profile request reached the fleet within {timeout:.0f} s")
            self.tick()
            time.sleep(1.0)
        return min(r.arrival for r in self.requests.requests.values())

    def measure(self, t0: float, end: float) -> tuple[float, float]:
        """Sample until ``end`` (epoch s), reporting progress; CPU seconds used at ``t0`` and at ``end``."""
        cpu0 = self.tick()
        self.loads.clear()
        next_report = t0 + PROGRESS_EVERY
        while (now := time.time()) < end:
            used = self.tick()
            if now >= next_report:
                uploads = self.watcher.uploads.values()
                merged = sum(1 for u in uploads if u.gone is not None)
                print(f"  {now - t0:5.0f} s: {len(self.requests.requests)} profile requests, {len(uploads)} uploads "
                      f"seen, {merged} merged; pipeline CPU {(used - cpu0) / (now - t0):.2f} cores", flush=True)
                next_report += PROGRESS_EVERY
            time.sleep(max(0.0, 1.0 - (time.time() - now)))
        return cpu0, self.tick()

    def drain(self, end: float, limit: float) -> None:
        """Go on watching until what was fetched by ``end`` has left staging, at most ``limit`` s."""
        while time.time() < end + limit:
            self.tick()
            if time.time() >= end + GRACE and self.watcher.staged_before(end + GRACE) == 0:
                return
            time.sleep(1.0)
        print(f"  uploads still staged after draining {limit:g} s: {self.watcher.staged_before(end + GRACE)}",
              flush=True)


def run(tree: Checkout, settings: Settings, profiles: list[Path]) -> dict[str, Any]:
    """One benchmark run against ``tree``: the figures, as a JSON-able dict.

    The measured period starts at the first profile request the fleet gets, so
    that the pipeline's start-up (reported apart) does not count as lateness,
    and lasts ``cycles`` intervals.
    """
    work = Path(tempfile.mkdtemp(prefix="autopgo-fleet-"))
    apps = app_names(settings.apps)
    api_port, prefect_port = free_port(), free_port()
    api, prefect = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{prefect_port}/api"
    print(f"\n== {tree.label}: {settings.apps} apps x {INSTANCES} instances, every {settings.every:g} s, "
          f"{settings.duration:g} s profiles, {settings.cycles} cycles (work dir {work})", flush=True)
    fleet, fleet_port = start_fleet(work, profiles)
    pipeline: subprocess.Popen | None = None
    monitor: Monitor | None = None
    try:
        write_config(work / "autopgo.yaml", apps, fleet_port, api_port, settings.every, settings.duration)
        launched = time.time()
        pipeline = start_pipeline(tree, work, work / "autopgo.yaml", prefect_port)
        monitor = Monitor(pipeline, fm.ProcessTreeCpu(pipeline.pid), fm.StagingWatcher(work / "blobs"),
                          fm.FleetLog(work / "fleet.jsonl"))
        wait_ready(pipeline, api, work / "up.log")
        ready = time.time()
        print(f"  API ready after {ready - launched:.1f} s", flush=True)
        t0 = monitor.wait_first_request(settings.every + READY_TIMEOUT)
        t_end = t0 + settings.cycles * settings.every
        print(f"  first profile request after {t0 - launched:.1f} s; measuring for {t_end - t0:g} s", flush=True)
        died = None
        try:
            cpu0, cpu_end = monitor.measure(t0, t_end)
            monitor.drain(t_end, settings.drain)
        except PipelineDied as exc:
            died = str(exc)
            print(f"  {died} after {time.time() - t0:.0f} s of the measured period", flush=True)
            t_end = min(t_end, time.time())
            cpu0, cpu_end = math.nan, math.nan
        imported, outside = check_imports(work / "imports.log", tree)
        if outside:
            raise RuntimeError(f"{tree.label}: the pipeline imported code from outside {tree.root}: {outside[:3]}")
        alive = pipeline.poll() is None
        runs, created = fm.flow_runs(prefect, time.time()) if alive else ([], 0)
        deployments = fm.deployment_names(prefect) if alive else []
        until = time.time()
        log_size = (work / "up.log").stat().st_size  # what stopping logs (runs crashed by the stop) does not count
        left = stop_pipeline(pipeline, monitor.cpu)
        monitor.watcher.poll(time.time())
        stop_fleet(fleet)
        monitor.requests.read_new()
        result = analyse(tree, settings, apps, profiles, work, monitor.watcher, monitor.requests, runs, deployments,
                         t0, t_end, until, log_size)
        result.update(
            startup_ready_s=ready - launched,
            startup_first_request_s=t0 - launched,
            died=died,
            cpu_cores=(cpu_end - cpu0) / (t_end - t0),
            load_average=statistics.fmean(monitor.loads) if monitor.loads else math.nan,
            cpus=os.cpu_count(),
            flow_runs_created=created,
            processes_killed_after_stop=left,
            processes_importing_project=imported,
        )
        return result
    finally:
        if pipeline is not None:  # stopped already unless something failed; then, whatever is left of it
            stop_pipeline(pipeline, monitor.cpu if monitor is not None else fm.ProcessTreeCpu(pipeline.pid))
        if fleet.poll() is None:
            stop_fleet(fleet)
        if settings.keep:
            print(f"  kept {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)


def analyse(tree: Checkout, settings: Settings, apps: list[str], profiles: list[Path], work: Path,
            watcher: fm.StagingWatcher, requests: fm.FleetLog, runs: list[fm.FlowRun], deployments: list[str],
            t0: float, t_end: float, until: float, log_size: int) -> dict[str, Any]:
    """The figures of a run measured from ``t0`` to ``t_end`` and observed until ``until``, when
    ``autopgo up``'s output was ``log_size`` bytes long."""
    blobs = work / "blobs"
    arrivals = requests.arrivals()
    # Lateness: against the per-app deployments' flow runs, or against the schedule.
    per_app = f"scrape-{apps[0]}" in deployments
    mode = settings.due if settings.due != "auto" else ("runs" if per_app else "schedule")
    if mode == "runs":
        scrape_runs = [r for r in runs if r.flow == "scrape"]
        scrapes = fm.match_runs(scrape_runs, arrivals, t0, t_end, RUN_REACH)
        due_source = "expected_start_time of the scrape flow runs"
    else:
        dues = due_times(tree, apps, settings.every, t0, t_end)
        slack = min(SLACK, settings.every / 4)
        scrapes = [] if dues is None else fm.match_schedule(dues, arrivals, settings.every, slack)
        due_source = "profiling.schedule.next_due" if dues is not None else "none (no next_due, no per-app deployments)"
    cycles = []
    for c in range(settings.cycles):
        lo, hi = t0 + c * settings.every, t0 + (c + 1) * settings.every
        cycles.append(delay_figures([s.lateness(until) for s in scrapes if lo <= s.due < hi]))
    # Upload to merge.
    rejected = fm.rejected_names(blobs)
    merge_times = fm.upload_to_merge(watcher.uploads.values(), t0, t_end, rejected, until)
    # Exactly once.
    exact = exactly_once(apps, blobs, requests, served_values(requests, profiles), t_end)
    errors = fm.error_lines(work / "up.log", log_size)
    ok_requests = [r for r in requests.requests.values() if r.ok]
    return {
        "label": tree.label,
        "apps": settings.apps,
        "every_s": settings.every,
        "duration_s": settings.duration,
        "cycles": settings.cycles,
        "measured_s": t_end - t0,
        "due_times_from": due_source,
        "lateness": {**delay_figures([s.lateness(until) for s in scrapes]), "by_cycle": cycles},
        "upload_to_merge": {**delay_figures(merge_times), "rejected": len(rejected)},
        "errors": {"lines": errors.lines, "kinds": dict(errors.kinds), "examples": errors.examples},
        "flow_runs_due_by_state": fm.runs_by_state(runs),
        "exactly_once": exact,
        "fleet": {
            "requests": len(requests.requests),
            "answered": len(ok_requests),
            "hung_up": sum(1 for r in requests.requests.values() if r.end is not None and not r.ok),
            "refused_busy": requests.busy,
        },
    }


def delay_figures(delays: list[fm.Delay]) -> dict[str, Any]:
    """p50 and p99 (``*_exact`` False: the true value is at least this), how many, and how many never happened."""
    out: dict[str, Any] = {"count": len(delays), "never": sum(1 for d in delays if not d.happened)}
    for q in (50, 99):
        p = fm.percentile(delays, q)
        out[f"p{q}_s"], out[f"p{q}_exact"] = (p.seconds, p.happened) if p else (math.nan, True)
    return out


def served_values(requests: fm.FleetLog, profiles: list[Path]) -> dict[int, tuple[int, ...]]:
    """The sample values each marker was served with: the fleet marks profile n % count for marker n."""
    bases = [load_base(p.read_bytes()).values for p in profiles]
    return {m: bases[m % len(bases)] for m in requests.requests}


def exactly_once(apps: list[str], blobs: Path, requests: fm.FleetLog, values: dict[int, tuple[int, ...]],
                 end: float) -> dict[str, Any]:
    served: dict[str, dict[int, fm.Request]] = {app: {} for app in apps}
    for request in requests.requests.values():
        served.setdefault(request.app, {})[request.marker] = request
    staged = set(fm.markers_in_files(fm.leftover_files(blobs, STAGING)))
    rejected = set(fm.markers_in_files(fm.leftover_files(blobs, REJECTED)))
    paths = {app: fm.merged_path(blobs, app) for app in apps}
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        merged = dict(zip(apps, pool.map(merged_or_empty, paths.values(), chunksize=16)))
    checks = []
    for app in apps:
        in_scope = {m for m, r in served[app].items() if r.ok and r.end is not None and r.end < end}
        checks.append(fm.check_exactly_once(app, served[app], in_scope, merged[app], values, staged, rejected))
    bad = [c for c in checks if not c.ok]
    return {
        "apps_ok": len(checks) - len(bad),
        "apps_not_ok": len(bad),
        "merged_once": sum(c.merged_once for c in checks),
        "duplicated": sum(len(c.duplicated) for c in checks),
        "unknown": sum(len(c.unknown) for c in checks),
        "staged": sum(c.staged for c in checks),
        "rejected": sum(c.rejected for c in checks),
        "lost": sum(len(c.lost) for c in checks),
        "examples": [
            f"{c.app}: duplicated {c.duplicated[:3]}, unknown {c.unknown[:3]}, staged {c.staged}, "
            f"rejected {c.rejected}, lost {sorted(c.lost)[:3]}"
            for c in bad[:5]
        ],
    }


def merged_or_empty(path: Path) -> dict[int, list[tuple[int, ...]]]:
    return fm.merged_markers(path) if path.exists() else {}


# --------------------------------------------------------------------------- the report


def seconds(value: float, exact: bool = True) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{'' if exact else '>= '}{value:.1f} s"


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, float | None]]:
    """(figure, target, value as shown, value for a ratio) of one run."""
    late, merge, exact, errors = r["lateness"], r["upload_to_merge"], r["exactly_once"], r["errors"]
    runs = sum(sum(states.values()) for states in r["flow_runs_due_by_state"].values())
    return [
        ("scrape lateness p50", "", seconds(late["p50_s"], late["p50_exact"]), exact_or_none(late, "p50")),
        ("scrape lateness p99", "< 30 s", f"{seconds(late['p99_s'], late['p99_exact'])} "
         f"{verdict(late['p99_s'] < TARGETS['lateness_p99'] and late['p99_exact'])}", exact_or_none(late, "p99")),
        ("due scrapes / never happened", "0", f"{late['count']} / {late['never']}", None),
        ("upload-to-merge p50", "", seconds(merge["p50_s"], merge["p50_exact"]), exact_or_none(merge, "p50")),
        ("upload-to-merge p99", "< 60 s", f"{seconds(merge['p99_s'], merge['p99_exact'])} "
         f"{verdict(merge['p99_s'] < TARGETS['upload_to_merge_p99'] and merge['p99_exact'])}",
         exact_or_none(merge, "p99")),
        ("uploads / never merged / rejected", "", f"{merge['count']} / {merge['never']} / {merge['rejected']}", None),
        ("pipeline CPU", "< 1 core", f"{r['cpu_cores']:.2f} cores {verdict(r['cpu_cores'] < TARGETS['cpu_cores'])}",
         r["cpu_cores"]),
        ("error lines in autopgo up's output", "0", f"{errors['lines']} {verdict(errors['lines'] == 0)}",
         errors["lines"]),
        ("flow runs created / due by the end", "", f"{r['flow_runs_created']} / {runs}", r["flow_runs_created"]),
        ("exactly once: apps OK / not", "all", f"{exact['apps_ok']} / {exact['apps_not_ok']} "
         f"{verdict(exact['apps_not_ok'] == 0)}", None),
        ("start-up: API ready / first scrape", "",
         f"{seconds(r['startup_ready_s'])} / {seconds(r['startup_first_request_s'])}", r["startup_first_request_s"]),
    ]


def exact_or_none(figures: dict[str, Any], p: str) -> float | None:
    """A percentile for the ratio column, when it is not only a lower bound."""
    return figures[f"{p}_s"] if figures[f"{p}_exact"] else None


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return ""
    return f"{a / b:.2f}"


def report(results: list[dict[str, Any]]) -> None:
    tables = [rows(r) for r in results]
    header = ["figure", "target", *(r["label"] for r in results)] + (["ratio"] if len(results) == 2 else [])
    lines = []
    for i, (figure, target, _, _) in enumerate(tables[0]):
        cells = [figure, target, *(t[i][2] for t in tables)]
        if len(results) == 2:
            cells.append(ratio(tables[0][i][3], tables[1][i][3]))
        lines.append(cells)
    widths = [max(len(str(row[c])) for row in [header, *lines]) for c in range(len(header))]
    print()
    for row in [header, ["-" * w for w in widths], *lines]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
    for r in results:
        print(f"\n{r['label']}: due times from {r['due_times_from']}; measured {r['measured_s']:.0f} s, "
              f"the machine's load average {r['load_average']:.1f} on {r['cpus']} CPUs meanwhile"
              + (f" ({r['died']})" if r["died"] else ""))
        for c, cyc in enumerate(r["lateness"]["by_cycle"]):
            print(f"  cycle {c + 1}: lateness p50 {seconds(cyc['p50_s'], cyc['p50_exact'])}, "
                  f"p99 {seconds(cyc['p99_s'], cyc['p99_exact'])}, {cyc['count']} due, {cyc['never']} never happened")
        for flow, states in r["flow_runs_due_by_state"].items():
            print(f"  {flow} runs: " + ", ".join(f"{n} {state}" for state, n in states.items()))
        f = r["fleet"]
        print(f"  fleet: {f['requests']} requests, {f['answered']} answered, {f['hung_up']} hung up, "
              f"{f['refused_busy']} refused (instance busy)")
        e = r["exactly_once"]
        print(f"  markers: {e['merged_once']} merged once, {e['duplicated']} duplicated, {e['unknown']} unknown, "
              f"{e['staged']} still staged, {e['rejected']} rejected, {e['lost']} lost")
        for example in e["examples"]:
            print(f"    {example}")
        if r["errors"]["lines"]:
            print(f"  error lines by kind: {r['errors']['kinds']}; first ones:")
            for example in r["errors"]["examples"]:
                print(f"    {example}")
        killed = r["processes_killed_after_stop"]
        print(f"  {r['processes_importing_project']} processes imported the checkout's code, none from elsewhere; "
              f"{len(killed)} processes of its tree left after autopgo up stopped, killed: {killed}")


def finite(value: Any) -> Any:
    """JSON without Infinity/NaN: they become the strings "inf" and "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf"
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Run autopgo up against a fake fleet and measure it (see the docstring of bench/fleet.py).")
    parser.add_argument("--apps", type=int, default=1000, help="apps, each with 3 instances (default 1000)")
    parser.add_argument("--every", default="5m", help="scrape interval E (default 5m)")
    parser.add_argument("--duration", default="10s", help="profile duration D (default 10s)")
    parser.add_argument("--cycles", type=int, default=3, help="measured period in intervals (default 3)")
    parser.add_argument("--rev", help="run the pipeline of this git revision instead of the working tree")
    parser.add_argument("--compare", metavar="REV", help="also run the pipeline of REV (the design before) and compare")
    parser.add_argument("--drain", type=float, default=120.0,
                        help="after the measured period, wait at most this many seconds for uploads to be merged (120)")
    parser.add_argument("--due", choices=("auto", "schedule", "runs"), default="auto",
                        help="where due times come from: profiling.schedule, Prefect's scrape runs, or auto (default)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep each run's work folder (logs, blob store)")
    args = parser.parse_args()
    if args.apps < 1 or args.cycles < 1:
        parser.error("--apps and --cycles must be at least 1")
    settings = Settings(
        apps=args.apps,
        every=parse_duration(args.every, "--every").total_seconds(),
        duration=parse_duration(args.duration, "--duration").total_seconds(),
        cycles=args.cycles,
        drain=args.drain,
        due=args.due,
        keep=args.keep,
    )
    profiles = ensure_profiles()
    results = []
    for rev in [args.rev, *([args.compare] if args.compare else [])]:
        with checkout(rev) as tree:
            results.append(run(tree, settings, profiles))
    report(results)
    if args.json:
        args.json.write_text(json.dumps(finite(results), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
