"""Merging many profile files on several cores.

Each worker process decodes and merges a contiguous slice of the inputs; the
parent merges the first slice itself and then folds in each worker's
uncompacted result with the headers of the sources behind it. ``Merger``
guarantees that this gives the same profile as merging every input in order.
Workers are forked, so this is for single-threaded callers such as the CLI.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path

from .codec import DEFAULT_MAX_DECOMPRESSED
from .errors import ProfileError
from .fileio import read_tables
from .merge import Merger
from .tables import Header, ProfileTables

MIN_FILES_PER_JOB = 4
PARENT_SHARE = 0.6


def merge_files(
    paths: Sequence[str | Path], *, jobs: int = 1, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED
) -> ProfileTables:
    """Merge the profiles in ``paths`` (in order) using up to ``jobs`` processes."""
    if not paths:
        raise ProfileError("no profiles to merge")
    jobs = max(1, min(jobs, len(paths) // MIN_FILES_PER_JOB))
    if jobs == 1 or not hasattr(os, "fork"):
        return _merge_slice(paths, max_decompressed).result()

    bounds = _split(len(paths), jobs)
    workers = [_fork(paths[bounds[i] : bounds[i + 1]], max_decompressed) for i in range(1, jobs)]
    try:
        merger = _merge_slice(paths[: bounds[1]], max_decompressed)
        for pid, fd in workers:
            headers, partial = _collect(pid, fd)
            merger.add_partial(partial, headers)
    finally:
        for pid, fd in workers:
            _reap(pid, fd)
    return merger.result()


def _split(n: int, jobs: int) -> list[int]:
    """Slice bounds; the parent's first slice is smaller, as it also merges and encodes the result."""
    first = round(n / jobs * PARENT_SHARE)
    rest = n - first
    return [0, *(first + rest * i // (jobs - 1) for i in range(jobs))]




def _merge_slice(paths: Sequence[str | Path], max_decompressed: int) -> Merger:
    merger = Merger()
    for path in paths:
        merger.add(read_tables(path, max_decompressed=max_decompressed), source=str(path))
    return merger


def _fork(paths: Sequence[str | Path], max_decompressed: int) -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # worker
        os.close(read_fd)
        status = 0
        try:
            merger = _merge_slice(paths, max_decompressed)
            payload = pickle.dumps(("ok", merger.headers.sources, merger.result_tables()), protocol=5)
        except ProfileError as exc:
            payload = pickle.dumps(("error", str(exc)))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
            payload = pickle.dumps(("crash", f"{type(exc).__name__}: {exc}"))
            status = 1
        with os.fdopen(write_fd, "wb") as out:
            out.write(payload)
        os._exit(status)
    os.close(write_fd)
    return pid, read_fd


def _collect(pid: int, fd: int) -> tuple[list[Header], ProfileTables]:
    with os.fdopen(os.dup(fd), "rb") as f:
        data = f.read()
    try:
        kind, *rest = pickle.loads(data)
    except Exception:
        raise ProfileError(f"merge worker {pid} exited without a result") from None
    if kind == "ok":
        return rest[0], rest[1]
    if kind == "error":
        raise ProfileError(rest[0])
    raise RuntimeError(f"merge worker {pid} failed: {rest[0]}")


def _reap(pid: int, fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
