"""Kill a real process at every write, for the crash tests (test_crashes.py).

A scenario is a sequence of operations on one app, as the API and the flows
run them: ``setup`` makes the store it starts from, ``run`` does the
operations and appends a line to an acknowledgement file as each one returns
(what a client would have been answered). Each crash gets its own app in one
store, so that the store (a folder, or an S3 prefix) is made once.

Run as a script, this is the driver: ``python crashes.py SCENARIO STORE_URL
WORKDIR LIMIT...``. It imports everything once, then for each LIMIT forks a
child (a few at a time) that runs the scenario on app ``crash-<LIMIT>`` and kills itself with
SIGKILL just before its LIMIT-th write (put or delete) to the store; the child
writes ``end <writes>`` to its acknowledgements if it is not killed. Forking
a warm interpreter keeps a crash to a few milliseconds beyond its own writes.
The driver prints, per limit, ``<limit> killed`` or ``<limit> done``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # run as a script: the project and the tests
    sys.path.insert(0, str(HERE.parent))
    sys.path.insert(0, str(HERE))

from test_batches import upload_profile  # noqa: E402

from profiling.names import is_valid_app_name
from profiling.pipeline import (  # noqa: E402  # noqa: E402
    PartsPolicy,  # noqa: E402
    delete_app,
    mark_deleted,
    merge_pending,  # noqa: E402
    new_staging_key,
    stage_upload,  # noqa: E402
    staging_prefix,
)
from profiling.pprof import (  # noqa: E402
    Location,
    Mapping,
    Profile,
    encode,  # noqa: E402
)
from profiling.storage import (
    BlobStore,  # noqa: E402
    open_store,  # noqa: E402
)

Ack = Callable[[str], None]
PARALLEL = 4  # crashes run at once (each on its own app); they wait on the store more than on the CPU


def crash_app(limit: int) -> str:
    app = f"crash-{limit}"
    assert is_valid_app_name(app)
    return app


def stage(store: BlobStore, app: str, n: int, now_ns: int | None = None) -> str:
    """Upload ``n`` as the API does (``now_ns`` names the key, as a server's clock would)."""
    clock = time.time_ns if now_ns is None else (lambda: now_ns)
    return stage_upload(store, app, encode(upload_profile(n)), clock=clock)


def staged(store: BlobStore, app: str, n: int, now_ns: int, generation: int = 0) -> None:
    """Upload ``n`` as staged under ``generation`` (one write: for setting up, not what is tested)."""
    store.put(new_staging_key(app, now_ns, generation), encode(upload_profile(n)), if_none_match=True)


# ------------------------------------------------------------------ merge: batches resumed after a crash


def setup_merge(store: BlobStore, app: str) -> None:
    """A merged profile of uploads 0-2 and uploads 3-9 staged (named by a fixed clock, so in order)."""
    for n in range(3):
        staged(store, app, n, now_ns=1_000 + n)
    merge_pending(store, app)
    for n in range(3, 10):
        staged(store, app, n, now_ns=2_000 + n)


def run_merge(store: BlobStore, app: str, ack: Ack) -> None:
    merge_pending(store, app, max_batch=3, recover_after=timedelta(0))
    ack("merge")


# ------------------------------------------------------------------ parts: a window, builds and workloads

HOUR = 3600 * 10**9
PARTS_NOW = 1_700_000_000 * 10**9  # the clock of the first merge; the refresh runs AGED_BY later
AGED_BY = 10 * HOUR
PARTS_POLICY = PartsPolicy.of(window=timedelta(hours=72), builds=3, workloads={"api": 3, "batch": 1})
# upload -> (collected hours before PARTS_NOW, build, workload)
PARTS_UPLOADS = {
    3: (1, "b1", "api"),
    4: (100, "b1", "api"),  # older than the window when merged: into nothing
    5: (2, "b2", "batch"),
    6: (70, "b1", ""),  # in the window when merged, aged out by the refresh
    7: (3, "b1", "api"),
    8: (60, "b0", "batch"),  # of a build first seen before the newest 3: into nothing
    9: (1, "b2", "api"),
}


def built_upload(n: int, build: str, collected_ns: int) -> Profile:
    """Upload ``n`` of a binary with this build id, collected at ``collected_ns``."""
    p = upload_profile(n, weight=n)
    p.mappings = [Mapping(1, 0x400000, 0x800000, 0, "/bin/service", build, has_functions=True)]
    p.locations = [Location(loc.id, 1, 0x400000 + loc.address, loc.lines) for loc in p.locations]
    p.time_nanos = collected_ns
    return p


def setup_parts(store: BlobStore, app: str) -> None:
    """A merged profile of uploads 0-2 merged without parts, and uploads 3-9 staged for an app with parts."""
    for n in range(3):
        staged(store, app, n, now_ns=PARTS_NOW - 200 * HOUR + n)
    merge_pending(store, app)
    for n, (hours, build, workload) in PARTS_UPLOADS.items():
        data = encode(built_upload(n, build, PARTS_NOW - hours * HOUR))
        store.put(new_staging_key(app, PARTS_NOW - HOUR // 2 + n, 0, workload), data, if_none_match=True)


def merge_parts(store: BlobStore, app: str, now_ns: int, max_batch: int = 3) -> None:
    merge_pending(store, app, max_batch=max_batch, recover_after=timedelta(0), policy=PARTS_POLICY, clock=lambda: now_ns)


def run_parts(store: BlobStore, app: str, ack: Ack) -> None:
    """The settings just set: the merged profile seeds the parts, three batches, then a refresh
    with no upload once a part has aged out."""
    merge_parts(store, app, PARTS_NOW)
    ack("merge")
    merge_parts(store, app, PARTS_NOW + AGED_BY)
    ack("refresh")


def recover_parts(store: BlobStore, app: str) -> None:
    merge_parts(store, app, PARTS_NOW + AGED_BY)


# ------------------------------------------------------------------ delete: deletes racing uploads and merges

# The operations of ``run_delete``, in order: ("upload", n) or ("delete", name), and the rest.
DELETE_STEPS = (
    "delete a",  # another server's, between upload 5's staging and its second read
    "upload 5",
    "upload 6",
    "merge",
    "upload 7",
    "delete b",
    "upload 8",
    "cascade",
    "merge",
    "upload 9",
)
DELETE_SETUP_UPLOADS = (0, 1, 2, 3, 4)


def setup_delete(store: BlobStore, app: str, policy: PartsPolicy = PartsPolicy()) -> None:
    """A merged profile of uploads 0-2, and uploads 3 and 4 staged."""
    for n in range(3):
        staged(store, app, n, now_ns=1_000 + n)
    merge_pending(store, app, policy=policy)
    for n in (3, 4):
        staged(store, app, n, now_ns=2_000 + n)


class _RacingDelete:
    """The store as one server sees it while another deletes the app: right after the
    first staging write, the other server's DELETE is done and answered."""

    def __init__(self, store: BlobStore, app: str, ack: Ack) -> None:
        self._store = store
        self._app = app
        self._ack = ack
        self._fired = False

    def put(self, key: str, data: bytes, **conditions: object) -> object:
        info = self._store.put(key, data, **conditions)  # type: ignore[arg-type]
        if not self._fired and key.startswith(staging_prefix(self._app)):
            self._fired = True
            mark_deleted(self._store, self._app)
            self._ack("delete a")
        return info

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


def run_delete(store: BlobStore, app: str, ack: Ack, policy: PartsPolicy = PartsPolicy()) -> None:
    """The steps of DELETE_STEPS (merging with ``policy``); acknowledges each as it returns."""
    racing = _RacingDelete(store, app, ack)
    stage(racing, app, 5)  # type: ignore[arg-type]
    ack("upload 5")
    stage(store, app, 6)
    ack("upload 6")
    merge_pending(store, app, max_batch=2, recover_after=timedelta(0), policy=policy)
    ack("merge")
    stage(store, app, 7)
    ack("upload 7")
    mark_deleted(store, app)
    ack("delete b")
    stage(store, app, 8)
    ack("upload 8")
    delete_app(store, app, lock_timeout=0)
    ack("cascade")
    merge_pending(store, app, recover_after=timedelta(0), policy=policy)
    ack("merge")
    stage(store, app, 9)
    ack("upload 9")


def recover_deletes(store: BlobStore, app: str, policy: PartsPolicy = PartsPolicy()) -> None:
    """What the flows do after a crash: the delete flow that the DELETE's event started
    (taking over a batch the dead process held), then a merge that finishes its open batch."""
    delete_app(store, app, lock_timeout=0)
    merge_pending(store, app, recover_after=timedelta(0), policy=policy)


# The same with parts (no window: the uploads' times are made up): builds and workloads.
DELETE_PARTS_POLICY = PartsPolicy.of(builds=2, workloads={"api": 1})


SCENARIOS: dict[str, tuple[Callable[[BlobStore, str], None], Callable[[BlobStore, str, Ack], None]]] = {
    "merge": (setup_merge, run_merge),
    "delete": (setup_delete, run_delete),
    "parts": (setup_parts, run_parts),
    "delete-parts": (
        partial(setup_delete, policy=DELETE_PARTS_POLICY),
        partial(run_delete, policy=DELETE_PARTS_POLICY),
    ),
}


# ------------------------------------------------------------------ the driver


def _crash(store: BlobStore, scenario: str, limit: int, acks: Path) -> None:
    """In the child: count writes, SIGKILL before write number ``limit``, run the scenario."""
    fd = os.open(acks, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def ack(line: str) -> None:
        os.write(fd, f"{line}\n".encode())

    writes = 0

    def counted(method: Callable[..., object]) -> Callable[..., object]:
        def call(*args: object, **kwargs: object) -> object:
            nonlocal writes
            if writes == limit:
                os.kill(os.getpid(), signal.SIGKILL)
            result = method(*args, **kwargs)
            writes += 1
            return result

        return call

    for name in ("put", "delete"):
        setattr(store, name, counted(getattr(store, name)))
    SCENARIOS[scenario][1](store, crash_app(limit), ack)
    ack(f"end {writes}")


def main(argv: list[str]) -> int:
    scenario, url, workdir, *limits = argv
    warm = open_store(url)  # what boto3 loads on a first request is loaded once, not in every child
    warm.check()
    warm.put("warm/up", b"")
    warm.close()
    store = open_store(url)  # no I/O yet: each child makes its own connections
    running: dict[int, int] = {}  # pid -> limit
    pending = [int(limit) for limit in limits]
    while pending or running:
        while pending and len(running) < PARALLEL:
            limit = pending.pop(0)
            pid = os.fork()
            if pid == 0:
                status = 1
                try:
                    _crash(store, scenario, limit, Path(workdir) / f"acks-{limit}")
                    status = 0
                except BaseException:  # noqa: BLE001 - reported; the child must not return into the driver
                    traceback.print_exc()
                finally:
                    os._exit(status)
            running[pid] = limit
        pid, status = os.wait()
        limit = running.pop(pid)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        outcome = "killed" if killed else "done" if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else "failed"
        print(limit, outcome, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
