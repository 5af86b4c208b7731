"""Merging many profile files on several cores.

Decoding is the larger part of merging a profile, and it is independent per
file, so forked workers decode most of the files and stream the decoded
tables back through pipes, while the parent decodes a few itself and merges
every profile in input order. The result is the same as merging serially.
Workers are forked, so this is for single-threaded callers such as the CLI.
"""

from __future__ import annotations

import os
import pickle
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from ..errors import ProfileError
from .codec import DEFAULT_MAX_DECOMPRESSED
from .fileio import read_tables
from .merging import Merger
from .tables import ProfileTables

MIN_FILES_PER_JOB = 4
# The parent decodes one file in this many: merging costs it about as much as
# decoding costs a worker, so it keeps few decodes for itself.
PARENT_DECODES_ONE_IN = 6


def merge_files(
    paths: Sequence[str | Path], *, jobs: int = 1, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED
) -> ProfileTables:
    """Merge the profiles in ``paths`` (in order) using up to ``jobs`` processes."""
    if not paths:
        raise ProfileError("no profiles to merge")
    jobs = max(1, min(jobs, len(paths) // MIN_FILES_PER_JOB))
    merger = Merger()
    if jobs == 1 or not hasattr(os, "fork"):
        for path in paths:
            merger.add(read_tables(path, max_decompressed=max_decompressed), source=str(path))
        return merger.result()

    others = [i for i in range(len(paths)) if i % PARENT_DECODES_ONE_IN]
    shares = [others[w :: jobs - 1] for w in range(jobs - 1)]
    workers = [_Worker([paths[i] for i in share], max_decompressed) for share in shares]
    worker_of = {i: workers[w] for w, share in enumerate(shares) for i in share}
    finished = False
    try:
        for i, path in enumerate(paths):
            worker = worker_of.get(i)
            if worker is None:
                tables = read_tables(path, max_decompressed=max_decompressed)
            else:
                tables = worker.receive()
            merger.add(tables, source=str(path))
        finished = True
    finally:
        for worker in workers:
            worker.stop(kill=not finished)
    return merger.result()


class _Worker:
    """A forked process that decodes ``paths`` in order and sends each result down a pipe."""

    def __init__(self, paths: Sequence[str | Path], max_decompressed: int) -> None:
        read_fd, write_fd = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(read_fd)
            with os.fdopen(write_fd, "wb") as out:
                _decode_all(paths, max_decompressed, out)
            os._exit(0)
        os.close(write_fd)
        self.stream: BinaryIO = os.fdopen(read_fd, "rb")

    def receive(self) -> ProfileTables:
        try:
            kind, value = pickle.load(self.stream)
        except (EOFError, pickle.UnpicklingError):
            raise RuntimeError(f"merge worker {self.pid} exited without a result") from None
        if kind == "error":
            raise value  # the worker's ProfileError, of its own type
        if kind == "crash":
            raise RuntimeError(f"merge worker {self.pid} failed: {value}")
        return value

    def stop(self, kill: bool) -> None:
        self.stream.close()
        try:
            if kill:
                os.kill(self.pid, signal.SIGTERM)
            os.waitpid(self.pid, 0)
        except (ChildProcessError, ProcessLookupError):
            pass


def _decode_all(paths: Sequence[str | Path], max_decompressed: int, out: BinaryIO) -> None:
    try:
        for path in paths:
            try:
                message: tuple = ("ok", read_tables(path, max_decompressed=max_decompressed))
            except ProfileError as exc:
                message = ("error", exc)
            pickle.dump(message, out, protocol=pickle.HIGHEST_PROTOCOL)
            if message[0] == "error":
                return
    except BrokenPipeError:
        pass  # the parent stopped reading
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        pickle.dump(("crash", f"{type(exc).__name__}: {exc}"), out)
