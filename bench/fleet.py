"""Benchmark: the pipeline scraping a fleet of N apps x 3 instances, as a black box: `autopgo up`
on one machine, or (``--distributed``) the setup of README's "Scaling out".

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

       With ``--distributed``, instead, the same fleet is scraped by the
       distributed setup, started as tests/distributed.py starts it for the
       end-to-end test (see bench/fleet_pipelines.py): SeaweedFS as the S3 blob
       store; PostgreSQL; Redis with prefect-redis; two Prefect API servers and
       one services process; ``autopgo deploy --work-pool``; two ``autopgo
       server`` on the bucket and two ``autopgo worker``, worker i uploading to
       server i (so uploads land on both). ``--compare-embedded`` then runs
       ``autopgo up`` of the same checkout with the same settings as well.
    3. Measures for C cycles of E from the first profile request the fleet
       gets (the pipeline's start-up until then is reported apart); lets it run
       30 s more and until the uploads staged by then are merged (at most
       ``--drain`` seconds); reads Prefect; stops the pipeline (``autopgo up``:
       SIGTERM, wait, then SIGKILL whatever of its process tree is left; the
       distributed setup: each process's group, then SeaweedFS once the store
       has been read) and the fleet; and reports:

       - scrape start lateness, p50 and p99: for each app and due time in the
         measured period, the arrival of its first profile request at the fleet
         minus the due time. Due times come from the checkout's
         ``profiling.discovery.schedule.next_due(app, every, after)`` when the pipeline
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
       - upload-to-merge, p50 and p99: the blob store is listed every second
         through the project's ``BlobStore`` (``open_store``: the folder, or
         the S3 bucket); the time an upload leaves ``<app>/staging/`` minus the
         nanosecond time in its name, for uploads staged in the measured period.
         Uploads still staged at the end were never merged (lower bounds, as
         above); rejected ones are counted apart. An upload staged and merged
         between two listings is never seen, and not counted.
       - the pipeline's own CPU over the measured period, in cores and per
         upload (CPU seconds over the profiles the fleet served whole in the
         period, each uploaded once), broken down by role: utime, stime,
         cutime and cstime of every process of the pipeline and its
         descendants, from /proc every second. ``autopgo up``:
         its tree, by the part each process belongs to (the Prefect server, the
         API server, the flow server with its flow runs, autopgo up itself).
         Distributed: PostgreSQL, Redis, the Prefect API servers, the Prefect
         services, the autopgo API servers, the workers with their flow runs,
         SeaweedFS. The fleet and the bench are in no role, but the bench's
         listing of the bucket every second is in SeaweedFS's figure; what
         that listing costs SeaweedFS alone is measured for 10 s after the
         pipeline has stopped, and shown beside it.
       - errors: lines of the pipeline's logs (``autopgo up``'s output, which
         includes the Prefect server's; in distributed mode each process's log)
         with ERROR, Traceback or "database is locked", from its start until
         the bench stops it (flow runs the stop crashes do not count);
         the number of flow runs Prefect holds, and those due by the end by
         flow and state.
       - exactly once: every marker the fleet served whole to an app before
         the end of the measured period must be in that app's merged profile
         (``<app>/default.pgo``, read from the store) once, with the values it
         was served with, and no marker that was not served to the app may be
         there. A marker that is still staged, was rejected, or is nowhere
         (lost) fails its app.
       - the uploads each autopgo API server answered 201 (its access log).

       With ``--compare REV`` the same run is repeated against REV (the design
       before) and the figures are printed side by side with their ratio; with
       ``--compare-embedded``, distributed next to embedded, the ratio being
       distributed / embedded.

Targets: p99 lateness < 30 s, p99 upload-to-merge < 60 s, CPU < 1 core, no
errors, every app exactly once.

Figures (2 cores; README's "Fleet scale" has the embedded ones at 1,000 apps):
``--distributed --compare-embedded --apps 100 --every 1m --cycles 3``, 10 s profiles:

    figure                       distributed                embedded (autopgo up)
    scrape lateness p50 / p99    0.0 s / 14.2 s             0.0 s / 0.1 s
    upload-to-merge p50 / p99    17.6 s / 66.8 s            2.0 s / 3.5 s
    pipeline CPU                 0.78 cores                 0.34 cores
    CPU per upload               234 ms                     109 ms  (ratio 2.14)
    errors, exactly once         0, 100 of 100 apps         0, 100 of 100 apps
    CPU per upload by role       workers and flow runs 112 ms, Prefect services 45,
                                 Prefect API servers 34, SeaweedFS 22 (the bench's
                                 listing about 7), autopgo API servers 9, PostgreSQL 8,
                                 Redis 5; embedded: flow server and runs 60, Prefect
                                 server 46, autopgo API 4

The distributed p99 upload-to-merge is the merge runs': each starts 20-30 s
after its trigger (the worker polls every 10 s; a new interpreter) and merges
an app in about 0.6 s on S3 against about 40 ms on files.

Profiles: 6 real CPU profiles of the Go test service (tests/goservice), scraped
once for 5 s each and cached in ~/.cache/autopgo/bench/fleet/ (or
$AUTOPGO_BENCH_CACHE/fleet/); building and scraping takes under a minute.

How to run (by hand, from the project root; it needs the test extras: Go, and for
--distributed SeaweedFS, PostgreSQL, Redis and prefect-redis)
    .venv/bin/python bench/fleet.py                                   # 1000 apps, every 5m, 10s, 3 cycles (~17 min)
    .venv/bin/python bench/fleet.py --apps 10 --every 1m --duration 5s --cycles 2
    .venv/bin/python bench/fleet.py --apps 200 --every 1m --compare main --json fleet.json
    .venv/bin/python bench/fleet.py --rev HEAD~3 --apps 50 --every 1m
    .venv/bin/python bench/fleet.py --distributed --compare-embedded --apps 100 --every 1m   # ~25 min
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
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
from typing import TYPE_CHECKING, Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import fleet_measure as fm  # noqa: E402
from fleet_pipelines import INSTANCES, READY_TIMEOUT, Distributed, Embedded, FleetSpec, Pipeline, PipelineDied  # noqa: E402
from fleet_server import load_base, marked  # noqa: E402

from profiling.config import parse_duration  # noqa: E402
from profiling.pprof import validate  # noqa: E402

if TYPE_CHECKING:
    from profiling.storage import BlobStore

CACHE = Path(os.environ.get("AUTOPGO_BENCH_CACHE") or Path.home() / ".cache" / "autopgo" / "bench") / "fleet"
PROFILES = 6
PROFILE_SECONDS = 5
# After the measured period, how long the pipeline keeps running at least: a scrape due at the end
# that has not reached the fleet by then is later than the lateness target anyway, and counts as never
# happened; uploads staged by then are waited for (see --drain).
GRACE = 30.0
SLACK = 5.0  # a scrape may reach the fleet this much before it is due
RUN_REACH = 60.0  # a scrape flow run fetches within this long of starting
PROGRESS_EVERY = 30.0
LISTING_SECONDS = 10.0  # how long the cost of the bench's own listing of the bucket is measured, after the stop
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
    """Each app's due times in [start, end) by the checkout's profiling.discovery.schedule.next_due; None if it has none."""
    script = (
        "import json, sys\n"
        "from datetime import datetime, timedelta, timezone\n"
        "try:\n"
        "    from profiling.discovery.schedule import next_due\n"
        "except ImportError:\n"
        "    try:\n"
        "        from profiling.schedule import next_due  # revisions before the subpackages\n"
        "    except ImportError:\n"
        "        sys.exit(3)\n"
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
        raise RuntimeError(f"profiling.discovery.schedule.next_due of {tree.label} failed:\n{result.stderr}")
    return json.loads(result.stdout)


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_names(n: int) -> list[str]:
    return [f"bench-{i:04d}" for i in range(n)]


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


@dataclass
class Monitor:
    """What is watched once a second while the pipeline runs."""

    pipeline: Pipeline
    watcher: fm.StagingWatcher
    requests: fm.FleetLog
    loads: list[float] = field(default_factory=list)  # the machine's 1-minute load average, once a second
    cpu_by_role: dict[str, float] = field(default_factory=dict)  # CPU seconds so far, at the last tick

    def tick(self) -> float:
        """Sample everything once; the pipeline's CPU seconds so far. Raises PipelineDied."""
        self.pipeline.check()
        self.loads.append(os.getloadavg()[0])
        self.cpu_by_role = self.pipeline.cpu.by_role()
        self.watcher.poll(time.time())
        self.requests.read_new()
        return sum(self.cpu_by_role.values())

    def wait_first_request(self, timeout: float) -> float:
        """When the fleet got its first profile request: the pipeline has started scraping."""
        deadline = time.time() + timeout
        while not self.requests.requests:
            if time.time() > deadline:
                raise RuntimeError(f"no profile request reached the fleet within {timeout:.0f} s")
            self.tick()
            time.sleep(1.0)
        return min(r.arrival for r in self.requests.requests.values())

    def measure(self, t0: float, end: float) -> tuple[dict[str, float], dict[str, float]]:
        """Sample until ``end`` (epoch s), reporting progress; CPU seconds by role at ``t0`` and at ``end``."""
        cpu0 = self.tick()
        roles0 = self.cpu_by_role
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
        self.tick()
        return roles0, self.cpu_by_role

    def listing_only(self, seconds: float) -> float:
        """Cores the pipeline's processes still running use while only the bench lists the store, for
        ``seconds`` once the pipeline has stopped: in distributed mode, SeaweedFS answering the listing."""
        before = sum(self.pipeline.cpu.by_role().values())
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            self.watcher.poll(time.time())
            time.sleep(1.0)
        return (sum(self.pipeline.cpu.by_role().values()) - before) / (time.monotonic() - start)

    def drain(self, end: float, limit: float) -> None:
        """Go on watching until what was fetched by ``end`` has left staging, at most ``limit`` s."""
        while time.time() < end + limit:
            self.tick()
            if time.time() >= end + GRACE and self.watcher.staged_before(end + GRACE) == 0:
                return
            time.sleep(1.0)
        print(f"  uploads still staged after draining {limit:g} s: {self.watcher.staged_before(end + GRACE)}",
              flush=True)


