"""Where uploads are validated: in the request's thread, or in worker processes.

Checking a profile is pure Python CPU work (about half a millisecond for a
15 KB profile). In a threaded server it holds the GIL, so it runs on one core
however many there are, and every thread waiting for I/O to finish (a store
write, a socket) queues behind it. With ``workers > 0`` the checks run in
worker processes instead: the server process keeps to HTTP and store I/O,
and validation uses the other cores.

Each worker is one process at the end of its own pipe. A request thread takes
an idle worker, writes the body, reads the one-line answer (nothing, or a
refusal's HTTP status and message) and gives the worker back; no executor
threads or pickled calls sit in between, since at thousands of uploads a
second those cost the server process about as much as the HTTP itself.

Workers start from a fork server (never by forking this threaded process),
with the checking code preloaded, and ignore SIGINT: the server decides when
they stop (``close``, after the last request). A worker that dies (killed,
out of memory) is replaced, and its upload is checked once more by another
(a 503 if that fails too).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import queue
import signal
import sys
import threading
from http import HTTPStatus
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from .errors import unavailable
from .validation import Refusal, profile_problem

log = logging.getLogger("autopgo.api")
_PR_SET_PDEATHSIG = 1
_ACCEPTED = b""
_CRASHED = b"\0"  # prefixes the error of a check that failed unexpectedly
# Far longer than any queue of uploads takes to check; reached only if workers
# were lost and could not be replaced.
_WAIT_FOR_WORKER = 120.0


class ProfileChecker:
    """Runs ``validation.profile_problem`` on uploads; ``check`` raises its refusal as an ApiError
    (400 for a bad profile, 413 for one too large once decompressed)."""

    def __init__(self, *, max_decompressed: int, require_pgo: bool, workers: int = 0) -> None:
        if workers < 0:
            raise ValueError("workers must be 0 (check in the request thread) or more")
        self.max_decompressed = max_decompressed
        self.require_pgo = require_pgo
        self.workers = workers
        self._lock = threading.Lock()
        self._running: list[_Worker] = []
        # queue.Queue wakes waiting threads in arrival order; SimpleQueue's bare lock does not,
        # and under load its unlucky waiters doubled the 99th percentile latency.
        self._idle: queue.Queue[_Worker] = queue.Queue()
        if workers:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["api.validation"])
            self._context = context
            for _ in range(workers):
                self._idle.put(self._start_worker())

    def check(self, data: bytes) -> None:
        """Return if ``data`` is an acceptable profile; else ApiError 400 or 413 (503 if no worker could check it)."""
        refusal = self._refusal(data)
        if refusal is not None:
            raise refusal.error()

    def _refusal(self, data: bytes) -> Refusal | None:
        if not self.workers:
            return profile_problem(data, self.max_decompressed, self.require_pgo)
        for _ in range(2):  # a worker found dead is replaced, and the upload tried once more
            try:
                worker = self._idle.get(timeout=_WAIT_FOR_WORKER)
            except queue.Empty:
                raise unavailable("no validation worker is free; try again") from None
            try:
                answer = worker.ask(data)
            except (EOFError, OSError):
                log.error("validation worker %d died; starting another", worker.process.pid)
                self._idle.put(self._replace(worker))
                continue
            self._idle.put(worker)
            if answer.startswith(_CRASHED):
                raise RuntimeError(f"checking the profile failed: {answer[1:].decode()}")
            return _decode_answer(answer)
        raise unavailable("the profile could not be checked (a worker process died); try again")

    def _start_worker(self) -> _Worker:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(
            target=_worker_main,
            args=(theirs, self.max_decompressed, self.require_pgo),
            name="autopgo-validation",
            daemon=True,
        )
        process.start()
        theirs.close()  # so that our end sees EOF when the worker dies
        worker = _Worker(process, ours)
        with self._lock:
            self._running.append(worker)
        return worker

    def _replace(self, dead: _Worker) -> _Worker:
        with self._lock:
            self._running.remove(dead)
        dead.stop()
        return self._start_worker()

    def worker_pids(self) -> list[int]:
        """The worker processes' ids (for diagnostics and tests)."""
        with self._lock:
            return sorted(w.process.pid for w in self._running if w.process.pid is not None)

    def close(self) -> None:
        """Stop the workers; call after the last request."""
        with self._lock:
            running, self._running = self._running, []
        for worker in running:
            worker.stop()


class _Worker:
    def __init__(self, process: BaseProcess, connection: Connection) -> None:
        self.process = process
        self.connection = connection

    def ask(self, data: bytes) -> bytes:
        """Send an upload, return the worker's answer (EOFError or OSError if it died)."""
        self.connection.send_bytes(data)
        return self.connection.recv_bytes()

    def stop(self) -> None:
        self.connection.close()  # the worker reads EOF and exits
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def _worker_main(connection: Connection, max_decompressed: int, require_pgo: bool) -> None:
    _ignore_interrupts()
    serve(connection, max_decompressed, require_pgo)


def serve(connection: Connection, max_decompressed: int, require_pgo: bool) -> None:
    """Answer each upload read from ``connection`` until it closes: ``b""`` for a good
    one, the refusal for a bad one, and an error for a check that failed unexpectedly."""
    while True:
        try:
            data = connection.recv_bytes()
        except EOFError:
            return
        try:
            answer = _encode_answer(profile_problem(data, max_decompressed, require_pgo))
        except Exception as exc:  # noqa: BLE001 - a bug, reported to the request rather than killing the worker
            answer = _CRASHED + f"{type(exc).__name__}: {exc}".encode()
        connection.send_bytes(answer)


def _encode_answer(refusal: Refusal | None) -> bytes:
    """A worker's answer on the pipe: empty for accepted, else ``b"<status> <message>"``."""
    return _ACCEPTED if refusal is None else f"{refusal.status.value} {refusal.message}".encode()


def _decode_answer(answer: bytes) -> Refusal | None:
    """The refusal in a worker's answer (see ``_encode_answer``), or None for accepted."""
    if answer == _ACCEPTED:
        return None
    status, _, message = answer.decode().partition(" ")
    return Refusal(HTTPStatus(int(status)), message)


def _ignore_interrupts() -> None:
    """Ignore SIGINT, which a terminal sends the whole process group: the server decides when
    workers stop (``close``, once requests in flight are done).

    On Linux a worker also dies with its parent, the fork server, which ends
    with the server process, so that a killed server leaves no workers behind.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
