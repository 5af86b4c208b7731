"""The embedded blob store: a directory tree on the local filesystem.

Each key ``a/b/c`` is the file ``<root>/a/b/c``. Keys are checked by
``stores.check_key`` so none can name anything outside the root.

Writes are atomic and durable: the data goes to a temporary file in the
target's own directory, is fsynced, and is then renamed (``os.replace``) or,
for create-only writes, hard-linked (``os.link``, which fails if the name
exists) into place, after which the directory is fsynced too. A reader
therefore sees the old or the new content, never part of one.

Every mutation of a key (put of any kind, delete) commits while holding an
exclusive ``flock`` on one of a fixed set of lock files chosen by a hash of the
key, so a replace-if-unchanged (``if_match``) compares and swaps with no other
writer in between, in this process (each call opens its own file description,
so threads exclude each other too) and across processes on the same host.
Reads take no lock. Temporary files (``.autopgo-tmp-*``) and the lock
directory (``<root>/.autopgo-locks``) use the reserved ``.autopgo-`` segment
prefix that no key may have, and ``list`` never shows them.

ETags: ``blake2b(st_dev, st_ino, st_mtime_ns, st_size)``. Every write makes a
new file (a new inode) and stamps it with ``time.time_ns()`` before it becomes
visible, so a replaced object gets a new etag even when the new content is the
same. The inode number alone could repeat (a freed inode can be reused at
once), and the kernel's own mtime is coarse (a clock tick), but reusing an
inode *and* repeating a nanosecond write time *and* the size together does not
happen, which is what makes ``if_match`` safe under concurrent replaces.

Limits, inherent in a directory tree: a key cannot also be a "directory" of
other keys (``a`` and ``a/b`` cannot both exist; such a put raises
BlobStoreError), each segment is at most 255 bytes, and temporary files left
by a crash stay behind (hidden) until removed by hand.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import stat as statmod
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from ..errors import BlobNotFoundError, BlobStoreError, PreconditionFailedError
from .blobs import BlobInfo
from .keys import RESERVED_SEGMENT_PREFIX, char_problem, check_key, check_prefix, segment_problem

log = logging.getLogger(__name__)

TEMP_PREFIX = RESERVED_SEGMENT_PREFIX + "tmp-"
LOCK_DIR = RESERVED_SEGMENT_PREFIX + "locks"
LOCK_STRIPES = 256  # keys share this many lock files; bounded, and contention is brief
NAME_MAX = 255
_CHUNK = 1 << 20
_DIR_RETRIES = 8


def _fsync_dir(directory: Path) -> None:
    """Make entries created, renamed or removed in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _etag(st: os.stat_result) -> str:
    token = f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}:{st.st_size}".encode()
    return hashlib.blake2b(token, digest_size=16).hexdigest()


