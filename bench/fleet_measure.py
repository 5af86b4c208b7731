"""What bench/fleet.py measures, and how: readers of /proc, the blob store, the fleet's log and Prefect,
and the pure functions that turn what they read into figures.

Nothing here knows how the pipeline works inside: it reads the processes
the pipeline runs (``autopgo up``'s tree, or each process of the distributed
setup), its blob store through the project's ``BlobStore`` (a folder or S3),
what the fake fleet was asked for, and Prefect's REST API.
"""

from __future__ import annotations

import json
import math
import os
import re
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import httpx
from fleet_server import MARKER_PREFIX

from profiling.errors import BlobNotFoundError, BlobStoreError
from profiling.pipeline import REJECTED, STAGING, merged_key, time_of
from profiling.pprof import decode, decompress

if TYPE_CHECKING:
    from profiling.storage import BlobStore

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MARKER = re.compile(re.escape(MARKER_PREFIX.encode()))
PAGE = 200  # Prefect's largest page
ERROR_LINE = re.compile(r"\bERROR\b|Traceback|database is locked")


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True, slots=True)
class Delay:
    """A delay; or, for what had not happened when observation ended, the lower bound it had reached."""

    seconds: float
    happened: bool = True


def percentile(delays: Sequence[Delay], q: float) -> Delay | None:
    """The nearest-rank ``q``-th percentile (None if there are none).

    Lower bounds take part with their value. The result is exact when no lower
    bound sorts at or below it; otherwise the true percentile is at least its
    value, and it is returned with ``happened`` False.
    """
    if not delays:
        return None
    ordered = sorted(delays, key=lambda d: (d.seconds, not d.happened))
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    exact = all(d.happened for d in ordered[: rank + 1])
    return Delay(ordered[rank].seconds, exact)


# --------------------------------------------------------------------------- CPU of process trees, by role


@dataclass(slots=True)
class _Member:
    start: int  # start time in clock ticks: with the pid, names one process
    ppid: int
    ticks: int  # utime + stime + cutime + cstime when last read
    role: str


class _Stat(NamedTuple):
    ppid: int
    ticks: int  # utime + stime + cutime + cstime
    start: int  # starttime
    zombie: bool  # ended, not reaped yet


def _read_stat(pid: int) -> _Stat | None:
    """What /proc/<pid>/stat says, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()  # fields[0] is field 3 of proc(5), "state"
    return _Stat(int(fields[1]), sum(int(x) for x in fields[11:15]), int(fields[19]), fields[0] == b"Z")


def _all_stats() -> dict[int, _Stat]:
    stats: dict[int, _Stat] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := _read_stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
    return stats


class ProcessTreeCpu:
    """CPU time used so far by some processes (the roots, each with a role) and all their
    descendants, by role, read from /proc (one pass over it per sample, whatever the number of roots).

    Each live member counts with its own time plus that of the children it
    reaped (cutime, cstime), so a child that ends and is reaped by a member
    stays counted through its parent, in the parent's role. A member that ends
    after losing its parent (reaped by init, not by the tree) keeps its last
    reading. Members are remembered by pid and start time, so a process that
    left the tree (re-parented) is still followed.

    A descendant has its parent's role; but a root's direct child gets the role
    ``split(its command line)`` names, if it names one: that is how the parts
    ``autopgo up`` starts are told apart.
    """

    def __init__(self, roots: Mapping[int, str] | None = None, split: Callable[[str], str | None] | None = None) -> None:
        self.members: dict[int, _Member] = {}
        self.roots: set[int] = set()
        self.lost: Counter[str] = Counter()
        self.split = split
        for pid, role in (roots or {}).items():
            self.add(pid, role)

    def add(self, pid: int, role: str) -> None:
        """Follow ``pid`` and its descendants from now on, as ``role``."""
        stat = _read_stat(pid)
        if stat is not None:
            self.members[pid] = _Member(stat.start, stat.ppid, stat.ticks, role)
            self.roots.add(pid)

    def sample(self) -> float:
        """CPU seconds used by every tree so far."""
        return sum(self.by_role().values())

    def by_role(self) -> dict[str, float]:
        """CPU seconds used so far by each role's processes."""
        stats = _all_stats()
        gone = [pid for pid, m in self.members.items() if pid not in stats or stats[pid].start != m.start]
        known = set(self.members)
        for pid in gone:
            member = self.members.pop(pid)
            if member.ppid not in known:
                self.lost[member.role] += member.ticks  # reaped outside the tree: its time is nowhere else
        for pid, member in self.members.items():
            member.ppid, member.ticks = stats[pid].ppid, stats[pid].ticks
        children = defaultdict(list)
        for pid, stat in stats.items():
            children[stat.ppid].append(pid)
        todo = list(self.members)
        while todo:
            for child in children.get(todo.pop(), ()):
                if child not in self.members:
                    self.members[child] = _Member(stats[child].start, stats[child].ppid, stats[child].ticks, "")
                    todo.append(child)
        self._assign_roles()
        out: Counter[str] = Counter(self.lost)
        for member in self.members.values():
            out[member.role] += member.ticks
        return {role: ticks / CLOCK_TICKS for role, ticks in out.items()}

    def _assign_roles(self) -> None:
        """Give every member its role, from the roots down, again at each sample: a child seen
        between its fork and its exec still has its parent's command line; a member whose parent
        left the tree keeps the role it had."""
        children = defaultdict(list)
        for pid, member in self.members.items():
            if pid not in self.roots and member.ppid in self.members:
                children[member.ppid].append(pid)
        todo = [pid for pid in self.roots if pid in self.members]
        while todo:
            parent = todo.pop()
            for child in children.get(parent, ()):
                role = self.members[parent].role
                if parent in self.roots and self.split is not None:
                    role = self.split(command_line(child)) or role
                self.members[child].role = role
                todo.append(child)

    def alive(self) -> list[tuple[int, int]]:
        """(pid, start time) of each member still running, as of the last sample."""
        return [(pid, m.start) for pid, m in self.members.items()]


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:160]
    except OSError:
        return "?"


