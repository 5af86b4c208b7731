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

A batch commits when ``default.pgo`` with its id is written, conditionally on
the version that was read after checking that the batch is still open. Its
uploads are removed only after that, and the batch is closed last. Each run
first finishes an open batch left by a crashed run: if ``default.pgo`` already
holds it, only the clean-up is left; otherwise it is merged again from the same
keys. So a process killed between any two steps, then run again, gives the
profile an undisturbed run gives.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from .blobs import BlobInfo, BlobStore
from google.protobuf.message import DecodeError

from .codec import DEFAULT_MAX_DECOMPRESSED, decode_tables, decompress, encode
from .errors import BlobNotFoundError, PreconditionFailedError, ProfileError
from .merge import Merger
from .model import Profile
from .proto.columns_pb2 import ByteStringProfile
from .generations import AppGeneration, read_app_generation
from .names import (
    app_of,
    batch_key,
    generation_key,
    merged_key,
    rejected_prefix,
    staging_prefix,
    tombstone_prefix,
)
from .noinline import guard_never_inline
from .rules import PruneRule, apply_rules
from .tables import ProfileTables, from_profile, to_profile

log = logging.getLogger(__name__)

BATCH_COMMENT = "autopgo.batch="
SINCE_COMMENT = "autopgo.since="  # profiles from before generations
GENERATION_COMMENT = "autopgo.generation="
LABEL_COMMENTS = (BATCH_COMMENT, SINCE_COMMENT, GENERATION_COMMENT)
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

    def to_json(self) -> bytes:
        fields = {
            "id": self.id,
            "generation": self.generation,
            "keys": list(self.keys),
            "open": self.open,
            "opened": self.opened,
            "since": self.since,
        }
        return json.dumps(fields).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Batch:
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
        )

    def closed(self) -> Batch:
        return Batch(self.id, self.generation, (), open=False, opened=self.opened, since=self.since)

    def generation_in(self, app: AppGeneration) -> int:
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

    @property
    def samples(self) -> int:
        return len(self.profile.samples) if self.profile else 0


@dataclass(frozen=True, slots=True)
class Labels:
    """What a merged profile's comments say: the batch that wrote it, and its generation
    (or, from before generations, since when it held data)."""

    batch: str | None = None
    generation: int | None = None
    since: int = 0

    @classmethod
    def of(cls, comments: Iterable[str]) -> Labels:
        batch, generation, since = None, None, 0
        for comment in comments:
            value = comment.partition("=")[2]
            if comment.startswith(BATCH_COMMENT):
                batch = value
            elif comment.startswith(GENERATION_COMMENT) and value.isdigit():
                generation = int(value)
            elif comment.startswith(SINCE_COMMENT) and value.isdigit():
                since = int(value)
        return cls(batch, generation, since)

    def generation_in(self, app: AppGeneration) -> int:
        return app.of_labels(self.generation, self.since)

    def hidden_in(self, app: AppGeneration) -> bool:
        """Whether a delete hides the profile so labelled: never merged into, never served."""
        return app.hides_labels(self.generation, self.since)


@dataclass(frozen=True, slots=True)
class MergedProfile:
    info: BlobInfo
    tables: ProfileTables
    labels: Labels

    @property
    def batch(self) -> str | None:
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


def labels_of(data: bytes, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> Labels:
    """The labels of a merged profile, read without decoding the rest."""
    try:
        msg = ByteStringProfile.FromString(decompress(data, max_decompressed))
        strings = msg.string_table
        comments = [strings[i] for i in msg.comment if 0 <= i < len(strings)]
    except DecodeError:
        raise ProfileError("not a pprof profile: invalid protobuf data") from None
    prefixes = tuple(c.encode() for c in LABEL_COMMENTS)
    return Labels.of(c.decode("utf-8", "replace") for c in comments if c.startswith(prefixes))


def read_merged(store: BlobStore, app: str, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> MergedProfile | None:
    """The app's merged profile and its batch comments, or None if there is none."""
    try:
        info, stream = store.open(merged_key(app))
    except BlobNotFoundError:
        return None
    with stream:
        data = stream.read()
    tables = decode_tables(data, max_decompressed=max_decompressed)
    return MergedProfile(info, tables, Labels.of(tables.header.comments))


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
) -> MergeReport:
    """Merge every staged upload of ``app``, batch after batch, until none is left.

    Returns early if another run owns an open batch: that run drains what is
    staged, including what arrives while it works. An open batch older than
    ``recover_after`` is taken to be left by a run that died, and finished.
    Functions matching ``never_inline`` are guarded from PGO's inlining (``noinline.py``).
    """
    run = _Run(store, app, tuple(rules), max_decompressed, tuple(never_inline))
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
    ) -> None:
        self.store = store
        self.app = app
        self.rules = rules
        self.max_decompressed = max_decompressed
        self.never_inline = never_inline
        self.report = MergeReport(app)
        self._sized = False

    def read_batch(self) -> tuple[Batch, str] | None:
        """The batch record and its etag, or None if the app never had one."""
        try:
            info, stream = self.store.open(batch_key(self.app))
        except BlobNotFoundError:
            return None
        with stream:
            return Batch.from_json(stream.read()), info.etag

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
        if not keys:
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
        data = self._encode(merger, batch.id, generation)
        try:
            if current is None:
                info = self.store.put(merged_key(self.app), data, if_none_match=True)
            else:
                info = self.store.put(merged_key(self.app), data, if_match=current.info.etag)
        except PreconditionFailedError:
            log.info("%s: merged profile changed while batch %s was merged; looking again", self.app, batch.id)
            return
        self.report.batches += 1
        self.report.merged.extend(merged_keys)
        self.report.committed.append((batch.id, tuple(merged_keys)))
        self.report.size_after = info.size
        self._close(batch, etag)

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

    def _encode(self, merger: Merger, batch: str, generation: int) -> bytes:
        profile = guard_never_inline(apply_rules(to_profile(merger.result()), self.rules), self.never_inline)
        profile.comments = [c for c in profile.comments if not c.startswith(LABEL_COMMENTS)] + [
            f"{BATCH_COMMENT}{batch}",
            f"{GENERATION_COMMENT}{generation}",
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

    def _close(self, batch: Batch, etag: str) -> None:
        """Remove the batch's uploads, then mark it closed unless another run already has."""
        for key in batch.keys:
            self.store.delete(key)
        try:
            self.store.put(batch_key(self.app), batch.closed().to_json(), if_match=etag)
        except PreconditionFailedError:
            pass
        log.debug("%s: batch %s closed", self.app, batch.id)
