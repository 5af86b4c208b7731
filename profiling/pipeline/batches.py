"""Merging an app's staged uploads into its merged profile, each upload exactly once.

State, all in the blob store (key layout in names.py):

- ``staging/<time>-<random>-g<n>.pb.gz``: uploads waiting to be merged, each
  staged under the app's generation ``n`` (see generations.py).
- ``batch.json``: the current batch, ``{"id", "generation", "keys", "open"}``. Runs move
  it from done to open only with a conditional write on the version they read, so
  at most one run owns an open batch: it is the lock that keeps two merges from
  both writing. It is never deleted while the app exists, so a run that lost it
  always sees that it changed.
- ``default.pgo``: the merged profile. Two pprof comments (which the Go compiler
  ignores) say which batch wrote it and of which generation its data are:
  ``autopgo.batch=<id>`` and ``autopgo.generation=<n>`` (profiles from before
  generations say ``autopgo.since=<ns>`` instead).
- ``generation.json``: deleting an app advances its generation; a batch merges
  only uploads of the generation it began under, and a batch or merged profile
  of an older generation is neither merged into nor served.

- ``parts.bin``: only for apps with a ``window``, ``builds`` or ``workloads``
  (parts.py): their data as partial merges, with the batch that wrote it and
  its generation; ``default.pgo`` is then derived from it (comment
  ``autopgo.parts=<n>``) and can always be derived again.

A batch commits when ``default.pgo`` with its id is written, conditionally on
the version that was read after checking that the batch is still open (for an
app with parts: when ``parts.bin`` with its id is written so, and then
``default.pgo`` is derived from it, conditionally on the version read before
``parts.bin`` was; a run that finds ``parts.bin`` holding its batch and
``default.pgo`` not derives it again). Its
uploads are removed only after that, and the batch is closed last. Each run
first finishes an open batch left by a crashed run: if ``default.pgo`` already
holds it, only the clean-up is left; otherwise it is merged again from the same
keys. So a process killed between any two steps, then run again, gives the
profile an undisturbed run gives.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from ..errors import BlobNotFoundError, PreconditionFailedError, ProfileError
from ..pprof import (
    DEFAULT_MAX_DECOMPRESSED,
    Header,
    Merger,
    Profile,
    ProfileTables,
    comments_of,
    decode_tables,
    encode,
    from_profile,
    guard_never_inline,
    to_profile,
)
from ..storage import BlobInfo, BlobStore
from .generations import AppGeneration, read_app_generation
from .layout import (
    app_of,
    batch_key,
    generation_key,
    merged_key,
    parts_key,
    rejected_prefix,
    staging_prefix,
    time_of,
    tombstone_prefix,
    workload_of,
)
from .parts import Derived, PartsBuilder, PartsPolicy, PartsRecord, decode_parts, derive, encode_parts, expires_at
from .rules import PruneRule, apply_rules

log = logging.getLogger(__name__)

BATCH_COMMENT = "autopgo.batch="
SINCE_COMMENT = "autopgo.since="  # profiles from before generations
GENERATION_COMMENT = "autopgo.generation="
# A profile derived from parts (parts.py): how many, the collection times of the oldest and
# newest upload it holds (ns, "<oldest>-<newest>"), and the newest build.
PARTS_COMMENT = "autopgo.parts="
WINDOW_COMMENT = "autopgo.window="
BUILD_COMMENT = "autopgo.build="
LABEL_COMMENTS = (BATCH_COMMENT, SINCE_COMMENT, GENERATION_COMMENT, PARTS_COMMENT, WINDOW_COMMENT, BUILD_COMMENT)
DEFAULT_MAX_BATCH = 1000
DEFAULT_RECOVER_AFTER = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Batch:
    """Uploads merged together under the app's ``generation`` when the batch began.

    Records from before generations have none (None) and a ``since`` instead:
    the newest tombstone when the batch began.
    """

    id: str
    generation: int | None
    keys: tuple[str, ...]
    open: bool = True
    opened: int = 0  # ns since the epoch
    since: int = 0
    # Apps with parts, in a closed record: when the served profile's first part stops counting
    # (ns, 0: never), and the settings it was derived with (PartsPolicy.fingerprint).
    expires: int = 0
    policy: str = ""

    def to_json(self) -> bytes:
        """The record as ``batch.json`` holds it."""
        fields: dict[str, object] = {
            "id": self.id,
            "generation": self.generation,
            "keys": list(self.keys),
            "open": self.open,
            "opened": self.opened,
            "since": self.since,
        }
        if self.expires:
            fields["expires"] = self.expires
        if self.policy:
            fields["policy"] = self.policy
        return json.dumps(fields).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Batch:
        """The record ``batch.json`` holds; fields an older record lacks take their defaults."""
        raw = json.loads(data)
        keys = tuple(map(str, raw["keys"]))
        generation = raw.get("generation")
        return cls(
            str(raw["id"]),
            None if generation is None else int(generation),
            keys,
            bool(raw["open"]),
            int(raw.get("opened", 0)),
            int(raw.get("since", 0)),
            int(raw.get("expires", 0)),
            str(raw.get("policy", "")),
        )

    def closed(self, expires: int = 0, policy: str = "") -> Batch:
        """This batch done: its keys dropped, and for an app with parts its ``expires`` and ``policy`` kept."""
        return Batch(
            self.id, self.generation, (), open=False, opened=self.opened, since=self.since, expires=expires, policy=policy
        )

    def refresh_due(self, policy: PartsPolicy, now_ns: int) -> bool:
        """Whether an app with parts must derive its profile again with no upload to merge:
        a part has aged out since, or its settings changed (or it had no parts yet)."""
        if self.open or not policy.active:
            return False
        return self.policy != policy.fingerprint() or 0 < self.expires <= now_ns

    def generation_in(self, app: AppGeneration) -> int:
        """The generation the batch belongs to in ``app``; ``HIDDEN`` if it is from before generations and hidden."""
        return app.of_labels(self.generation, self.since)


@dataclass(slots=True)
class MergeReport:
    """What a run did, for logs and for the artifact the merge flow publishes."""

    app: str
    batches: int = 0
    merged: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)
    size_before: int = 0
    size_after: int = 0
    profile: Profile | None = None  # the merged profile after the last batch
    committed: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (batch id, uploads merged)
    # Apps with parts (parts.py): uploads merged into nothing, older than the window or of a build
    # older than the newest N, and what the served profile was derived from.
    expired: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)
    derived: Derived | None = None

    @property
    def samples(self) -> int:
        """How many samples the merged profile holds after the last batch (0 if there is none)."""
        return len(self.profile.samples) if self.profile else 0


@dataclass(frozen=True, slots=True)
class Labels:
    """What a merged profile's comments say: the batch that wrote it, and its generation
    (or, from before generations, since when it held data)."""

    batch: str | None = None
    generation: int | None = None
    since: int = 0
    parts: int | None = None  # derived from this many parts (parts.py); None: merged without parts
    window: tuple[int, int] | None = None  # collection times (ns) of the oldest and newest upload held
    build: str = ""  # the newest build held

    @classmethod
    def of(cls, comments: Iterable[str]) -> Labels:
        """The labels that ``comments`` carry; other comments, and labels whose values do not parse, are ignored."""
        batch, generation, since, parts, window, build = None, None, 0, None, None, ""
        for comment in comments:
            value = comment.partition("=")[2]
            if comment.startswith(BATCH_COMMENT):
                batch = value
            elif comment.startswith(GENERATION_COMMENT) and value.isdigit():
                generation = int(value)
            elif comment.startswith(SINCE_COMMENT) and value.isdigit():
                since = int(value)
            elif comment.startswith(PARTS_COMMENT) and value.isdigit():
                parts = int(value)
            elif comment.startswith(WINDOW_COMMENT):
                oldest, _, newest = value.partition("-")
                if oldest.isdigit() and newest.isdigit():
                    window = (int(oldest), int(newest))
            elif comment.startswith(BUILD_COMMENT):
                build = value
        return cls(batch, generation, since, parts, window, build)

    @property
    def derived(self) -> bool:
        """Whether the profile was derived from parts (parts.py) rather than merged without them."""
        return self.parts is not None

    def generation_in(self, app: AppGeneration) -> int:
        """The generation the profile so labelled belongs to in ``app`` (``HIDDEN`` as for ``Batch.generation_in``)."""
        return app.of_labels(self.generation, self.since)

    def hidden_in(self, app: AppGeneration) -> bool:
        """Whether a delete hides the profile so labelled: never merged into, never served."""
        return app.hides_labels(self.generation, self.since)


@dataclass(frozen=True, slots=True)
class MergedProfile:
    """An app's merged profile as read from the store: its info (and so its version), its tables and its labels."""

    info: BlobInfo
    tables: ProfileTables
    labels: Labels

    @property
    def batch(self) -> str | None:
        """The id of the batch that wrote the profile, or None if it names none."""
        return self.labels.batch


