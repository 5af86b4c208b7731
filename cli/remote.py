"""Commands that talk to an autopgo API server: ``upload``, ``download``, ``list`` and ``delete``.

Each takes ``--api-url``, ``--token``, ``--config`` and ``--timeout``; the first
two default to the environment (``AUTOPGO_API_URL``, ``AUTOPGO_API_TOKEN``) so
that scripts and CI jobs can set them once, then to the configuration's
``api.url`` and ``api.token`` when one is named (``--config``, ``AUTOPGO_CONFIG``),
in the order the server itself takes them (``profiling.config.settings``). The work is done by ``profiling.client``: these
functions only parse, call and print. A failure raises ``ClientError``, which
``cli.main`` prints as one line.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from .output import DASH, check_stdout, write_stdout

if TYPE_CHECKING:
    from profiling.client import Client

from profiling.config import CONFIG_ENV, TOKEN_ENV, URL_ENV

DEFAULT_API_URL = "http://localhost:8080"


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``upload``, ``download``, ``list`` and ``delete``; each takes ``--api-url``, ``--token``, ``--config``
    and ``--timeout``."""
    common = argparse.ArgumentParser(add_help=False)
    server = common.add_argument_group("server")
    server.add_argument(
        "--api-url",
        metavar="URL",
        help=f"the autopgo API server (default: ${URL_ENV}, else --config's api.url, else {DEFAULT_API_URL})",
    )
    server.add_argument(
        "--token",
        help=f"bearer token, for every request (default: ${TOKEN_ENV}, else --config's api.token; "
        "prefer the variable, as arguments are visible to other users)",
    )
    server.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help=f"autopgo.yaml to take api.url and api.token from when neither flag nor variable gives them "
        f"(default: ${CONFIG_ENV}, else none)",
    )
    server.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="give up when connecting, or any read or write, takes this long: seconds, "
        "or a duration such as 1m30s (default: 30)",
    )

    upload = commands.add_parser(
        "upload",
        parents=[common],
        help="send a profile to the server to be merged into an app's profile",
        description="Upload pprof CPU profiles (gzip or raw) for an app; prints the key each is staged "
        "under. With several files, one that fails is reported and the others are still sent.",
    )
    upload.add_argument("--app", required=True, help="the app the profile belongs to")
    upload.add_argument(
        "--workload", type=_workload, help="the workload the profiles are of (see the app's workloads)"
    )
    upload.add_argument("inputs", nargs="+", metavar="FILE", help="profile files ('-' for stdin)")
    upload.set_defaults(run=run_upload)

    download = commands.add_parser(
        "download",
        parents=[common],
        help="fetch an app's merged profile, e.g. as default.pgo for go build",
        description="Download an app's merged profile. A file that already holds it is left "
        "untouched (the server is asked with its hash, and answers 304); otherwise it is replaced "
        "only once the download is complete, so a failure leaves it as it was.",
    )
    download.add_argument("app", metavar="APP", help="the app whose profile to fetch")
    download.add_argument(
        "-o", "--output", default="default.pgo", help="where to write it ('-' for stdout; default: default.pgo)"
    )
    download.add_argument("--trim", action="store_true", help="fetch it trimmed to what Go's PGO reads")
    download.set_defaults(run=run_download)

    listing = commands.add_parser(
        "list",
        parents=[common],
        help="list the apps with a merged profile",
        description="List the merged profiles on the server: app, size in bytes and when last merged (UTC).",
    )
    listing.set_defaults(run=run_list)

    delete = commands.add_parser(
        "delete",
        parents=[common],
        help="delete everything stored for an app",
        description="Delete an app's merged profile and pending uploads. The server deletes in "
        "the background, so the app may be listed for a moment longer.",
    )
    delete.add_argument("app", metavar="APP", help="the app whose profiles to delete")
    delete.set_defaults(run=run_delete)


def run_upload(args: argparse.Namespace) -> int:
    """Run ``autopgo upload``: send each file as a profile of ``--app`` and print the key it is staged under;
    1 if any failed."""
    from profiling.client import ClientError

    if args.inputs.count(DASH) > 1:
        raise ValueError("standard input can be read only once")
    if len(args.inputs) == 1:
        with client_for(args) as api:
            print(_upload(api, args.app, args.inputs[0], args.workload or ""))
        return 0
    failed = 0
    with client_for(args) as api:
        for path in args.inputs:
            try:
                key = _upload(api, args.app, path, args.workload or "")
            except (ClientError, OSError) as exc:
                failed += 1
                reason = f"{exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
                print(f"autopgo upload: {path}: {reason}", file=sys.stderr)
            else:
                print(key, flush=True)
    return 1 if failed else 0


def _upload(api: Client, app: str, path: str, workload: str = "") -> str:
    if path == DASH:
        return api.upload(app, sys.stdin.buffer, workload=workload)
    with open(path, "rb") as f:
        return api.upload(app, f, workload=workload)


def _workload(value: str) -> str:
    """A workload name, as argparse checks an argument (a bad one: usage and status 2)."""
    from profiling.names import check_workload

    try:
        return check_workload(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_download(args: argparse.Namespace) -> int:
    """Run ``autopgo download``: save the app's merged profile (trimmed with ``--trim``) to ``--output``, unless the
    file already holds it, or write it to standard output; 0."""
    if args.output != DASH:
        with client_for(args) as api:
            saved = api.download_to(args.app, args.output, trim=args.trim)
        if not saved.changed:
            print(f"{args.output} is up to date", file=sys.stderr)
        return 0
    check_stdout()
    with client_for(args) as api:
        content = api.download(args.app, trim=args.trim).content
    write_stdout(content)
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Run ``autopgo list``: print the server's merged profiles, one line each (app, size, last modified in UTC); 0."""
    from datetime import timezone

    with client_for(args) as api:
        profiles = api.list()
    if not profiles:
        print("no merged profiles on the server", file=sys.stderr)
        return 0
    rows = [("APP", "SIZE", "LAST MODIFIED")] + [
        (p.app, str(p.size), p.last_modified.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))
        for p in profiles
    ]
    app_width = max(len(r[0]) for r in rows)
    size_width = max(len(r[1]) for r in rows)
    for app, size, when in rows:
        print(f"{app:<{app_width}}  {size:>{size_width}}  {when}")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    """Run ``autopgo delete``: ask the server to delete everything stored for the app; 0 once it has accepted."""
    with client_for(args) as api:
        api.delete(args.app)
    return 0


def client_for(args: argparse.Namespace) -> Client:
    """A ``Client`` for the command's server, its URL and token from the flags, else the environment, else the
    configuration file (``--config`` or ``AUTOPGO_CONFIG``); the URL else ``DEFAULT_API_URL``."""
    from profiling.client import Client
    from profiling.config import API_URL, CONFIG, client_token, load_config, resolve

    flags = vars(args)
    path = resolve(CONFIG, flags, os.environ).value
    config = load_config(path) if path else None
    url = resolve(API_URL, flags, os.environ, config, path).value or DEFAULT_API_URL
    return Client(url, token=client_token(os.environ, config, flags), timeout=args.timeout)


def _seconds(text: str) -> float:
    """``--timeout``: seconds as documented, or a duration with a unit such as ``1m30s``."""
    from profiling.units import UnitError, parse_duration

    try:
        return parse_duration(text, "--timeout", bare_seconds=True).total_seconds()
    except UnitError as exc:
        raise argparse.ArgumentTypeError(exc.problem) from None
