"""Exactly-once batch merging, deletes and cleaning, on the filesystem store (crashes: test_crashes.py)."""

from __future__ import annotations

import json
import random
import re
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from profiling.pipeline import (
    LABEL_COMMENTS,
    CleanRule,
    PruneRule,
    batch_key,
    clean,
    delete_app,
    generation_key,
    generation_of,
    has_data,
    mark_deleted,
    merge_pending,
    merged_key,
    needs_cleanup,
    new_staging_key,
    read_merged,
    rejected_prefix,
    stage_upload,
    staging_prefix,
    tombstone_key,
)
from profiling.pprof import (
    NOINLINE_SUFFIX,
    Function,
    Line,
    Location,
    Profile,
    Sample,
    ValueType,
    encode,
    guard_never_inline,
    merge,
    pgo_edges,
    to_profile,
)
from profiling.storage import open_store

APP = "shop"
CPU = [ValueType("samples", "count"), ValueType("cpu", "nanoseconds")]


def upload_profile(n: int, weight: int = 1) -> Profile:
    """A CPU profile whose leaf function names the upload, so each upload can be counted."""
    return Profile(
        sample_types=list(CPU),
        period_type=ValueType("cpu", "nanoseconds"),
        period=10_000_000,
        functions=[Function(1, "main.main", "main.main", "main.go", 3), Function(2, f"main.upload{n}", "", "main.go", 9)],
        locations=[Location(1, 0, 0x10, (Line(1, 5),)), Location(2, 0, 0x20 + n, (Line(2, 10),))],
        samples=[Sample((2, 1), (weight, weight * 10_000_000)), Sample((1,), (1, 10_000_000))],
        duration_nanos=1_000_000_000,
    )


def stage(store, n: int, now_ns: int | None = None) -> str:
    """Upload ``n`` as the API stages it (``now_ns`` names the key, as a server's clock would)."""
    clock = time.time_ns if now_ns is None else (lambda: now_ns)
    return stage_upload(store, APP, encode(upload_profile(n)), clock=clock)


def without_batch_comments(p: Profile) -> Profile:
    p.comments = [c for c in p.comments if not c.startswith(LABEL_COMMENTS)]
    return p


def merged_profile(store) -> Profile:
    current = read_merged(store, APP)
    assert current is not None
    return without_batch_comments(to_profile(current.tables))


def counts(p: Profile) -> dict[str, int]:
    """Samples per upload function in a merged profile."""
    names = {f.id: f.name for f in p.functions}
    leaf = {loc.id: names[loc.lines[0].function_id] for loc in p.locations}
    out: dict[str, int] = {}
    for s in p.samples:
        name = leaf[s.location_ids[0]]
        if name.startswith("main.upload"):
            out[name] = out.get(name, 0) + s.values[0]
    return out


@pytest.fixture
def store(tmp_path: Path):
    return open_store(str(tmp_path / "blobs"))


def test_merges_every_staged_upload_in_one_batch(store) -> None:
    keys = [stage(store, n) for n in range(5)]
    report = merge_pending(store, APP)

    assert report.batches == 1 and sorted(report.merged) == sorted(keys)
    assert merged_profile(store) == merge([upload_profile(n) for n in range(5)])
    assert list(store.list(staging_prefix(APP))) == []


def test_later_batches_merge_into_the_profile(store) -> None:
    for n in range(3):
        stage(store, n)
    merge_pending(store, APP)
    for n in range(3, 6):
        stage(store, n)
    merge_pending(store, APP, max_batch=2)  # drains in two batches

    assert merged_profile(store) == merge([upload_profile(n) for n in range(6)])
    assert counts(merged_profile(store)) == {f"main.upload{n}": 1 for n in range(6)}