def still_running(pid: int, start: int) -> bool:
    """Whether the process ``pid`` started at ``start`` is still there and not a zombie."""
    stat = _read_stat(pid)
    return stat is not None and stat.start == start and not stat.zombie


# --------------------------------------------------------------------------- the blob store


@dataclass(slots=True)
class Upload:
    app: str
    name: str  # the name in <app>/staging/
    staged: float  # epoch seconds, from the nanosecond time in the name
    gone: float | None = None  # when it was first seen missing from staging


class StagingWatcher:
    """Lists the blob store (any ``BlobStore``: a folder or S3) at each poll: when each upload appeared
    in and left ``<app>/staging/``, and which were moved to ``<app>/rejected/``.

    One listing of the whole store per poll, not one per app: on S3 that is a
    request per 1,000 keys, which the store's server pays for (and the bench's
    own CPU figures count, on SeaweedFS).
    """

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.uploads: dict[tuple[str, str], Upload] = {}
        self.rejected: dict[tuple[str, str], str] = {}  # (app, staged name) -> its key in rejected/
        self._present: dict[tuple[str, str], str] = {}  # (app, name) -> its key, staged now
        self.failed_polls = 0

    def poll(self, now: float) -> int:
        """Look once; how many uploads are staged now (as of the last listing that worked)."""
        present: dict[tuple[str, str], str] = {}
        try:
            for info in self.store.list(""):
                app, _, rest = info.key.partition("/")
                folder, _, name = rest.partition("/")
                if not name or "/" in name:
                    continue
                if folder == STAGING:
                    present[(app, name)] = info.key
                    if (app, name) not in self.uploads:
                        self.uploads[(app, name)] = Upload(app, name, time_of(name) / 1e9)
                elif folder == REJECTED:
                    self.rejected[(app, name.split(".pb.gz")[0] + ".pb.gz")] = info.key
        except BlobStoreError:
            self.failed_polls += 1  # a listing that failed tells nothing: try again at the next poll
            return len(self._present)
        for key in self._present.keys() - present.keys():
            self.uploads[key].gone = now
        self._present = present
        return len(present)

    def staged_before(self, when: float) -> int:
        """How many uploads staged before ``when`` are still there."""
        return sum(1 for key in self._present if self.uploads[key].staged < when)

    def staged_keys(self) -> list[str]:
        """The keys of the uploads staged at the last poll."""
        return list(self._present.values())


