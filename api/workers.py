"""Where uploads are validated: in the request's thread, or in worker processes.

Decoding and checking a profile is pure Python CPU work (about a millisecond
for a 15 KB profile). In a threaded server it holds the GIL, so it runs on
one core however many there are, and every thread waiting for I/O to finish
(a store write, a socket) queues behind it. With ``workers > 0`` the checks
run in a pool of processes instead: the server process keeps to HTTP and
store I/O, and validation uses the other cores.

Workers start from a fork server (never by forking this threaded process),
with the checking code preloaded, and ignore SIGINT: the server decides when
they stop (``close``, after the last request). A worker that
dies (killed, out of memory) breaks the pool: it is replaced, and the uploads
it had are checked once more by the new one (a 503 if that fails too).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from .errors import bad_request, unavailable
from .validation import profile_problem

log = logging.getLogger("autopgo.api")
_PR_SET_PDEATHSIG = 1


class ProfileChecker:
    """Runs ``validation.profile_problem`` on uploads; ``check`` raises ApiError 400 for a bad one."""

    def __init__(self, *, max_decompressed: int, require_pgo: bool, workers: int = 0) -> None:
        if workers < 0:
            raise ValueError("workers must be 0 (check in the request thread) or more")
        self.max_decompressed = max_decompressed
        self.require_pgo = require_pgo
        self.workers = workers
        self._lock = threading.Lock()
        self._pool = self._new_pool() if workers else None

    def check(self, data: bytes) -> None:
        problem = self._problem(data)
        if problem is not None:
            raise bad_request(problem)

    def _problem(self, data: bytes) -> str | None:
        for _ in range(2):  # a pool found broken is replaced, and the upload tried once more
            pool = self._pool
            if pool is None:
                return profile_problem(data, self.max_decompressed, self.require_pgo)
            try:
                return pool.submit(profile_problem, data, self.max_decompressed, self.require_pgo).result()
            except BrokenProcessPool:
                log.error("a validation worker died; starting a new pool")
                self._replace(pool)
        raise unavailable("the profile could not be checked (a worker process died); try again")

    def _new_pool(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["api.validation"])
        pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_worker_init)
        # start every worker now, so that the first uploads do not wait for them
        for future in [pool.submit(_ready) for _ in range(self.workers)]:
            future.result()
        return pool

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                self._pool = self._new_pool()
        broken.shutdown(wait=False, cancel_futures=True)

    def worker_pids(self) -> list[int]:
        """The worker processes' ids (for diagnostics and tests)."""
        pool = self._pool
        processes = getattr(pool, "_processes", None) or {}
        return sorted(processes)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _worker_init() -> None:
    """Ignore SIGINT, which a terminal sends the whole process group: the server decides when
    workers stop (``close``, once requests in flight are done).

    SIGTERM keeps its default: the pool itself stops a broken pool's workers
    with it (so send SIGTERM to the server process only, as Kubernetes does;
    under systemd use ``KillMode=mixed``). On Linux a worker also dies with its
    parent, the fork server, which ends with the server process, so that a
    killed server leaves no workers behind.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _ready() -> bool:
    return True