def test_bad_uploads_are_moved_aside_with_the_reason(store) -> None:
    good = stage(store, 1)
    garbage = new_staging_key(APP)
    store.put(garbage, b"not a profile")
    heap = new_staging_key(APP)
    p = upload_profile(2)
    p.sample_types = [ValueType("alloc_space", "bytes"), ValueType("inuse_space", "bytes")]
    store.put(heap, encode(p))

    report = merge_pending(store, APP)

    assert report.merged == [good]
    assert sorted(k for k, _ in report.rejected) == sorted([garbage, heap])
    rejected = {info.key for info in store.list(rejected_prefix(APP))}
    for key in (garbage, heap):
        name = key.rsplit("/", 1)[-1]
        assert f"{rejected_prefix(APP)}{name}" in rejected
        assert store.get(f"{rejected_prefix(APP)}{name}.reason")
    assert b"incompatible sample types" in store.get(f"{rejected_prefix(APP)}{heap.rsplit('/', 1)[-1]}.reason")
    assert counts(merged_profile(store)) == {"main.upload1": 1}


def test_prune_rules_apply(store) -> None:
    stage(store, 1)
    merge_pending(store, APP, [PruneRule.of(r"^main\.upload")])
    assert counts(merged_profile(store)) == {}


def test_never_inline_guard_applies_at_every_merge_once(store) -> None:
    """Each merge guards what it writes; merging into a guarded profile renames nothing twice."""
    guard = [re.compile(r"^main\.upload")]
    for n in range(3):
        stage(store, n)
    merge_pending(store, APP, never_inline=guard)
    for n in range(3, 5):
        stage(store, n)
    merge_pending(store, APP, never_inline=guard)

    merged = merged_profile(store)
    names = sorted(fn.name for fn in merged.functions)
    assert names == ["main.main", *sorted(f"main.upload{n}{NOINLINE_SUFFIX}" for n in range(5))]
    in_one_go = guard_never_inline(merge([upload_profile(n) for n in range(5)]), guard)
    assert pgo_edges(merged).weights == pgo_edges(in_one_go).weights
    assert counts(merged) == {f"main.upload{n}{NOINLINE_SUFFIX}": 1 for n in range(5)}


def test_uploads_merges_and_a_delete_racing(store) -> None:
    # (upload, key, answered before the delete began, begun after it was answered)
    uploaded: list[tuple[int, str, bool, bool]] = []
    deleting, deleted = threading.Event(), threading.Event()
    stop = threading.Event()
    errors: list[BaseException] = []

    def uploader(first: int) -> None:
        for n in range(first, first + 40):
            after = deleted.is_set()
            key = stage(store, n)
            uploaded.append((n, key, not deleting.is_set(), after))
            time.sleep(random.random() / 500)

    def merger() -> None:
        try:
            while not stop.is_set():
                merge_pending(store, APP, max_batch=7, recover_after=timedelta(0))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=uploader, args=(i * 100,)) for i in range(3)]
    mergers = [threading.Thread(target=merger) for _ in range(2)]
    for t in threads + mergers:
        t.start()
    time.sleep(0.05)
    deleting.set()
    generation = mark_deleted(store, APP)
    deleted.set()
    delete_app(store, APP)
    for t in threads:
        t.join()
    stop.set()
    for t in mergers:
        t.join()
    merge_pending(store, APP)
    assert not errors

    kept = {n for n, key, _, _ in uploaded if generation_of(key) == generation}
    assert {n for n, _, _, after in uploaded if after} <= kept  # everything after the delete counts
    assert not {n for n, _, before, _ in uploaded if before} & kept  # nothing from before it does
    assert counts(merged_profile(store)) == {f"main.upload{n}": 1 for n in kept}  # each once
    assert read_merged(store, APP).labels.generation == generation