def upload_to_merge(uploads: Iterable[Upload], start: float, end: float, rejected: Iterable[tuple[str, str]],
                    until: float) -> list[Delay]:
    """From upload to leaving staging, for uploads staged in [start, end) and not rejected.

    An upload still staged when observation ended at ``until`` has a lower bound.
    """
    rejected = set(rejected)
    out = []
    for upload in uploads:
        if start <= upload.staged < end and (upload.app, upload.name) not in rejected:
            gone = upload.gone
            out.append(Delay(until - upload.staged, False) if gone is None else Delay(gone - upload.staged))
    return out


def markers_in_blobs(store: BlobStore, keys: Iterable[str]) -> dict[int, str]:
    """Each marker named in the given (gzip) profiles of the store, without decoding them."""
    out = {}
    for key in keys:
        try:
            raw = decompress(store.get(key))
        except (BlobNotFoundError, BlobStoreError, ValueError):
            continue
        for match in MARKER.finditer(raw):
            # A string of the string table, its length in the byte before it (a short
            # string's varint); what follows is the next field's tag, maybe a digit too.
            name = raw[match.start() : match.start() + raw[match.start() - 1]]
            out[int(name[len(MARKER_PREFIX) :])] = key
    return out


def merged_bytes(store: BlobStore, app: str) -> bytes | None:
    """The app's merged profile as stored, or None if it has none."""
    try:
        return store.get(merged_key(app))
    except BlobNotFoundError:
        return None


def merged_markers(data: bytes | None) -> dict[int, list[tuple[int, ...]]]:
    """The values of every sample at a marker function in a merged profile, by marker.

    A marker merged once has one sample with the values the fleet served; merged
    twice, its sample's values add up (google/pprof merges equal stacks).
    """
    if data is None:
        return {}
    profile = decode(data)
    by_function = {
        f.id: int(f.name[len(MARKER_PREFIX) :]) for f in profile.functions if f.name.startswith(MARKER_PREFIX)
    }
    by_location = {}
    for loc in profile.locations:
        for line in loc.lines:
            if line.function_id in by_function:
                by_location[loc.id] = by_function[line.function_id]
    out: dict[int, list[tuple[int, ...]]] = defaultdict(list)
    for sample in profile.samples:
        for loc_id in sample.location_ids:
            if loc_id in by_location:
                out[by_location[loc_id]].append(tuple(sample.values))
    return dict(out)


# --------------------------------------------------------------------------- the fleet's log


@dataclass(slots=True)
class Request:
    marker: int
    app: str
    instance: int
    arrival: float
    end: float | None = None
    ok: bool = False  # the whole profile was written


class FleetLog:
    """Follows the fake fleet's JSON-lines log (see fleet_server.py)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.requests: dict[int, Request] = {}
        self.busy = 0  # requests refused because the instance was profiling already
        self._offset = 0

    def read_new(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.splitlines():
            entry = json.loads(line)
            if "busy" in entry:
                self.busy += 1
            elif "app" in entry:
                self.requests[entry["m"]] = Request(entry["m"], entry["app"], entry["i"], entry["t"])
            elif (request := self.requests.get(entry["m"])) is not None:
                request.end, request.ok = entry["end"], entry["ok"]

    def arrivals(self) -> dict[str, list[float]]:
        """Each app's request arrival times, in order."""
        out: dict[str, list[float]] = defaultdict(list)
        for request in self.requests.values():
            out[request.app].append(request.arrival)
        return {app: sorted(times) for app, times in out.items()}


# --------------------------------------------------------------------------- scrape lateness


@dataclass(frozen=True, slots=True)
class Scrape:
    app: str
    due: float
    arrival: float | None  # its first profile request at the fleet; None: it never came

    def lateness(self, until: float) -> Delay:
        """Arrival minus due time; a lower bound if it had not arrived when observation ended at ``until``."""
        return Delay(until - self.due, False) if self.arrival is None else Delay(self.arrival - self.due)


