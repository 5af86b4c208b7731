"""A process killed after every write to the store, then the flows run again: on
the file store and on a real S3 (SeaweedFS), whose conditional writes are
what the batch protocol and the generations rest on.

- merge: batches taken over after a crash give the profile an undisturbed run gives.
- delete: deletes racing uploads and merges: whatever was answered before a
  delete's answer is gone, whatever after it is merged once, and the operation
  in flight at the kill counts whole or not at all.

The killing is done by ``crashes.py`` (a driver that forks a child per crash).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest
from crashes import (
    DELETE_PARTS_POLICY,
    DELETE_SETUP_UPLOADS,
    DELETE_STEPS,
    PARALLEL,
    crash_app,
    recover_deletes,
    recover_parts,
    run_parts,
    setup_delete,
    setup_merge,
    setup_parts,
)
from seaweed import SeaweedFS, seaweedfs  # noqa: F401  (seaweedfs is a session fixture)
from test_batches import counts, without_batch_comments

from profiling.pipeline import PartsPolicy, merge_pending, needs_cleanup, read_generation, read_merged, staging_prefix
from profiling.pprof import Profile, to_profile
from profiling.storage import BlobStore, open_store

HERE = Path(__file__).resolve().parent
T = TypeVar("T")
COUNT = 10**6  # a limit no scenario reaches: the run that counts the writes


@dataclass
class Target:
    """A store to crash in, as a URL for the driver and opened here."""

    url: str
    env: dict[str, str]
    store: BlobStore


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.slow)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "file":
        url, env = f"file://{tmp_path / 'blobs'}", {}
    else:
        server: SeaweedFS = request.getfixturevalue("seaweedfs")
        url, env = server.url(f"crash-{uuid.uuid4().hex[:12]}"), server.credentials_env()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        store = open_store(url)
    try:
        yield Target(url, env, store)
    finally:
        store.close()


def crash(target: Target, scenario: str, workdir: Path, limits: list[int]) -> dict[int, str]:
    """Run ``scenario`` once per limit, each killed before that many writes: each limit's outcome."""
    env = {**os.environ, **target.env}
    result = subprocess.run(
        [sys.executable, str(HERE / "crashes.py"), scenario, target.url, str(workdir), *map(str, limits)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    outcomes = dict(line.split() for line in result.stdout.splitlines())
    assert set(map(int, outcomes)) == set(limits), result.stderr
    return {int(limit): outcome for limit, outcome in outcomes.items()}


def acknowledged(workdir: Path, limit: int) -> list[str]:
    path = workdir / f"acks-{limit}"
    return path.read_text().splitlines() if path.exists() else []


def writes_of(target: Target, scenario: str, setup, workdir: Path) -> int:
    """How many writes the scenario makes when nothing kills it."""
    setup(target.store, crash_app(COUNT))
    assert crash(target, scenario, workdir, [COUNT]) == {COUNT: "done"}
    last = acknowledged(workdir, COUNT)[-1]
    assert last.startswith("end ")
    return int(last.split()[1])


def each(limits: range, work: Callable[[int], T]) -> list[T]:
    """``work`` for every limit, a few at a time (each has its own app; the store does the waiting)."""
    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(work, limits))


def merged(store: BlobStore, app: str) -> Profile | None:
    current = read_merged(store, app)
    return None if current is None else without_batch_comments(to_profile(current.tables))


def test_merge_killed_at_every_write_then_resumed_counts_each_upload_once(target: Target, tmp_path: Path) -> None:
    store = target.store
    setup_merge(store, "reference")
    merge_pending(store, "reference", max_batch=3)
    expected = merged(store, "reference")
    assert expected is not None and counts(expected) == {f"main.upload{n}": 1 for n in range(10)}

    total = writes_of(target, "merge", setup_merge, tmp_path)
    assert total > 10
    each(range(total), lambda limit: setup_merge(store, crash_app(limit)))
    outcomes = crash(target, "merge", tmp_path, list(range(total)))

    def recovered(limit: int) -> tuple[Profile | None, list[str]]:
        app = crash_app(limit)
        merge_pending(store, app, max_batch=3, recover_after=timedelta(0))
        return merged(store, app), [info.key for info in store.list(staging_prefix(app))]

    for limit, (profile, left) in zip(range(total), each(range(total), recovered), strict=True):
        assert outcomes[limit] == "killed", limit
        assert profile == expected, f"killed before write {limit}"
        assert left == []


def upload_number(step: str) -> int | None:
    kind, _, what = step.partition(" ")
    return int(what) if kind == "upload" else None


def test_deletes_racing_uploads_killed_at_every_write(target: Target, tmp_path: Path) -> None:
    deletes_racing_uploads(target, tmp_path, "delete", PartsPolicy())


def test_deletes_racing_uploads_with_parts_killed_at_every_write(target: Target, tmp_path: Path) -> None:
    """As above, for an app with builds and workloads: its parts are hidden and removed with the rest."""
    deletes_racing_uploads(target, tmp_path, "delete-parts", DELETE_PARTS_POLICY)


def deletes_racing_uploads(target: Target, tmp_path: Path, scenario: str, policy: PartsPolicy) -> None:
    store = target.store
    total = writes_of(target, scenario, partial(setup_delete, policy=policy), tmp_path)
    assert acknowledged(tmp_path, COUNT)[:-1] == list(DELETE_STEPS)
    each(range(total), lambda limit: setup_delete(store, crash_app(limit), policy))
    outcomes = crash(target, scenario, tmp_path, list(range(total)))

    def recovered(limit: int) -> tuple[dict[str, int], int, list[str], bool]:
        app = crash_app(limit)
        recover_deletes(store, app, policy)
        got = merged(store, app)
        left = [info.key for info in store.list(staging_prefix(app))]
        return counts(got) if got else {}, read_generation(store, app).number, left, needs_cleanup(store, app)

    for limit, (found, generation, left, unclean) in zip(range(total), each(range(total), recovered), strict=True):
        assert outcomes[limit] == "killed", limit
        done = acknowledged(tmp_path, limit)
        assert done == list(DELETE_STEPS[: len(done)])
        in_flight = DELETE_STEPS[len(done)]
        # A delete's one write is its generation: it took effect exactly when it was answered.
        deletes = [i for i, step in enumerate(done) if step.startswith("delete")]
        after = deletes[-1] if deletes else -1
        must = {upload_number(step) for step in done[after + 1 :]} - {None}
        if not deletes:
            must |= set(DELETE_SETUP_UPLOADS)
        may = {5} if in_flight == "delete a" else {upload_number(in_flight)} - {None}

        where = f"killed before write {limit}, in {in_flight!r} after {done}"
        assert set(found.values()) <= {1}, where  # nothing twice
        assert {f"main.upload{n}" for n in must} <= set(found) <= {f"main.upload{n}" for n in must | may}, where
        assert generation == len(deletes), where
        assert left == [] and not unclean, where


def test_merge_with_parts_killed_at_every_write_then_resumed(target: Target, tmp_path: Path) -> None:
    """An app given a window, builds and workloads: seeding the parts from its merged profile,
    batches into the parts, deriving the profile, and a refresh once a part aged out."""
    store = target.store
    setup_parts(store, "reference")
    run_parts(store, "reference", lambda step: None)
    expected = merged(store, "reference")
    assert expected is not None
    assert set(counts(expected)) == {"main.upload0", "main.upload1", "main.upload2", "main.upload3", "main.upload5",
                                     "main.upload7", "main.upload9"}

    total = writes_of(target, "parts", setup_parts, tmp_path)
    each(range(total), lambda limit: setup_parts(store, crash_app(limit)))
    outcomes = crash(target, "parts", tmp_path, list(range(total)))

    def recovered(limit: int) -> tuple[Profile | None, list[str]]:
        app = crash_app(limit)
        recover_parts(store, app)
        return merged(store, app), [info.key for info in store.list(staging_prefix(app))]

    for limit, (profile, left) in zip(range(total), each(range(total), recovered), strict=True):
        assert outcomes[limit] == "killed", limit
        assert profile == expected, f"killed before write {limit}"
        assert left == []
