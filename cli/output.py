"""Where commands write a profile: a file, or standard output for ``-``."""

from __future__ import annotations

import sys

DASH = "-"  # on a command line: standard output (or input)


def write_stdout(data: bytes) -> None:
    """Write a binary profile to standard output; refuse a terminal, where it would be garbage."""
    check_stdout()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def check_stdout() -> None:
    """ValueError if standard output is a terminal (checked before any work is done)."""
    if sys.stdout.isatty():
        raise ValueError("will not write a binary profile to a terminal: redirect it or use -o FILE")
