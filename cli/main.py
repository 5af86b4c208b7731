"""The ``autopgo`` command: parses arguments and hands each command to its module.

Commands import what they need when they run, so that a quick command does not
pay for loading the whole pipeline.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
from collections.abc import Sequence

from . import pipeline, profiles, remote, scrape, server, workpool


def build_parser() -> argparse.ArgumentParser:
    """The ``autopgo`` parser with every command; each command sets ``run``, the function that runs it."""
    parser = argparse.ArgumentParser(
        prog="autopgo", description="Continuous profile-guided optimization for Go services."
    )
    parser.add_argument("--version", action="version", version=f"autopgo {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    profiles.register(commands)
    remote.register(commands)
    server.register(commands)
    pipeline.register(commands)
    scrape.register(commands)
    workpool.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` gives (default: the command line) and return its exit status: 1 for an error,
    reported as ``autopgo COMMAND: ...`` lines on standard error; 130 on Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.run(args) or 0
        sys.stdout.flush()  # a closed pipe shows up here rather than at exit, where it cannot be handled
        return code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure is one line for the user
        if isinstance(exc, BrokenPipeError) and _stdout_closed():
            # The reader has gone, as with `autopgo inspect FILE | head -1`: stop quietly, as Unix tools do.
            _silence_stdout()
            return 0
        from profiling.errors import AutopgoError, ConfigError

        if isinstance(exc, (AutopgoError, ValueError, OSError)):
            # One line per mistake: a configuration file can hold several, each reported on its own line
            # after how many there are; a YAML syntax error is followed by the lines it points at.
            message = exc.report() if isinstance(exc, ConfigError) else _os_error(exc) if isinstance(exc, OSError) else str(exc)
            for line in message.splitlines() or [""]:
                print(f"autopgo {args.command}: {line}", file=sys.stderr)
            return 1
        raise


def _stdout_closed() -> bool:
    """Whether standard output is a pipe or socket whose reader has gone (poll reports an error on it)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no file descriptor (a test's capture) or no poll
        return False


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so the interpreter's final flush does not fail again.

    Python's documented recipe for SIGPIPE: without it, Python reports the broken pipe once more
    when it flushes standard output on the way out.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("autopgo")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _os_error(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


if __name__ == "__main__":
    sys.exit(main())