def used_by_role(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each role used between two readings, most first."""
    used = {role: after[role] - before.get(role, 0.0) for role in after}
    return dict(sorted(used.items(), key=lambda item: -item[1]))


def run(tree: Checkout, settings: Settings, profiles: list[Path], mode: str) -> dict[str, Any]:
    """One benchmark run of ``tree``'s pipeline in ``mode`` (embedded or distributed): the figures, as a
    JSON-able dict.

    The measured period starts at the first profile request the fleet gets, so
    that the pipeline's start-up (reported apart) does not count as lateness,
    and lasts ``cycles`` intervals.
    """
    work = Path(tempfile.mkdtemp(prefix="autopgo-fleet-"))
    apps = app_names(settings.apps)
    label = f"{tree.label}, {mode}"
    print(f"\n== {label}: {settings.apps} apps x {INSTANCES} instances, every {settings.every:g} s, "
          f"{settings.duration:g} s profiles, {settings.cycles} cycles (work dir {work})", flush=True)
    fleet, fleet_port = start_fleet(work, profiles)
    spec = FleetSpec(apps, fleet_port, settings.every, settings.duration)
    pipeline: Pipeline = (Embedded(tree.root, work, spec, free_port(), free_port()) if mode == "embedded"
                          else Distributed(tree.root, work, spec))
    try:
        launched = time.time()
        pipeline.start()
        ready = time.time()
        print(f"  API ready after {ready - launched:.1f} s", flush=True)
        monitor = Monitor(pipeline, fm.StagingWatcher(pipeline.store), fm.FleetLog(work / "fleet.jsonl"))
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
            cpu0, cpu_end = {}, {}
        imported, outside = check_imports(work / "imports.log", tree)
        if outside:
            raise RuntimeError(f"{label}: the pipeline imported code from outside {tree.root}: {outside[:3]}")
        runs, created = fm.flow_runs(pipeline.prefect_url, time.time()) if died is None else ([], 0)
        deployments = fm.deployment_names(pipeline.prefect_url) if died is None else []
        until = time.time()
        logs = pipeline.logs()  # what stopping logs (runs crashed by the stop) does not count
        left = pipeline.stop()
        listing = monitor.listing_only(LISTING_SECONDS) if mode == "distributed" else 0.0
        monitor.watcher.poll(time.time())
        stop_fleet(fleet)
        monitor.requests.read_new()
        if settings.keep:  # the distributed setup's database goes with it
            (work / "flow_runs.json").write_text(json.dumps([dataclasses.asdict(r) for r in runs], indent=1) + "\n")
        result = analyse(tree, settings, apps, profiles, pipeline.store, monitor.watcher, monitor.requests, runs,
                         deployments, t0, t_end, until, logs)
        by_role = used_by_role(cpu0, cpu_end)
        result.update(
            label=label,
            mode=mode,
            startup_ready_s=ready - launched,
            startup_first_request_s=t0 - launched,
            died=died,
            cpu_cores=sum(by_role.values()) / (t_end - t0) if by_role else math.nan,
            cpu_seconds_by_role=by_role,
            uploads_by_server=pipeline.uploads_by_server(),
            load_average=statistics.fmean(monitor.loads) if monitor.loads else math.nan,
            cpus=os.cpu_count(),
            flow_runs_created=created,
            processes_left_after_stop=left,
            processes_importing_project=imported,
            store_polls_failed=monitor.watcher.failed_polls,
            store_listing_cores=listing,
        )
        uploads = result["fleet"]["served_in_period"]
        result["cpu_ms_per_upload"] = 1000 * sum(by_role.values()) / uploads if uploads and by_role else math.nan
        return result
    finally:
        try:
            pipeline.close()  # stopped already unless something failed; then, whatever is left of it
        finally:
            if fleet.poll() is None:
                stop_fleet(fleet)
            if settings.keep:
                print(f"  kept {work}", flush=True)
            else:
                shutil.rmtree(work, ignore_errors=True)


def analyse(tree: Checkout, settings: Settings, apps: list[str], profiles: list[Path], store: BlobStore,
            watcher: fm.StagingWatcher, requests: fm.FleetLog, runs: list[fm.FlowRun], deployments: list[str],
            t0: float, t_end: float, until: float, logs: dict[str, tuple[Path, int | None]]) -> dict[str, Any]:
    """The figures of a run measured from ``t0`` to ``t_end`` and observed until ``until``, with the
    pipeline's logs as they were then."""
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
        due_source = "profiling.discovery.schedule.next_due" if dues is not None else "none (no next_due, no per-app deployments)"
    cycles = []
    for c in range(settings.cycles):
        lo, hi = t0 + c * settings.every, t0 + (c + 1) * settings.every
        cycles.append(delay_figures([s.lateness(until) for s in scrapes if lo <= s.due < hi]))
    # Upload to merge.
    merge_times = fm.upload_to_merge(watcher.uploads.values(), t0, t_end, watcher.rejected, until)
    # Exactly once.
    exact = exactly_once(apps, store, watcher, requests, served_values(requests, profiles), t_end)
    errors = fm.error_lines(logs)
    ok_requests = [r for r in requests.requests.values() if r.ok]
    return {
        "apps": settings.apps,
        "every_s": settings.every,
        "duration_s": settings.duration,
        "cycles": settings.cycles,
        "measured_s": t_end - t0,
        "due_times_from": due_source,
        "lateness": {**delay_figures([s.lateness(until) for s in scrapes]), "by_cycle": cycles},
        "upload_to_merge": {**delay_figures(merge_times), "rejected": len(watcher.rejected)},
        "errors": {"lines": errors.lines, "kinds": dict(errors.kinds), "by_log": dict(errors.by_log),
                   "examples": errors.examples},
        "flow_runs_due_by_state": fm.runs_by_state(runs),
        "flow_runs_repeated": fm.repeated_runs(runs),
        "exactly_once": exact,
        "fleet": {
            "requests": len(requests.requests),
            "answered": len(ok_requests),
            "hung_up": sum(1 for r in requests.requests.values() if r.end is not None and not r.ok),
            "refused_busy": requests.busy,
            # Each profile served whole is uploaded once: the uploads of the measured period, whether or
            # not the watcher saw them staged (one merged less than a second after its upload is never seen).
            "served_in_period": sum(1 for r in ok_requests if r.end is not None and t0 <= r.end < t_end),
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


def exactly_once(apps: list[str], store: BlobStore, watcher: fm.StagingWatcher, requests: fm.FleetLog,
                 values: dict[int, tuple[int, ...]], end: float) -> dict[str, Any]:
    """Each app's merged profile (read from the store) against what the fleet served it."""
    served: dict[str, dict[int, fm.Request]] = {app: {} for app in apps}
    for request in requests.requests.values():
        served.setdefault(request.app, {})[request.marker] = request
    staged = set(fm.markers_in_blobs(store, watcher.staged_keys()))
    rejected = set(fm.markers_in_blobs(store, watcher.rejected.values()))
    with ThreadPoolExecutor(8) as fetch, ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as decode:
        datas = fetch.map(lambda app: fm.merged_bytes(store, app), apps)
        merged = dict(zip(apps, decode.map(fm.merged_markers, datas, chunksize=16)))
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
        ("pipeline CPU per upload", "", f"{r['cpu_ms_per_upload']:.0f} ms", r["cpu_ms_per_upload"]),
        ("error lines in the pipeline's logs", "0", f"{errors['lines']} {verdict(errors['lines'] == 0)}",
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
        for deployment, n in r["flow_runs_repeated"].items():
            print(f"  deployment {deployment}: {n} runs more than one per expected start time")
        f = r["fleet"]
        print(f"  fleet: {f['requests']} requests, {f['answered']} answered, {f['hung_up']} hung up, "
              f"{f['refused_busy']} refused (instance busy)")
        e = r["exactly_once"]
        print(f"  markers: {e['merged_once']} merged once, {e['duplicated']} duplicated, {e['unknown']} unknown, "
              f"{e['staged']} still staged, {e['rejected']} rejected, {e['lost']} lost")
        for example in e["examples"]:
            print(f"    {example}")
        if r["errors"]["lines"]:
            print(f"  error lines by kind: {r['errors']['kinds']}, by log: {r['errors']['by_log']}; first ones:")
            for example in r["errors"]["examples"]:
                print(f"    {example}")
        if r["uploads_by_server"]:
            print("  uploads answered 201, by autopgo API server: "
                  + ", ".join(f"{name} {n}" for name, n in r["uploads_by_server"].items()))
        print("  CPU by role over the measured period (cores; CPU per upload; share):")
        for line in role_lines(r):
            print(f"    {line}")
        if r["mode"] == "distributed":
            print(f"    (SeaweedFS answering only the bench's listing of the bucket, once a second, after the stop: "
                  f"{r['store_listing_cores']:.3f} cores)")
        if r["store_polls_failed"]:
            print(f"  listings of the blob store that failed (and were retried a second later): "
                  f"{r['store_polls_failed']}")
        left = r["processes_left_after_stop"]
        print(f"  {r['processes_importing_project']} processes imported the checkout's code, none from elsewhere; "
              f"{len(left)} processes of the pipeline left after it stopped: {left}")


def role_lines(r: dict[str, Any]) -> list[str]:
    """One line per role of a run: its cores, CPU per upload and share of the pipeline's CPU."""
    by_role, uploads = r["cpu_seconds_by_role"], r["fleet"]["served_in_period"]
    total = sum(by_role.values())
    if not by_role or not total:
        return ["n/a"]
    width = max(map(len, by_role))
    per_upload = (lambda used: f"{1000 * used / uploads:6.0f} ms") if uploads else (lambda used: "   n/a")
    return [f"{role.ljust(width)}  {used / r['measured_s']:5.2f} cores  {per_upload(used)}  {100 * used / total:3.0f} %"
            for role, used in [*by_role.items(), ("all", total)]]


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
    parser.add_argument("--distributed", action="store_true",
                        help="run the distributed setup of README's Scaling out (PostgreSQL, Redis, 2 Prefect API "
                        "servers and the services, 2 autopgo servers on SeaweedFS, 2 workers) instead of autopgo up")
    parser.add_argument("--compare-embedded", action="store_true",
                        help="with --distributed: also run autopgo up of the same checkout, and compare")
    parser.add_argument("--drain", type=float, default=120.0,
                        help="after the measured period, wait at most this many seconds for uploads to be merged (120)")
    parser.add_argument("--due", choices=("auto", "schedule", "runs"), default="auto",
                        help="where due times come from: profiling.discovery.schedule, Prefect's scrape runs, or auto (default)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep each run's work folder (logs, blob store)")
    args = parser.parse_args()
    if args.apps < 1 or args.cycles < 1:
        parser.error("--apps and --cycles must be at least 1")
    if args.compare_embedded and not args.distributed:
        parser.error("--compare-embedded compares with --distributed: give both")
    if args.compare_embedded and args.compare:
        parser.error("give --compare REV or --compare-embedded, not both")
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
    mode = "distributed" if args.distributed else "embedded"
    runs = [(args.rev, mode)]
    if args.compare:
        runs.append((args.compare, mode))
    if args.compare_embedded:
        runs.append((args.rev, "embedded"))
    results = []
    for rev, run_mode in runs:
        with checkout(rev) as tree:
            results.append(run(tree, settings, profiles, run_mode))
    report(results)
    if args.json:
        args.json.write_text(json.dumps(finite(results), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
