"""``autopgo scrape``: profile an app's instances now, as its scrape schedule would.

The targets come from the app's source in ``autopgo.yaml``; up to
``--sample-size`` of them are profiled at once by the same async core the
scheduled scrape uses (``profiling.discovery.scraping``), and each profile is uploaded to
the API (``api.url`` and its token) or, with ``--output DIR``, saved there.

On a terminal the command keeps a live line per target (elapsed and expected
seconds, then done or failed); otherwise it prints one line per target as it
finishes, ``URL KEY`` on standard output. Either way each failure is one line
on standard error, and the status is 1 if any target failed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from .output import DASH
from .remote import TOKEN_ENV, URL_ENV

if TYPE_CHECKING:
    import httpx

    from profiling.discovery import Target

PROFILING, UPLOADING, SAVING, DONE, FAILED = "profiling", "uploading", "saving", "done", "failed"
REFRESH_SECONDS = 0.5  # how often the live lines are redrawn on a terminal

# A profile is handed on by a sink: given the target it came from and its bytes, it
# returns where it went (the staged key, or the file written).
Sink = Callable[["Target", bytes], Awaitable[str]]


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``scrape`` (APP, ``-c``, ``--duration``, ``--sample-size``, ``--output``, ``--api-url``, ``--token``)."""
    scrape = commands.add_parser(
        "scrape",
        help="profile an app's instances now and upload (or save) the profiles",
        description="List the app's targets from its source in autopgo.yaml, profile up to "
        "--sample-size of them at once, and upload each profile to the API (api.url, api.token) "
        "or save it with --output. The status is 1 if any target failed.",
    )
    scrape.add_argument("app", metavar="APP", help="the app, as named in autopgo.yaml")
    scrape.add_argument("-c", "--config", default=os.environ.get("AUTOPGO_CONFIG"),
                        help="the pipeline configuration (env AUTOPGO_CONFIG; default ./autopgo.yaml)")
    scrape.add_argument("--duration", type=_duration, metavar="DURATION",
                        help="how long each target profiles, e.g. 10s (default: the app's scrape.duration)")
    scrape.add_argument("--sample-size", type=_count, metavar="N",
                        help="profile at most this many targets, picked at random (default: the app's scrape.sample_size)")
    scrape.add_argument("--output", metavar="DIR",
                        help="save the profiles in this folder instead of uploading them")
    scrape.add_argument("--api-url", metavar="URL",
                        help=f"the API to upload to (default: ${URL_ENV}, else the configuration's api.url)")
    scrape.add_argument("--token", help=f"bearer token for uploads (default: ${TOKEN_ENV}, else api.token)")
    scrape.set_defaults(run=run_scrape)


@dataclass(slots=True)
class TargetProgress:
    """Where one target's scrape is: profiling, uploading or saving, then done or failed."""

    url: str
    expected: int  # seconds the target was asked to profile for
    started: float  # time.monotonic() when its fetch began
    step: str = PROFILING
    ended: float | None = None
    result: str = ""  # when done, the key or file; when failed, why

    def finish(self, step: str, result: str, now: float) -> None:
        """Record that the target's scrape ended at ``now`` in ``step`` (done or failed), with its ``result``."""
        self.step, self.result, self.ended = step, result, now


def render_progress(rows: Sequence[TargetProgress], now: float, width: int | None = None) -> list[str]:
    """One line per target: URL, step, elapsed/expected seconds and the result so far.

    ``width`` clips each line to the terminal's width, so that redrawing the
    lines in place never meets a wrapped one (the cursor moves up by lines drawn).
    """
    url_width = max((len(r.url) for r in rows), default=0)
    lines = []
    for r in rows:
        elapsed = max(0.0, (r.ended if r.ended is not None else now) - r.started)
        line = f"{r.url:<{url_width}}  {r.step:<9}  {elapsed:3.0f}s/{r.expected}s"
        if r.result:
            line += f"  {r.result}"
        if width is not None and len(line) > width:
            line = line[: max(width - 3, 0)] + "..."
        lines.append(line.rstrip())
    return lines


def profile_filename(app: str, target: Target, when: datetime) -> str:
    """``APP_TARGET_TIME.pb.gz``: the target's address (and path, unless the default) with
    every character unsafe in a file name as ``-``, and the UTC time, to the second."""
    from profiling.discovery import DEFAULT_PATH

    where = target.address.strip("[]").replace("]:", ":")
    if target.path != DEFAULT_PATH:
        where += target.path
    slug = re.sub(r"[^A-Za-z0-9.-]", "-", where)
    return f"{app}_{slug}_{when.astimezone(UTC):%Y%m%dT%H%M%SZ}.pb.gz"


def run_scrape(args: argparse.Namespace) -> int:
    """Run ``autopgo scrape``: profile the app's targets now and upload each profile (or save it in ``--output``);
    1 if any target failed."""
    from profiling.config import API_URL, client_token, find_config, resolve
    from profiling.discovery import DiscoveryError, SourceCache, pick

    if args.output == DASH:  # '-' is standard output elsewhere; never a folder of that name
        raise ValueError("--output names a folder for the profiles; standard output ('-') cannot hold them")
    config, path = find_config(args.config)
    scrape_cfg = config.app(args.app).scrape
    if scrape_cfg is None:
        where = path or "the configuration (there is no ./autopgo.yaml)"
        raise ValueError(f"app {args.app} has no scrape settings in {where}")
    source = SourceCache().source(args.app, scrape_cfg)
    try:
        targets = source.targets()
    except DiscoveryError as exc:
        raise ValueError(f"app {args.app}: cannot list targets: {exc}") from None
    if not targets:
        raise ValueError(f"app {args.app}: its {source.kind} source lists no targets")
    chosen = pick(targets, args.sample_size or scrape_cfg.sample_size)
    duration = args.duration or scrape_cfg.duration
    if args.output is not None:
        Path(args.output).mkdir(parents=True, exist_ok=True)  # before profiling, so a bad folder fails at once
    api_url = resolve(API_URL, vars(args), os.environ, config, path).value or config.api_url
    token = client_token(os.environ, config, vars(args))
    live = sys.stdout.isatty()
    with _quiet_scrape_log():
        rows = asyncio.run(_scrape(args.app, chosen, duration, args.output, api_url, token or None, live))
    failed = [r for r in rows if r.step == FAILED]
    for r in failed if live else ():  # without a terminal, each was reported as it finished
        _report_failure(r)
    return 1 if failed else 0