def match_schedule(dues: Mapping[str, Sequence[float]], arrivals: Mapping[str, Sequence[float]], every: float,
                   slack: float) -> list[Scrape]:
    """Pair each due time with the app's first request in [due - slack, due + every - slack).

    Requests outside every window (a scrape more than an interval late, or an
    extra one) are left over; a due time with no request in its window never happened.
    """
    out = []
    for app, times in dues.items():
        got = arrivals.get(app, [])
        for due in times:
            i = bisect_left(got, due - slack)
            hit = got[i] if i < len(got) and got[i] < due + every - slack else None
            out.append(Scrape(app, due, hit))
    return out


@dataclass(frozen=True, slots=True)
class FlowRun:
    flow: str
    deployment: str
    app: str | None
    expected: float  # expected_start_time, epoch seconds
    start: float | None  # start_time
    state_type: str
    state_name: str
    name: str = ""  # Prefect's name of the run
    worker: str = ""  # infrastructure_pid: the host and pid of the process that ran it


def scrape_starts(arrivals: Sequence[float], gap: float) -> list[float]:
    """The first of each burst of requests less than ``gap`` apart: a scrape asks its instances at once."""
    out: list[float] = []
    for t in arrivals:
        if not out or t - out[-1] >= gap:
            out.append(t)
    return out


def match_runs(runs: Iterable[FlowRun], arrivals: Mapping[str, Sequence[float]], start: float, end: float,
               reach: float, gap: float = 2.0) -> list[Scrape]:
    """Pair each scrape flow run expected in [start, end) with its app's first scrape after its start.

    A run starting at S fetches within seconds, so its scrape must begin in
    [S - 1 s, S + reach), and no other run may have claimed it (runs catching
    up on a backlog start close together). A run that never started, or
    fetched nothing, never happened.
    """
    starts = {app: scrape_starts(times, gap) for app, times in arrivals.items()}
    claimed: set[tuple[str, int]] = set()
    out = []
    for run in sorted(runs, key=lambda r: (r.start is None, r.start or 0.0)):
        if run.app is None or not start <= run.expected < end:
            continue
        hit = None
        if run.start is not None:
            got = starts.get(run.app, [])
            i = bisect_left(got, run.start - 1)
            while i < len(got) and (run.app, i) in claimed:
                i += 1
            if i < len(got) and got[i] < run.start + reach:
                hit = got[i]
                claimed.add((run.app, i))
        out.append(Scrape(run.app, run.expected, hit))
    return out


# --------------------------------------------------------------------------- exactly once


@dataclass(slots=True)
class AppCheck:
    app: str
    merged_once: int = 0
    duplicated: list[int] = field(default_factory=list)  # merged more than once (or with other values)
    unknown: list[int] = field(default_factory=list)  # in the profile but never served to this app
    staged: int = 0  # in scope, still waiting in staging
    rejected: int = 0
    lost: list[int] = field(default_factory=list)  # in scope, served whole, and nowhere in the store

    @property
    def ok(self) -> bool:
        return not (self.duplicated or self.unknown or self.staged or self.rejected or self.lost)


def check_exactly_once(app: str, served: Mapping[int, Request], in_scope: set[int],
                       merged: Mapping[int, list[tuple[int, ...]]], expected_values: Mapping[int, tuple[int, ...]],
                       staged: set[int], rejected: set[int]) -> AppCheck:
    """Compare what the fleet served to ``app`` with its merged profile and what is left in the store.

    ``served``: the app's requests by marker; ``in_scope``: the markers that
    must be merged by now (served whole before the measured period ended);
    ``expected_values``: the sample values each marker was served with.
    """
    check = AppCheck(app)
    for marker, values in merged.items():
        request = served.get(marker)
        if request is None or not request.ok:
            check.unknown.append(marker)
        elif len(values) == 1 and values[0] == expected_values.get(marker):
            check.merged_once += 1
        else:
            check.duplicated.append(marker)
    for marker in in_scope:
        if marker in merged:
            continue
        if marker in staged:
            check.staged += 1
        elif marker in rejected:
            check.rejected += 1
        else:
            check.lost.append(marker)
    return check


# --------------------------------------------------------------------------- Prefect


def _epoch(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value).timestamp()


