"""Writing files so that readers see the old or the new file, never a part."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """A file to write that replaces ``path`` only once complete and synced.

    Readers see the old file or the new one, never a part; on any failure the
    temporary file is removed and ``path`` is left as it was. A replaced file
    keeps its permissions; a new one gets the usual ones (0666 less the umask).
    A ``path`` that exists but is no regular file (``/dev/stdout``, a named
    pipe) is written into, as a shell redirection would, never replaced.
    Errors name ``path``, never the temporary file.
    """
    path = Path(path)
    kind = _kind(path)
    if kind is not None and stat.S_ISDIR(kind):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if kind is not None and not stat.S_ISREG(kind):
        with _naming(path), open(path, "wb") as f:
            yield f
        return
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
    with _naming(path, tmp):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with _naming(path, tmp):
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                with suppress(FileNotFoundError):
                    os.fchmod(f.fileno(), stat.S_IMODE(os.stat(path).st_mode))
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a part."""
    with atomic_writer(path) as f:
        f.write(data)


def _kind(path: Path) -> int | None:
    """The file type bits of what ``path`` names (links followed); None if nothing is there yet."""
    try:
        return stat.S_IFMT(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return None


@contextmanager
def _naming(path: Path, tmp: Path | None = None) -> Iterator[None]:
    """Re-raise an OSError about the temporary file, or about no file (a failed write), as one
    about ``path``: the user named ``path`` and has never heard of the temporary file."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None or (tmp is not None and str(exc.filename) == str(tmp)):
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
