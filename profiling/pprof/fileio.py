"""Reading profiles from files (writing them: atomicfile.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ProfileError, located
from .codec import DEFAULT_MAX_DECOMPRESSED, decode_tables
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
        raise located(exc, str(path)) from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror or exc}") from None