def _paged(client: httpx.Client, url: str, body: dict) -> list[dict]:
    out: list[dict] = []
    while True:
        page = client.post(url, json={**body, "limit": PAGE, "offset": len(out)})
        page.raise_for_status()
        rows = page.json()
        out += rows
        if len(rows) < PAGE:
            return out


def flow_runs(api: str, before: float) -> tuple[list[FlowRun], int]:
    """Every flow run expected to start before ``before`` (epoch s), and how many flow runs exist in all."""
    with httpx.Client(base_url=api, timeout=120) as client:
        flows = {f["id"]: f["name"] for f in _paged(client, "/flows/filter", {})}
        deployments = {d["id"]: d["name"] for d in _paged(client, "/deployments/filter", {})}
        total = client.post("/flow_runs/count", json={})
        total.raise_for_status()
        body = {
            "flow_runs": {"expected_start_time": {"before_": datetime.fromtimestamp(before).astimezone().isoformat()}},
            "sort": "EXPECTED_START_TIME_ASC",
        }
        rows = _paged(client, "/flow_runs/filter", body)
    runs = [
        FlowRun(
            flow=flows.get(r["flow_id"], "?"),
            deployment=deployments.get(r["deployment_id"], "") if r.get("deployment_id") else "",
            app=(r.get("parameters") or {}).get("app"),
            expected=_epoch(r["expected_start_time"]) or 0.0,
            start=_epoch(r.get("start_time")),
            state_type=r.get("state_type") or "",
            state_name=r.get("state_name") or "",
            name=r.get("name") or "",
            worker=r.get("infrastructure_pid") or "",
        )
        for r in rows
    ]
    return runs, int(total.json())


def deployment_names(api: str) -> list[str]:
    with httpx.Client(base_url=api, timeout=120) as client:
        return [d["name"] for d in _paged(client, "/deployments/filter", {})]


def repeated_runs(runs: Iterable[FlowRun]) -> dict[str, int]:
    """Deployment -> runs beyond the first with the same expected start time (a schedule's tick
    should have one run): 0 everywhere unless a tick was run twice."""
    ticks = Counter((r.deployment, r.expected) for r in runs if r.deployment)
    out: Counter[str] = Counter()
    for (deployment, _), n in ticks.items():
        out[deployment] += n - 1
    return {deployment: n for deployment, n in sorted(out.items()) if n}


def runs_by_state(runs: Iterable[FlowRun]) -> dict[str, dict[str, int]]:
    """Flow name -> state name -> how many runs."""
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for run in runs:
        out[run.flow][run.state_name] += 1
    return {flow: dict(sorted(states.items())) for flow, states in sorted(out.items())}


# --------------------------------------------------------------------------- the pipeline's output


@dataclass(slots=True)
class ErrorLines:
    lines: int = 0  # lines with any of the kinds
    kinds: Counter[str] = field(default_factory=Counter)
    by_log: Counter[str] = field(default_factory=Counter)  # lines per log, by the log's name
    examples: list[str] = field(default_factory=list)  # the first few distinct ones


def error_lines(logs: Mapping[str, tuple[Path, int | None]]) -> ErrorLines:
    """Lines with ERROR, Traceback or 'database is locked' in the logs, by name: (file, its first
    ``upto`` bytes, or all of it for None)."""
    out = ErrorLines()
    for name, (log, upto) in logs.items():
        try:
            with log.open("rb") as f:
                text = f.read(upto if upto is not None else -1).decode(errors="replace")
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            found = ERROR_LINE.findall(line)
            if not found:
                continue
            out.lines += 1
            out.by_log[name] += 1
            for kind in dict.fromkeys(found):
                out.kinds[kind] += 1
            short = f"{name}: {line.strip()[:200]}"
            if len(out.examples) < 5 and short not in out.examples:
                out.examples.append(short)
    return out


UPLOAD_ACCESS_LINE = re.compile(rb'"POST /api/profile/[^" ]+" 201 ')


def uploads_in_access_log(log: Path) -> int:
    """How many uploads an autopgo API server answered 201, by its access log lines."""
    try:
        return len(UPLOAD_ACCESS_LINE.findall(log.read_bytes()))
    except FileNotFoundError:
        return 0
