"""Reading profiles from files and writing files atomically."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .codec import DEFAULT_MAX_DECOMPRESSED, decode_tables
from .errors import ProfileError
from .model import Profile
from .tables import ProfileTables, to_profile


def read_bytes(path: str | Path) -> bytes:
    """The contents of ``path``, or of standard input for ``-``."""
    if str(path) == "-":
        return sys.stdin.buffer.read()
    return Path(path).read_bytes()


def read_profile(path: str | Path, *, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> Profile:
    """Decode the profile in ``path``; errors name the file."""
    return to_profile(read_tables(path, max_decompressed=max_decompressed))


def read_tables(path: str | Path, *, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> ProfileTables:
    """Decode the profile in ``path`` into columns; errors name the file."""
    try:
        return decode_tables(read_bytes(path), max_decompressed=max_decompressed)
    except ProfileError as exc:
        raise ProfileError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror or exc}") from None


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