async def _scrape(
    app: str, targets: Sequence[Target], duration: timedelta, output: str | None,
    api_url: str, token: str | None, live: bool,
) -> list[TargetProgress]:
    """Profile every target at once and hand each profile on; each target's progress at the end."""
    from profiling.client import AsyncClient
    from profiling.discovery import new_client

    async with new_client() as http:
        if output is not None:
            saver = _FileSink(app, Path(output))
            return await _scrape_all(targets, duration, saver, SAVING, http, live)
        async with AsyncClient(api_url, token=token) as api:

            async def upload(target: Target, data: bytes) -> str:
                return await api.upload(app, data, workload=target.workload)

            return await _scrape_all(targets, duration, upload, UPLOADING, http, live)


async def _scrape_all(
    targets: Sequence[Target], duration: timedelta, sink: Sink, handing_on: str,
    http: httpx.AsyncClient, live: bool,
) -> list[TargetProgress]:
    """Run every target's scrape at once; on a terminal, redraw their lines meanwhile."""
    from profiling.discovery import profile_seconds

    now = time.monotonic()
    rows = [TargetProgress(t.url(), profile_seconds(duration), now) for t in targets]
    scrapes = [_one(t, row, duration, sink, handing_on, http, live) for t, row in zip(targets, rows)]
    if not live:
        await asyncio.gather(*scrapes)
        return rows
    block = _LiveLines(sys.stdout)
    drawing = asyncio.create_task(_redraw(block, rows))
    try:
        await asyncio.gather(*scrapes)
    finally:
        drawing.cancel()
        # The last drawing is never redrawn, so it may wrap: keys and reasons are shown whole.
        block.draw(render_progress(rows, time.monotonic()))
    return rows


async def _one(
    target: Target, row: TargetProgress, duration: timedelta, sink: Sink, handing_on: str,
    http: httpx.AsyncClient, live: bool,
) -> None:
    """Scrape one target with the shared core, keeping ``row`` up to date; without a
    terminal, print its line when it finishes."""
    from profiling.discovery import scrape_async

    async def hand_on(data: bytes) -> str:
        row.step = handing_on
        return await sink(target, data)

    report = await scrape_async([target], 1, duration, hand_on, client=http)
    now = time.monotonic()
    if row.url in report.uploaded:
        row.finish(DONE, report.uploaded[row.url], now)
        if not live:
            print(f"{row.url} {row.result}", flush=True)
    else:
        row.finish(FAILED, _reason(row.url, report.failed.get(row.url, "no profile")), now)
        if not live:
            _report_failure(row)


@dataclass(frozen=True, slots=True)
class _FileSink:
    """Saves each profile, once checked to be one, as ``FOLDER/APP_TARGET_TIME.pb.gz``."""

    app: str
    folder: Path

    async def __call__(self, target: Target, data: bytes) -> str:
        return await asyncio.to_thread(self._save, target, data)

    def _save(self, target: Target, data: bytes) -> str:
        from profiling.atomicfile import atomic_write
        from profiling.pprof import validate

        validate(data)  # what the API would refuse is not saved either
        path = self.folder / profile_filename(self.app, target, datetime.now(UTC))
        atomic_write(path, data)
        return str(path)


def _reason(url: str, why: str) -> str:
    """``why`` without the target's URL in front, where the core put it there."""
    return why[len(url) + 2:] if why.startswith(f"{url}: ") else why


def _report_failure(row: TargetProgress) -> None:
    print(f"autopgo scrape: {row.url}: {row.result}", file=sys.stderr, flush=True)


class _LiveLines:
    """A block of lines on a terminal, redrawn in place."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.drawn = 0

    def width(self) -> int:
        return shutil.get_terminal_size().columns - 1

    def draw(self, lines: Sequence[str]) -> None:
        up = f"\r\x1b[{self.drawn}A" if self.drawn else ""
        body = "".join(f"\x1b[2K{line}\n" for line in lines)
        self.out.write(f"{up}{body}\x1b[J")
        self.out.flush()
        self.drawn = len(lines)


async def _redraw(block: _LiveLines, rows: Sequence[TargetProgress]) -> None:
    while True:
        block.draw(render_progress(rows, time.monotonic(), block.width()))
        await asyncio.sleep(REFRESH_SECONDS)


@contextmanager
def _quiet_scrape_log() -> Iterator[None]:
    """The scrape core logs each failing target; here the command reports it itself, once."""
    logger = logging.getLogger("profiling.discovery.scraping")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _duration(text: str) -> timedelta:
    from profiling.units import UnitError, parse_duration

    try:
        return parse_duration(text, "--duration")
    except UnitError as exc:
        raise argparse.ArgumentTypeError(exc.problem) from None


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}")
    return value
