"""Partial merges by time, build and workload: what an app keeps when it has a ``window``,
``builds`` or ``workloads`` (its ``PartsPolicy``), and how its served profile is derived.

Without those settings an app's merged profile is the google/pprof merge of
everything ever uploaded, and each batch is merged into it (batches.py). With
any of them, its data is kept as *parts*, each the google/pprof merge of the
uploads that share

- a time bucket: the upload's collection time (the profile's ``time_nanos``,
  clamped to the upload time, which is the time its staging key starts with;
  the upload time when it is zero) rounded down to a multiple of
  ``window / BUCKETS`` (72h: 6h buckets); without a window, no bucket;
- a build: the ``build_id`` of the profile's first mapping, which is the main
  executable's in every profile Go writes ("" when there is none);
- a workload: the one its upload named (``?workload=``), or none ("").

All parts of an app are in one blob, ``<app>/parts.bin``, written with a
conditional write that is the batch's commit point (it carries the batch id,
as ``default.pgo`` does without parts). ``default.pgo`` is then derived from
the parts (``derive``) and can always be derived again from them.

What is kept and served (``select``): a part counts while any of its bucket
lies within the window (a part without a bucket: while its newest upload
does), so the window's edge is rounded out to a bucket: the served data were
collected within the last ``window`` to ``window + window / BUCKETS``. With
``builds: N`` only the parts of the newest N builds count, ordered by when
each build's first upload was collected (``first_seen``, remembered for the
newest ``MAX_BUILDS`` builds). Parts that do not count are dropped when a batch
commits, so a merge costs the batch's uploads and the parts kept, never the
app's history. An upload that would fall into a part that does not count is
accepted and merged into nothing (``expired``, ``superseded``).

The served profile is google/pprof's merge of the parts, in the order each
was first merged into; with ``workloads``, each workload's merged parts are
first scaled (google/pprof's ``Profile.Scale``) so that the weighted
workloads' shares of their combined CPU are their weights' shares
(``ratios``), while uploads of a workload without a weight, or of none,
keep their CPU as measured. A merge part by part holds the same samples and
values as one merge of the same uploads in upload order, and the same bytes
whenever uploads of different parts did not interleave (but for ``time_nanos``
when an upload has none: google/pprof's merge then takes the next upload's).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta

from ..errors import PgoUnusableError, ProfileError
from ..pprof import (
    DEFAULT_MAX_DECOMPRESSED,
    Header,
    Merger,
    ProfileTables,
    check_compatible,
    decode_tables,
    encode,
    pgo_value_index,
)

BUCKETS = 12  # time buckets per window: the window's edge is rounded to window / BUCKETS
MAX_BUILDS = 256  # builds whose first-seen time is remembered
MAGIC = b"autopgo-parts 1\n"


@dataclass(frozen=True, slots=True)
class PartsPolicy:
    """An app's ``window``, ``builds`` and ``workloads`` settings; all unset: no parts."""

    window: timedelta | None = None
    builds: int | None = None
    workloads: tuple[tuple[str, float], ...] = ()  # (workload, weight), sorted by workload

    @classmethod
    def of(
        cls, window: timedelta | None = None, builds: int | None = None, workloads: Mapping[str, float] | None = None
    ) -> PartsPolicy:
        """The policy for these settings, with the workloads' weights sorted by workload."""
        return cls(window, builds, tuple(sorted((workloads or {}).items())))

    @property
    def active(self) -> bool:
        """Whether any setting is given, and so the app keeps parts."""
        return self.window is not None or self.builds is not None or bool(self.workloads)

    @property
    def window_ns(self) -> int:
        """The window in nanoseconds (0: no window)."""
        return 0 if self.window is None else self.window // timedelta(microseconds=1) * 1000

    @property
    def width_ns(self) -> int:
        """The width of a time bucket (0: no window, no buckets)."""
        return max(1, self.window_ns // BUCKETS) if self.window is not None else 0

    def weight(self, workload: str) -> float | None:
        """The weight ``workloads`` gives ``workload``, or None if it gives none."""
        return dict(self.workloads).get(workload)

    def fingerprint(self) -> str:
        """The settings in one string, kept in the batch record so that a change of them is seen."""
        if not self.active:
            return ""
        weights = ",".join(f"{name}:{weight!r}" for name, weight in self.workloads)
        return f"window={self.window_ns};builds={self.builds or 0};workloads={weights}"


@dataclass(slots=True)
class Part:
    """The merge of the uploads of one (bucket, build, workload); ``data`` is its gzip profile."""

    seq: int  # parts are merged in this order: the order of their first upload
    build: str
    workload: str
    start: int | None  # the bucket [start, end) in ns since the epoch; None: kept without a window
    end: int | None
    oldest: int  # collection times of its oldest and newest upload
    newest: int
    uploads: int
    cpu: int  # total of the value Go's PGO weighs (else the first one): for shares
    data: bytes = b""
    tables: ProfileTables | None = field(default=None, repr=False)  # decoded, when at hand

    @property
    def key(self) -> tuple[int | None, int | None, str, str]:
        """What sets the part apart from the app's others: its bucket, build and workload."""
        return (self.start, self.end, self.build, self.workload)

    def expires(self, window_ns: int) -> int:
        """When the part stops counting: a window after its bucket (or its newest upload) ends."""
        return (self.end if self.end is not None else self.newest) + window_ns

    def decoded(self, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> ProfileTables:
        """The part's profile, decoded from ``data`` the first time it is asked for and then kept."""
        if self.tables is None:
            self.tables = decode_tables(self.data, max_decompressed=max_decompressed)
        return self.tables

    def to_json(self) -> dict[str, object]:
        """The part's entry in the manifest of ``parts.bin``: all but its profile, of which only the size."""
        return {
            "seq": self.seq,
            "build": self.build,
            "workload": self.workload,
            "start": self.start,
            "end": self.end,
            "oldest": self.oldest,
            "newest": self.newest,
            "uploads": self.uploads,
            "cpu": self.cpu,
            "size": len(self.data),
        }


@dataclass(slots=True)
class PartsRecord:
    """What ``<app>/parts.bin`` holds: the batch that wrote it, its generation, and the parts."""

    batch: str | None = None
    generation: int = 0
    next_seq: int = 0
    first_seen: dict[str, int] = field(default_factory=dict)  # build id -> collection time of its first upload
    parts: list[Part] = field(default_factory=list)


def encode_parts(record: PartsRecord) -> bytes:
    """The blob: a magic line, the manifest as one line of JSON, then each part's profile."""
    manifest = {
        "batch": record.batch,
        "generation": record.generation,
        "next_seq": record.next_seq,
        "first_seen": record.first_seen,
        "parts": [part.to_json() for part in record.parts],
    }
    return b"".join([MAGIC, json.dumps(manifest, sort_keys=True).encode(), b"\n", *(p.data for p in record.parts)])


def decode_parts(data: bytes) -> PartsRecord:
    """A parts blob read back; ProfileError if it is not one."""
    if not data.startswith(MAGIC):
        raise ProfileError("not a parts record: bad magic")
    end = data.find(b"\n", len(MAGIC))
    try:
        manifest = json.loads(data[len(MAGIC) : end])
        offset = end + 1
        parts = []
        for raw in manifest["parts"]:
            size = int(raw["size"])
            parts.append(
                Part(
                    int(raw["seq"]),
                    str(raw["build"]),
                    str(raw["workload"]),
                    None if raw["start"] is None else int(raw["start"]),
                    None if raw["end"] is None else int(raw["end"]),
                    int(raw["oldest"]),
                    int(raw["newest"]),
                    int(raw["uploads"]),
                    int(raw["cpu"]),
                    bytes(data[offset : offset + size]),
                )
            )
            offset += size
        if end < 0 or offset != len(data):
            raise ValueError("sizes do not add up")
        return PartsRecord(
            None if manifest["batch"] is None else str(manifest["batch"]),
            int(manifest["generation"]),
            int(manifest["next_seq"]),
            {str(k): int(v) for k, v in manifest["first_seen"].items()},
            parts,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ProfileError(f"not a parts record: {exc}") from None


# ------------------------------------------------------------------ what an upload is


def collection_time(time_nanos: int, uploaded_ns: int) -> int:
    """When an upload's data were collected: its ``time_nanos``, at most its upload time;
    the upload time when ``time_nanos`` is not set."""
    return min(time_nanos, uploaded_ns) if time_nanos > 0 else uploaded_ns


def build_of(t: ProfileTables) -> str:
    """The build id of the main executable: that of the first mapping, as Go writes it ("" if none)."""
    return t.mappings[0].build_id if t.mappings else ""


def cpu_index(header: Header) -> int:
    """The value Go's PGO weighs samples by; the first one for a profile PGO cannot use."""
    try:
        return pgo_value_index(header.sample_types)
    except PgoUnusableError:
        return 0


def cpu_of(t: ProfileTables) -> int:
    """The profile's total of the value Go's PGO weighs (``cpu_index``), to compare workloads' shares."""
    i = cpu_index(t.header)
    return sum(values[i] for values in t.sample_values)


def bucket_of(t_ns: int, width_ns: int) -> tuple[int | None, int | None]:
    """The time bucket ``[start, end)`` of width ``width_ns`` that holds ``t_ns``; (None, None) for width 0."""
    if not width_ns:
        return None, None
    start = t_ns - t_ns % width_ns
    return start, start + width_ns


# ------------------------------------------------------------------ which parts count


def counts(part: Part, policy: PartsPolicy, now_ns: int) -> bool:
    """Whether ``part`` lies (partly) within the window at ``now_ns``."""
    return policy.window is None or part.expires(policy.window_ns) > now_ns


def newest_builds(parts: Iterable[Part], first_seen: Mapping[str, int], n: int | None) -> set[str]:
    """The newest ``n`` builds of ``parts`` by first-seen time (all with ``n`` None)."""
    builds: dict[str, int] = {}
    for part in parts:
        seen = first_seen.get(part.build, part.oldest)
        builds[part.build] = min(builds.get(part.build, seen), seen)
    ranked = sorted(builds, key=lambda b: (builds[b], b), reverse=True)
    return set(ranked if n is None else ranked[:n])


def select(record: PartsRecord, policy: PartsPolicy, now_ns: int) -> list[Part]:
    """The parts that count at ``now_ns``, in merge order: within the window, of the newest builds."""
    live = [part for part in record.parts if counts(part, policy, now_ns)]
    kept = newest_builds(live, record.first_seen, policy.builds)
    return sorted((part for part in live if part.build in kept), key=lambda p: p.seq)


def expires_at(parts: Sequence[Part], policy: PartsPolicy) -> int:
    """When the first of ``parts`` stops counting (0: never)."""
    if policy.window is None or not parts:
        return 0
    return min(part.expires(policy.window_ns) for part in parts)


# ------------------------------------------------------------------ merging a batch into the parts


@dataclass(slots=True)
class Outcomes:
    """What became of a batch's uploads: merged into parts that count, or into nothing (expired, superseded)."""

    merged: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)  # older than the window when merged
    superseded: list[str] = field(default_factory=list)  # of a build older than the newest N


class PartsBuilder:
    """Merges a batch's uploads into an app's parts, then drops what no longer counts."""

    def __init__(
        self, record: PartsRecord, policy: PartsPolicy, now_ns: int, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED
    ) -> None:
        self.policy = policy
        self.now = now_ns
        self.max_decompressed = max_decompressed
        self.first_seen = dict(record.first_seen)
        self._known = set(record.first_seen)  # builds whose first upload is already recorded
        self.next_seq = record.next_seq
        self.parts = {part.key: replace(part) for part in record.parts}
        self._mergers: dict[tuple[int | None, int | None, str, str], Merger] = {}
        self._sources: list[tuple[str, tuple[int | None, int | None, str, str]]] = []
        self._expired: list[str] = []
        first = min(self.parts.values(), key=lambda p: p.seq, default=None)
        self._header: Header | None = first.decoded(max_decompressed).header if first else None

    def seed(self, t: ProfileTables, written_ns: int) -> None:
        """Take a merged profile written without parts (``written_ns``: when) as a part of no workload."""
        self._add(t, written_ns, "", source="")

    def add(self, t: ProfileTables, uploaded_ns: int, workload: str, source: str) -> bool:
        """Merge an upload into its part; False if it is older than the window (merged into nothing).

        ProfileError if it cannot be merged with the app's other data (the caller rejects it).
        """
        when = collection_time(t.header.time_nanos, uploaded_ns or self.now)
        start, end = bucket_of(when, self.policy.width_ns)
        if self.policy.window is not None and end is not None and end + self.policy.window_ns <= self.now:
            self._expired.append(source)
            return False
        self._add(t, when, workload, source)
        return True

    def _add(self, t: ProfileTables, when: int, workload: str, source: str) -> None:
        if self._header is None:
            self._header = t.header
        else:
            check_compatible(self._header, t.header, source)
        start, end = bucket_of(when, self.policy.width_ns)
        build = build_of(t)
        key = (start, end, build, workload)
        merger = self._mergers.get(key)
        if merger is None:
            merger = self._mergers[key] = Merger()
            part = self.parts.get(key)
            if part is None:
                part = self.parts[key] = Part(self.next_seq, build, workload, start, end, when, when, 0, 0)
                self.next_seq += 1
            else:
                merger.add(part.decoded(self.max_decompressed))
        merger.add(t, source=source)
        part = self.parts[key]
        part.oldest, part.newest = min(part.oldest, when), max(part.newest, when)
        part.uploads += 1
        if build not in self._known:
            self.first_seen[build] = min(self.first_seen.get(build, when), when)
        self._sources.append((source, key))

    def finish(self, batch: str | None, generation: int) -> tuple[PartsRecord, Outcomes]:
        """The new record: the touched parts merged and encoded, those that no longer count dropped."""
        for key, merger in self._mergers.items():
            part = self.parts[key]
            part.tables = merger.result()
            part.data = encode(part.tables)
            part.cpu = cpu_of(part.tables)
        record = PartsRecord(batch, generation, self.next_seq, self.first_seen, list(self.parts.values()))
        kept = select(record, self.policy, self.now)
        record.parts = kept
        kept_keys = {part.key for part in kept}
        record.first_seen = _remembered(self.first_seen, {part.build for part in kept})
        outcomes = Outcomes(expired=list(self._expired))
        for source, key in self._sources:
            if not source:
                continue
            (outcomes.merged if key in kept_keys else outcomes.superseded).append(source)
        return record, outcomes


def _remembered(first_seen: dict[str, int], keep: set[str]) -> dict[str, int]:
    """The newest ``MAX_BUILDS`` builds' first-seen times, and always those of ``keep``."""
    newest = sorted(first_seen, key=lambda b: (first_seen[b], b), reverse=True)[:MAX_BUILDS]
    return {b: first_seen[b] for b in first_seen if b in keep or b in set(newest)}


# ------------------------------------------------------------------ the served profile


@dataclass(slots=True)
class Derived:
    """The served profile derived from the parts, before prune rules and the never-inline guard."""

    tables: ProfileTables | None  # None: no part counts
    oldest: int = 0  # collection times of the oldest and newest upload it holds
    newest: int = 0
    build: str = ""  # the newest build it holds
    builds: list[tuple[str, int]] = field(default_factory=list)  # (build, CPU) per build, newest first
    ratios: dict[str, float] = field(default_factory=dict)  # workload -> scale ratio applied
    expires: int = 0  # when the first of its parts stops counting (0: never)
    parts: int = 0


def derive(
    record: PartsRecord, policy: PartsPolicy, now_ns: int, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED
) -> Derived:
    """The google/pprof merge of the parts that count at ``now_ns``, weighted by workload."""
    parts = select(record, policy, now_ns)
    if not parts:
        return Derived(None)
    cpu_by_build: dict[str, int] = {}
    for part in parts:
        cpu_by_build[part.build] = cpu_by_build.get(part.build, 0) + part.cpu
    order = sorted(cpu_by_build, key=lambda b: (record.first_seen.get(b, 0), b), reverse=True)
    derived = Derived(
        None,
        oldest=min(p.oldest for p in parts),
        newest=max(p.newest for p in parts),
        build=order[0],
        builds=[(b, cpu_by_build[b]) for b in order],
        expires=expires_at(parts, policy),
        parts=len(parts),
    )
    merger = Merger()
    if not policy.workloads:
        for part in parts:
            merger.add(part.decoded(max_decompressed))
        derived.tables = merger.result()
        return derived
    groups: dict[str, list[Part]] = {}
    for part in parts:
        groups.setdefault(part.workload, []).append(part)
    merged = {}
    for workload, members in groups.items():
        group = Merger()
        for part in members:
            group.add(part.decoded(max_decompressed))
        merged[workload] = group.result()
    derived.ratios = ratios({w: cpu_of(t) for w, t in merged.items()}, dict(policy.workloads))
    for workload, t in merged.items():
        merger.add(scale(t, derived.ratios.get(workload, 1.0)))
    derived.tables = merger.result()
    return derived


def ratios(cpu: Mapping[str, int], weights: Mapping[str, float]) -> dict[str, float]:
    """The scale ratio of each weighted workload: after scaling, each one's share of the weighted
    workloads' combined CPU is its weight's share of their weights. Workloads without a weight,
    or without CPU, are not scaled (and their weights not counted)."""
    weighted = {w: c for w, c in cpu.items() if w in weights and c > 0}
    total_cpu = sum(weighted.values())
    total_weight = sum(weights[w] for w in weighted)
    return {w: weights[w] / total_weight * total_cpu / c for w, c in weighted.items()}


def go_round(x: float) -> int:
    """Go's ``math.Round``: to the nearest integer, halves away from zero."""
    t = math.trunc(x)
    if abs(x - t) >= 0.5:
        t += 1 if x > 0 else -1
    return int(t)


def scale(t: ProfileTables, ratio: float) -> ProfileTables:
    """google/pprof's ``Profile.Scale``: every value times ``ratio``, rounded as Go rounds, and only
    the samples with a value left that is not zero."""
    if ratio == 1:
        return t
    kept = []
    for i, values in enumerate(t.sample_values):
        scaled = tuple(go_round(float(v) * ratio) for v in values)
        if any(scaled):
            kept.append((i, scaled))
    return replace(
        t,
        sample_location_ids=[t.sample_location_ids[i] for i, _ in kept],
        sample_values=[values for _, values in kept],
        sample_labels=[t.sample_labels[i] for i, _ in kept],
    )