def test_delete_hides_at_once_and_removes_everything(store) -> None:
    for n in range(3):
        stage(store, n)
    merge_pending(store, APP)
    stage(store, 7)
    bad = new_staging_key(APP)
    store.put(bad, b"junk")
    merge_pending(store, APP)
    assert has_data(store, APP)

    generation = mark_deleted(store, APP)
    assert not has_data(store, APP)
    current = read_merged(store, APP)
    assert current is not None and current.labels.generation < generation  # stale: the API must not serve it

    report = delete_app(store, APP)
    left = [info.key for info in store.list(f"{APP}/")]
    assert merged_key(APP) in report.removed
    assert left == [generation_key(APP)]

    stage(store, 11)
    merge_pending(store, APP)
    assert counts(merged_profile(store)) == {"main.upload11": 1}  # a fresh profile


def legacy_staged(store, n: int, when_ns: int) -> str:
    """An upload staged as before generations: a key without ``-g<n>``."""
    key = f"{staging_prefix(APP)}{when_ns:020d}-{n:016x}.pb.gz"
    store.put(key, encode(upload_profile(n)))
    return key


def test_a_store_from_before_generations_keeps_working(store) -> None:
    tombstone = 1_700_000_000_000_000_000  # a delete as it was recorded then: by its time
    store.put(tombstone_key(APP, tombstone - 100), b"")
    store.put(tombstone_key(APP, tombstone), b"")
    before = legacy_staged(store, 2, tombstone - 10)
    after = legacy_staged(store, 3, tombstone + 10)
    old = merge([upload_profile(0), upload_profile(1)])
    old.comments = ["autopgo.batch=old", f"autopgo.since={tombstone}"]  # merged after that delete
    store.put(merged_key(APP), encode(old))
    # a batch a crashed merge left open, as records were written then
    store.put(batch_key(APP), json.dumps({"id": "old2", "since": tombstone, "keys": [after], "open": True}).encode())
    assert has_data(store, APP) and needs_cleanup(store, APP)  # upload 2 is hidden, not yet removed

    stage(store, 4)  # an upload now: generation 0, as the app never was deleted since
    merge_pending(store, APP, recover_after=timedelta(0))
    assert counts(merged_profile(store)) == {f"main.upload{n}": 1 for n in (0, 1, 3, 4)}
    assert before not in {info.key for info in store.list(staging_prefix(APP))}
    assert not needs_cleanup(store, APP)

    mark_deleted(store, APP)  # the first delete since: hides all of it, whatever its time
    assert not has_data(store, APP) and needs_cleanup(store, APP)
    delete_app(store, APP)
    assert [info.key for info in store.list(f"{APP}/")] == [generation_key(APP)]


def test_a_merged_profile_from_before_a_tombstone_stays_hidden(store) -> None:
    tombstone = 1_700_000_000_000_000_000
    store.put(tombstone_key(APP, tombstone), b"")
    old = upload_profile(0)
    old.comments = ["autopgo.batch=old", f"autopgo.since={tombstone - 1}"]
    store.put(merged_key(APP), encode(old))
    assert not has_data(store, APP) and needs_cleanup(store, APP)
    stage(store, 1)
    merge_pending(store, APP)
    assert counts(merged_profile(store)) == {"main.upload1": 1}  # a fresh profile


def test_clean_by_age_and_size(store) -> None:
    for app, size in (("old", 10), ("big", 5000), ("fine", 10)):
        store.put(merged_key(app), b"x" * size)
    store.put(new_staging_key("old"), b"staged")
    now = datetime.now(timezone.utc)

    assert {i.key for i in clean(store, CleanRule(larger_than=1000), dry_run=True)} == {merged_key("big")}
    assert clean(store, CleanRule(older_than=timedelta(hours=1)), now=now) == []
    removed = clean(store, CleanRule(older_than=timedelta(hours=1)), now=now + timedelta(hours=2))
    assert {i.key for i in removed} == {merged_key(a) for a in ("old", "big", "fine")}
    assert [i.key for i in store.list("old/")] != []  # staged uploads are not the clean's business
    with pytest.raises(ValueError):
        CleanRule()