@dataclass(frozen=True, slots=True)
class Pending:
    """What a sweep of the whole store finds to do."""

    staged: frozenset[str]  # apps with uploads waiting to be merged
    deleted: frozenset[str]  # apps ever deleted, whose delete may be unfinished


def find_pending(store: BlobStore) -> Pending:
    """Every app with staged uploads, and every app ever deleted, in one listing of the store."""
    staged, deleted = set(), set()
    for info in store.list():
        app = app_of(info.key)
        if app is None:
            continue
        if info.key.startswith(staging_prefix(app)):
            staged.add(app)
        elif info.key == generation_key(app) or info.key.startswith(tombstone_prefix(app)):
            deleted.add(app)
    return Pending(frozenset(staged), frozenset(deleted))


def refresh_due(store: BlobStore, app: str, policy: PartsPolicy, now_ns: int | None = None) -> bool:
    """Whether an app with parts must derive its profile again though nothing was uploaded (one
    read of its batch record): a part aged out since it was derived, or its settings changed."""
    if not policy.active:
        return False
    found = _read(store, batch_key(app))
    if found is None:
        return _orphan_parts(store, app)
    return Batch.from_json(found[1]).refresh_due(policy, time.time_ns() if now_ns is None else now_ns)


def _orphan_parts(store: BlobStore, app: str) -> bool:
    """Whether the app has parts but no batch record: a delete took over a batch that had
    committed its parts but not yet derived the profile, then removed the record."""
    try:
        store.stat(parts_key(app))
    except BlobNotFoundError:
        return False
    return True