def _mtime(st: os.stat_result) -> datetime:
    seconds, nanos = divmod(st.st_mtime_ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=nanos // 1000)


def _write_all(fd: int, data: bytes | bytearray | memoryview | BinaryIO) -> None:
    with open(fd, "wb", closefd=False) as out:
        if isinstance(data, (bytes, bytearray, memoryview)):
            out.write(data)
        elif hasattr(data, "read"):
            shutil.copyfileobj(data, out, _CHUNK)
        else:
            raise TypeError(f"data must be bytes or a binary file object, not {type(data).__name__}")


class FileStore:
    """A ``BlobStore`` in a local directory; safe for threads and processes on one host."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        # No I/O here: the root is created by the first write (or by check()).
        self.root = Path(root).absolute()

    def __repr__(self) -> str:
        return f"FileStore({str(self.root)!r})"

    # -- paths, errors, metadata -------------------------------------------------

    def _path(self, key: str) -> Path:
        segments = check_key(key).split("/")
        for segment in segments:
            if len(segment.encode("utf-8")) > NAME_MAX:
                raise ValueError(f"invalid key {key!r}: segment longer than {NAME_MAX} bytes")
        return self.root.joinpath(*segments)

    def _failure(self, action: str, key: str, exc: OSError) -> BlobStoreError:
        reason = exc.strerror or str(exc)
        if isinstance(exc, (NotADirectoryError, IsADirectoryError)) or exc.errno in (errno.ENOTDIR, errno.EISDIR):
            reason += " (in a file store a key cannot also be a prefix of other keys)"
        return BlobStoreError(f"file store {self.root}: cannot {action} {key!r}: {reason}")

    def _info(self, key: str, st: os.stat_result) -> BlobInfo:
        return BlobInfo(key=key, size=st.st_size, last_modified=_mtime(st), etag=_etag(st))

    @staticmethod
    def _regular_stat(path: Path) -> os.stat_result | None:
        """``lstat`` of ``path`` if it is a regular file (an object), else None."""
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st if statmod.S_ISREG(st.st_mode) else None

    def _makedirs(self, directory: Path) -> None:
        """``mkdir -p directory``, fsyncing each parent that gains an entry."""
        if directory.is_dir():
            return
        missing: list[Path] = []
        current = directory
        while not current.exists() and current != current.parent:
            missing.append(current)
            current = current.parent
        for path in reversed(missing):
            try:
                os.mkdir(path)
            except FileExistsError:
                if not path.is_dir():
                    raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path)) from None
                continue
            _fsync_dir(path.parent)

    @contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        """Hold the exclusive lock that guards mutations of ``key``."""
        stripe = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big") % LOCK_STRIPES
        path = self.root / LOCK_DIR / f"{stripe:03d}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            self._makedirs(path.parent)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock

    def _write_temp(self, directory: Path, data: bytes | BinaryIO) -> tuple[Path, int]:
        """A fsynced temporary file in ``directory`` holding ``data``, and its open fd.

        The file's mtime is set to the current time in nanoseconds (see the
        module docstring on etags). A concurrent delete may remove ``directory``
        between creating it and creating the file in it; then try again.
        """
        for _ in range(_DIR_RETRIES):
            self._makedirs(directory)
            tmp = directory / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                break
            except FileNotFoundError:
                log.debug("directory %s vanished before a write; creating it again", directory)
        else:
            raise FileNotFoundError(errno.ENOENT, "directory keeps vanishing", str(directory))
        try:
            _write_all(fd, data)
            now = time.time_ns()
            os.utime(fd, ns=(now, now))
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return tmp, fd

    def _remove_empty_parents(self, directory: Path) -> None:
        """Remove ``directory`` and its ancestors while they are empty, never the root."""
        while directory != self.root and self.root in directory.parents:
            try:
                os.rmdir(directory)
            except OSError:  # not empty (or already gone, or busy): stop here
                return
            with suppress(OSError):
                _fsync_dir(directory.parent)
            directory = directory.parent

    # -- the BlobStore protocol ----------------------------------------------------

    def put(
        self, key: str, data: bytes | BinaryIO, *, if_match: str | None = None, if_none_match: bool = False
    ) -> BlobInfo:
        """Store ``data`` under ``key`` atomically; conditional forms raise PreconditionFailedError."""
        path = self._path(key)
        if if_match is not None and if_none_match:
            raise ValueError("put: give if_match or if_none_match, not both")
        expected = if_match.strip('"') if if_match is not None else None
        try:
            tmp, fd = self._write_temp(path.parent, data)
        except OSError as exc:
            raise self._failure("store", key, exc) from None
        leftover: Path | None = tmp
        try:
            with self._lock(key):
                if if_none_match:
                    self._link_new(tmp, path, key)
                else:
                    if expected is not None:
                        current = self._regular_stat(path)
                        if current is None or _etag(current) != expected:
                            raise PreconditionFailedError(key)
                    os.replace(tmp, path)
                    leftover = None
                _fsync_dir(path.parent)
            return self._info(key, os.fstat(fd))
        except OSError as exc:
            raise self._failure("store", key, exc) from None
        finally:
            os.close(fd)
            if leftover is not None:
                with suppress(FileNotFoundError):
                    os.unlink(leftover)

    def _link_new(self, tmp: Path, path: Path, key: str) -> None:
        """Give the temporary file the name ``path`` only if nothing has it (under the key lock)."""
        try:
            os.link(tmp, path)
        except FileExistsError:
            if path.is_dir():
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path)) from None
            raise PreconditionFailedError(key) from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
            # No hard links on this filesystem: every writer of this key holds
            # the lock we hold, so check-then-rename is just as exclusive.
            if os.path.lexists(path):
                raise PreconditionFailedError(key) from None
            os.replace(tmp, path)

    def get(self, key: str) -> bytes:
        """The whole object; BlobNotFoundError if there is none."""
        _, stream = self.open(key)
        with stream:
            try:
                return stream.read()
            except OSError as exc:
                raise self._failure("read", key, exc) from None

    def open(self, key: str) -> tuple[BlobInfo, BinaryIO]:
        """The object's info and a binary stream of exactly that version of it."""
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise BlobNotFoundError(key) from None
        except OSError as exc:
            raise self._failure("read", key, exc) from None
        try:
            st = os.fstat(fd)
            if not statmod.S_ISREG(st.st_mode):
                raise BlobNotFoundError(key)
            return self._info(key, st), os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def stat(self, key: str) -> BlobInfo:
        """The object's info; BlobNotFoundError if there is none."""
        path = self._path(key)
        try:
            st = self._regular_stat(path)
        except OSError as exc:
            raise self._failure("stat", key, exc) from None
        if st is None:
            raise BlobNotFoundError(key)
        return self._info(key, st)

    def delete(self, key: str) -> bool:
        """Remove the object and any directories that become empty; False if there was none."""
        path = self._path(key)
        try:
            if self._regular_stat(path) is None:
                return False
            with self._lock(key):
                if self._regular_stat(path) is None:
                    return False
                os.unlink(path)
                _fsync_dir(path.parent)
            self._remove_empty_parents(path.parent)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._failure("delete", key, exc) from None

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        """Objects whose key starts with ``prefix``, in key (UTF-8 byte) order, lazily."""
        check_prefix(prefix)
        head, _, partial = prefix.rpartition("/")
        directory = self.root.joinpath(*head.split("/")) if head else self.root
        return self._walk(directory, f"{head}/" if head else "", partial)

    def _walk(self, directory: Path, base: str, partial: str) -> Iterator[BlobInfo]:
        """Keys under ``directory`` (whose key prefix is ``base``) with names starting with ``partial``.

        A subdirectory sorts as its name plus ``/``, which puts its keys exactly
        where plain string order would (``a-c`` < ``a/b`` < ``a0``).
        """
        try:
            with os.scandir(directory) as scan:
                entries = [e for e in scan if e.name.startswith(partial)]
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise self._failure("list", base or "/", exc) from None
        items: list[tuple[str, os.DirEntry[str], bool]] = []
        for entry in entries:
            name = entry.name
            if segment_problem(name) or char_problem(name):
                continue  # our temp/lock files, or a name no key can have
            try:
                if entry.is_dir(follow_symlinks=False):
                    items.append((name + "/", entry, True))
                elif entry.is_file(follow_symlinks=False):
                    items.append((name, entry, False))
            except OSError:
                continue
        items.sort(key=lambda item: item[0])
        for _, entry, is_dir in items:
            if is_dir:
                yield from self._walk(Path(entry.path), f"{base}{entry.name}/", "")
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted while we listed
            except OSError as exc:
                raise self._failure("list", base + entry.name, exc) from None
            yield self._info(base + entry.name, st)

    def check(self) -> None:
        """Raise BlobStoreError unless the root is (or can be made) a writable directory."""
        try:
            self._makedirs(self.root)
            if not self.root.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(self.root))
            probe = self.root / f"{TEMP_PREFIX}check-{secrets.token_hex(8)}"
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise BlobStoreError(
                f"file store {self.root} is not a writable directory: {exc.strerror or exc}"
            ) from None

    def close(self) -> None:
        """Nothing to release: no file stays open between calls."""