def labels_of(data: bytes, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> Labels:
    """The labels of a merged profile, read without decoding the rest."""
    return Labels.of(c for c in comments_of(data, max_decompressed) if c.startswith(LABEL_COMMENTS))


@dataclass(frozen=True, slots=True)
class StoredParts:
    """An app's parts as read from the store: the info (and so the version) of ``parts.bin``, and its record."""

    info: BlobInfo
    record: PartsRecord


def read_parts(store: BlobStore, app: str) -> StoredParts | None:
    """The app's parts (parts.py), or None if it has none."""
    found = _read(store, parts_key(app))
    return None if found is None else StoredParts(found[0], decode_parts(found[1]))


def read_merged(store: BlobStore, app: str, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> MergedProfile | None:
    """The app's merged profile and its batch comments, or None if there is none."""
    found = _read(store, merged_key(app))
    if found is None:
        return None
    tables = decode_tables(found[1], max_decompressed=max_decompressed)
    return MergedProfile(found[0], tables, Labels.of(tables.header.comments))


def _read(store: BlobStore, key: str) -> tuple[BlobInfo, bytes] | None:
    """The object at ``key`` with its info, or None if there is none."""
    try:
        info, stream = store.open(key)
    except BlobNotFoundError:
        return None
    with stream:
        return info, stream.read()


def merge_pending(
    store: BlobStore,
    app: str,
    rules: Sequence[PruneRule] = (),
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_rounds: int = 100,
    max_decompressed: int = DEFAULT_MAX_DECOMPRESSED,
    recover_after: timedelta = DEFAULT_RECOVER_AFTER,
    never_inline: Sequence[re.Pattern[str]] = (),
    policy: PartsPolicy = PartsPolicy(),
    clock: Callable[[], int] = time.time_ns,
) -> MergeReport:
    """Merge every staged upload of ``app``, batch after batch, until none is left.

    Returns early if another run owns an open batch: that run drains what is
    staged, including what arrives while it works. An open batch older than
    ``recover_after`` is taken to be left by a run that died, and finished.
    Functions matching ``never_inline`` are guarded from PGO's inlining (``noinline.py``).
    With a ``policy`` (window, builds, workloads) the app's data are kept as parts
    (parts.py), and when nothing is staged but a part has aged out or the policy
    changed, a batch of no uploads derives the served profile again. ``clock``
    (ns since the epoch) is the time that windows are measured from.
    """
    run = _Run(store, app, tuple(rules), max_decompressed, tuple(never_inline), policy, clock)
    for _ in range(max_rounds):
        record = run.read_batch()
        if record is not None and record[0].open:
            age = time.time_ns() - record[0].opened
            if timedelta(microseconds=age / 1000) < recover_after:
                log.info("%s: batch %s is being merged by another run", app, record[0].id)
                break
        if record is None or not record[0].open:
            record = run.open_batch(record, max_batch)
            if record is None:
                break
        run.commit(*record)
    else:
        log.warning("%s: stopped after %d rounds with uploads still staged", app, max_rounds)
    return run.report


class _Run:
    def __init__(
        self,
        store: BlobStore,
        app: str,
        rules: tuple[PruneRule, ...],
        max_decompressed: int,
        never_inline: tuple[re.Pattern[str], ...] = (),
        policy: PartsPolicy = PartsPolicy(),
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.store = store
        self.app = app
        self.rules = rules
        self.max_decompressed = max_decompressed
        self.never_inline = never_inline
        self.policy = policy
        self.clock = clock
        self.report = MergeReport(app)
        self._sized = False

    def read_batch(self) -> tuple[Batch, str] | None:
        """The batch record and its etag, or None if the app never had one."""
        found = _read(self.store, batch_key(self.app))
        return None if found is None else (Batch.from_json(found[1]), found[0].etag)

    def open_batch(self, previous: tuple[Batch, str] | None, max_batch: int) -> tuple[Batch, str] | None:
        """Take the staged uploads into a new open batch; None if there are none or another run won."""
        app = read_app_generation(self.store, self.app)
        keys = []
        for info in self.store.list(staging_prefix(self.app)):
            generation = app.of_upload(info.key)
            if generation == app.number:
                keys.append(info.key)
            elif generation < app.number:  # staged before the app was deleted
                self.store.delete(info.key)
            # else: staged after a delete that came after the generation was read; the next batch takes it
        if not keys and not self._refresh_due(previous):
            return None
        keys.sort()  # roughly upload order: the key starts with the staging server's time
        batch = Batch(uuid.uuid4().hex, app.number, tuple(keys[:max_batch]), opened=time.time_ns())
        try:
            if previous is None:
                info = self.store.put(batch_key(self.app), batch.to_json(), if_none_match=True)
            else:
                info = self.store.put(batch_key(self.app), batch.to_json(), if_match=previous[1])
        except PreconditionFailedError:
            log.info("%s: another merge took the batch", self.app)
            return None
        log.debug("%s: batch %s with %d uploads", self.app, batch.id, len(batch.keys))
        return batch, info.etag

    def _refresh_due(self, previous: tuple[Batch, str] | None) -> bool:
        """Whether a batch of no uploads must derive the profile again (``refresh_due``)."""
        if not self.policy.active:
            return False
        if previous is None:
            return _orphan_parts(self.store, self.app)
        return previous[0].refresh_due(self.policy, self.clock())

    def commit(self, batch: Batch, etag: str) -> None:
        """Merge and write ``batch`` unless already written, then clean up."""
        app = read_app_generation(self.store, self.app)
        generation = batch.generation_in(app)
        if generation < app.number:
            log.info("%s: batch %s predates a delete; dropping it", self.app, batch.id)
            self._close(batch, etag)
            return
        current = read_merged(self.store, self.app, self.max_decompressed)
        if not self._sized:
            self.report.size_before = current.info.size if current else 0
            self._sized = True
        if self.policy.active:
            self._commit_parts(batch, etag, app, generation, current)
            return
        if current is not None and current.batch == batch.id:
            self._close(batch, etag)  # written before a crash; only the clean-up was left
            return
        still_ours = self.read_batch()
        if still_ours is None or still_ours[1] != etag:
            return  # another run finished this batch and moved on; look again
        merger = Merger()
        if current is not None:
            theirs = current.labels.generation_in(app)
            if theirs > generation:  # a delete and a merge since this batch began: it is hidden
                log.info("%s: batch %s predates a delete; dropping it", self.app, batch.id)
                self._close(batch, etag)
                return
            if theirs == generation:
                merger.add(current.tables, source=merged_key(self.app))
        merged_keys = [key for key in batch.keys if self._add_upload(merger, key)]
        if merger.headers.first is None:
            self._close(batch, etag)
            return
        data = self._encode(merger.result(), batch.id, generation)
        try:
            info = self._put_merged(current, data)
        except PreconditionFailedError:
            log.info("%s: merged profile changed while batch %s was merged; looking again", self.app, batch.id)
            return
        self.report.batches += 1
        self.report.merged.extend(merged_keys)
        self.report.committed.append((batch.id, tuple(merged_keys)))
        self.report.size_after = info.size
        self._close(batch, etag)

    def _commit_parts(
        self, batch: Batch, etag: str, app: AppGeneration, generation: int, current: MergedProfile | None
    ) -> None:
        """``commit`` for an app with parts: merge the batch into ``parts.bin`` (the commit point),
        then derive ``default.pgo`` from it. ``current`` was read before the parts, so that a
        profile derived from older parts never replaces one derived from newer ones."""
        stored = read_parts(self.store, self.app)
        theirs = max(
            current.labels.generation_in(app) if current is not None else generation,
            stored.record.generation if stored is not None else generation,
        )
        if theirs > generation:  # a delete and a merge since this batch began: it is hidden
            log.info("%s: batch %s predates a delete; dropping it", self.app, batch.id)
            self._close(batch, etag)
            return
        now = self.clock()
        shown = current is not None and current.labels.generation_in(app) == generation
        if stored is not None and stored.record.batch == batch.id:  # committed before a crash
            if current is None or current.batch != batch.id:
                if not self._derive(stored.record, batch.id, generation, current, now, shown):
                    return  # the profile changed meanwhile; look again
            self._close(batch, etag, expires_at(stored.record.parts, self.policy))
            return
        if current is not None and current.batch == batch.id:
            # Merged without parts before the settings changed: the next run seeds the parts with it.
            self._close(batch, etag, policy="")
            return
        still_ours = self.read_batch()
        if still_ours is None or still_ours[1] != etag:
            return  # another run finished this batch and moved on; look again
        mine = stored is not None and stored.record.generation == generation
        base = stored.record if stored is not None and mine else PartsRecord()
        # A profile merged without parts (the settings were just set), or whose parts are gone,
        # becomes a part dated when it was written.
        seed = shown and current is not None and (not current.labels.derived or not mine)
        if seed:
            base = PartsRecord(next_seq=base.next_seq, first_seen=base.first_seen)
        builder = PartsBuilder(base, self.policy, now, self.max_decompressed)
        if seed and current is not None and current.tables.sample_values:
            header = dataclasses.replace(current.tables.header, comments=_without_labels(current.tables))
            builder.seed(dataclasses.replace(current.tables, header=header), min(_ns(current.info.last_modified), now))
        for key in batch.keys:
            self._add_part(builder, key)
        record, outcomes = builder.finish(batch.id, generation)
        if not record.parts and not mine and not shown:
            self._close(batch, etag, policy=self.policy.fingerprint())  # nothing to keep: nothing written
            self.report.expired.extend(outcomes.expired)
            return
        try:
            if stored is None:
                self.store.put(parts_key(self.app), encode_parts(record), if_none_match=True)
            else:
                self.store.put(parts_key(self.app), encode_parts(record), if_match=stored.info.etag)
        except PreconditionFailedError:
            log.info("%s: parts changed while batch %s was merged; looking again", self.app, batch.id)
            return
        self.report.batches += 1
        self.report.merged.extend(outcomes.merged)
        self.report.expired.extend(outcomes.expired)
        self.report.superseded.extend(outcomes.superseded)
        self.report.committed.append((batch.id, tuple(outcomes.merged)))
        if not self._derive(record, batch.id, generation, current, now, shown):
            return  # the profile changed meanwhile; the next round derives it again
        self._close(batch, etag, expires_at(record.parts, self.policy))

    def _derive(
        self, record: PartsRecord, batch: str, generation: int, current: MergedProfile | None, now: int, shown: bool
    ) -> bool:
        """Write ``default.pgo`` derived from ``record``, replacing only ``current`` (``shown``: of
        the batch's generation, so not hidden by a delete); False if it changed meanwhile."""
        derived = derive(record, self.policy, now, self.max_decompressed)
        self.report.derived = derived
        tables = derived.tables
        if tables is None:
            if current is None or not shown:  # nothing to serve, and nothing served: left as it is
                self.report.profile = None
                return True
            # Every part aged out: an empty profile of the same kind (a build with it is one without PGO).
            h = current.tables.header
            tables = ProfileTables(header=Header(h.sample_types, h.period_type, h.period))
        extra = [f"{PARTS_COMMENT}{derived.parts}"]
        if derived.tables is not None:
            extra.append(f"{WINDOW_COMMENT}{derived.oldest}-{derived.newest}")
            if derived.build:
                extra.append(f"{BUILD_COMMENT}{derived.build}")
        data = self._encode(tables, batch, generation, extra)
        try:
            info = self._put_merged(current, data)
        except PreconditionFailedError:
            log.info("%s: merged profile changed while batch %s was derived; looking again", self.app, batch)
            return False
        self.report.size_after = info.size
        return True

    def _add_part(self, builder: PartsBuilder, key: str) -> None:
        try:
            data = self.store.get(key)
        except BlobNotFoundError:
            return  # rejected by an earlier attempt at this batch
        try:
            builder.add(decode_tables(data, max_decompressed=self.max_decompressed), time_of(key), workload_of(key), key)
        except ProfileError as exc:
            self._reject(key, data, str(exc))

    def _put_merged(self, current: MergedProfile | None, data: bytes) -> BlobInfo:
        """Write the merged profile if it is still the version read (``current``, None: none yet)."""
        if current is None:
            return self.store.put(merged_key(self.app), data, if_none_match=True)
        return self.store.put(merged_key(self.app), data, if_match=current.info.etag)

    def _add_upload(self, merger: Merger, key: str) -> bool:
        try:
            data = self.store.get(key)
        except BlobNotFoundError:
            return False  # rejected by an earlier attempt at this batch
        try:
            merger.add(decode_tables(data, max_decompressed=self.max_decompressed), source=key)
        except ProfileError as exc:
            self._reject(key, data, str(exc))
            return False
        return True

    def _encode(self, tables: ProfileTables, batch: str, generation: int, extra: Sequence[str] = ()) -> bytes:
        profile = guard_never_inline(apply_rules(to_profile(tables), self.rules), self.never_inline)
        profile.comments = [c for c in profile.comments if not c.startswith(LABEL_COMMENTS)] + [
            f"{BATCH_COMMENT}{batch}",
            f"{GENERATION_COMMENT}{generation}",
            *extra,
        ]
        self.report.profile = profile
        return encode(from_profile(profile))

    def _reject(self, key: str, data: bytes, reason: str) -> None:
        name = key.rsplit("/", 1)[-1]
        target = f"{rejected_prefix(self.app)}{name}"
        self.store.put(target, data)
        self.store.put(f"{target}.reason", reason.encode())
        self.store.delete(key)
        self.report.rejected.append((key, reason))
        log.warning("%s: rejected %s: %s", self.app, key, reason)

    def _close(self, batch: Batch, etag: str, expires: int = 0, policy: str | None = None) -> None:
        """Remove the batch's uploads, then mark it closed unless another run already has.

        An app with parts notes in the closed record when its profile must next be derived again."""
        for key in batch.keys:
            self.store.delete(key)
        if policy is None:
            policy = self.policy.fingerprint()
        try:
            self.store.put(batch_key(self.app), batch.closed(expires, policy).to_json(), if_match=etag)
        except PreconditionFailedError:
            pass
        log.debug("%s: batch %s closed", self.app, batch.id)


_EPOCH = datetime.fromtimestamp(0, timezone.utc)


def _ns(when: datetime) -> int:
    return (when - _EPOCH) // timedelta(microseconds=1) * 1000


def _without_labels(t: ProfileTables) -> tuple[str, ...]:
    return tuple(c for c in t.header.comments if not c.startswith(LABEL_COMMENTS))
