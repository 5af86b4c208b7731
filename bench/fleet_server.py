"""The fake fleet of bench/fleet.py: one asyncio process that answers like Go's net/http/pprof for any number of apps.

Every app instance is a path on one port::

    GET /fleet/<app>/<instance>/debug/pprof/profile?seconds=D

answers after D seconds with a real Go CPU profile (gzip), as
``net/http/pprof`` does; like Go, an instance profiles one request at a time
(a second concurrent request gets HTTP 500 "cpu profiling already in use"), and
a client that hangs up during the D seconds gets nothing. Thousands of
requests can wait at once: each is a coroutine, not a thread.

Every profile served is unique: to one of the real profiles given, it appends
one more function named ``bench.marker_<n>`` (n counts from 1 in this process),
a location in it and a sample at that location with the count value 1. That is
done on the protobuf bytes (repeated fields of a message may be appended, and a
decoder collects them), so a profile costs a gzip, not a decode and an encode;
the function has a start_line, so Go's PGO accepts it like the rest.

Each request is logged to a JSON-lines file, one line when it arrives and one
when it ends::

    {"m": 7, "app": "bench-0003", "i": 1, "t": 1733212345.123}    (arrival, epoch seconds)
    {"m": 7, "end": 1733212355.130, "ok": true}                  (ok: the whole response was written)
    {"busy": "bench-0003", "i": 1, "t": 1733212346.5}             (refused: that instance was profiling)

Run by bench/fleet.py as ``python bench/fleet_server.py --log FILE PROFILE...``;
it prints the port it listens on (127.0.0.1) as its first line and runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import time
import zlib
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from profiling.pprof import decode, decompress  # noqa: E402
from profiling.pprof.proto import profile_pb2 as pb  # noqa: E402

MARKER_PREFIX = "bench.marker_"
MARKER_FILE = "bench/marker.go"
MARKER_START_LINE = 1
PATH = re.compile(r"/fleet/(?P<app>[a-z0-9-]{1,63})/(?P<instance>[0-9]{1,6})/debug/pprof/profile")
GZIP_LEVEL = 1  # what Go's pprof writer uses (gzip.BestSpeed)
MAX_HEADER_LINES = 100


@dataclass(frozen=True, slots=True)
class BaseProfile:
    """A real profile's raw protobuf and what appending a marker to it needs to know."""

    raw: bytes
    strings: int  # entries in its string table: the marker's name gets this index
    function_id: int  # a function id above every one it has
    location_id: int  # likewise for locations
    values: tuple[int, ...]  # the marker sample's values, one per sample type


def marker_values(sample_types: Sequence[tuple[str, str]], period: int) -> tuple[int, ...]:
    """One sample's worth: count 1, and one period for a CPU-time value (0 for anything else)."""
    out = []
    for kind, unit in sample_types:
        if unit == "count":
            out.append(1)
        elif (kind, unit) == ("cpu", "nanoseconds"):
            out.append(period)
        else:
            out.append(0)
    return tuple(out)


def load_base(data: bytes) -> BaseProfile:
    """Read a real profile (gzip or raw) once, to append markers to its bytes later."""
    profile = decode(data)
    table = pb.Profile.FromString(bytes(decompress(data)))
    return BaseProfile(
        raw=bytes(decompress(data)),
        strings=len(table.string_table),
        function_id=max((f.id for f in profile.functions), default=0) + 1,
        location_id=max((loc.id for loc in profile.locations), default=0) + 1,
        values=marker_values([(t.type, t.unit) for t in profile.sample_types], profile.period),
    )


def marker_name(n: int) -> str:
    return f"{MARKER_PREFIX}{n}"


def marked(base: BaseProfile, n: int) -> bytes:
    """``base`` with marker ``n`` appended, gzip-compressed as Go writes profiles."""
    extra = pb.Profile(
        string_table=[marker_name(n), MARKER_FILE],
        function=[
            pb.Function(
                id=base.function_id,
                name=base.strings,
                system_name=base.strings,
                filename=base.strings + 1,
                start_line=MARKER_START_LINE,
            )
        ],
        location=[
            pb.Location(id=base.location_id, line=[pb.Line(function_id=base.function_id, line=MARKER_START_LINE + 1)])
        ],
        sample=[pb.Sample(location_id=[base.location_id], value=base.values)],
    )
    deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return deflate.compress(base.raw + extra.SerializeToString()) + deflate.flush()


class Fleet:
    """The HTTP side: parses requests, waits, answers, logs."""

    def __init__(self, bases: Sequence[BaseProfile], log: TextIO) -> None:
        self.bases = list(bases)
        self.log = log
        self.next_marker = 1
        self.busy: set[tuple[str, str]] = set()  # instances profiling now

    def record(self, **fields: object) -> None:
        self.log.write(json.dumps(fields, separators=(",", ":")) + "\n")

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self.request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; whether the connection stays open for another."""
        line = await reader.readline()
        if not line:
            return False
        method, target, version = line.decode("latin-1").split(" ", 2)
        keep_alive = version.strip() == "HTTP/1.1"
        for _ in range(MAX_HEADER_LINES):
            header = await reader.readline()
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.decode("latin-1").partition(":")
            if name.strip().lower() == "connection":
                keep_alive = value.strip().lower() != "close"
        url = urlsplit(target)
        match = PATH.fullmatch(url.path)
        if method != "GET" or match is None:
            await self.answer(writer, 404, b"404 page not found\n", "text/plain; charset=utf-8", keep_alive)
            return keep_alive
        try:
            seconds = int(parse_qs(url.query).get("seconds", ["30"])[0])
        except ValueError:
            seconds = -1
        if seconds <= 0:
            await self.answer(writer, 400, b"bad seconds\n", "text/plain; charset=utf-8", keep_alive)
            return keep_alive
        instance = (match["app"], match["instance"])
        if instance in self.busy:
            self.record(busy=match["app"], i=int(match["instance"]), t=time.time())
            body = b"Could not enable CPU profiling: cpu profiling already in use\n"
            await self.answer(writer, 500, body, "text/plain; charset=utf-8", keep_alive)
            return keep_alive
        n = self.next_marker
        self.next_marker += 1
        self.record(m=n, app=match["app"], i=int(match["instance"]), t=time.time())
        self.busy.add(instance)
        try:
            # Like Go's handler: profile for the duration unless the client hangs up first.
            hangup = asyncio.ensure_future(reader.read(1))
            done, _ = await asyncio.wait({hangup}, timeout=seconds)
            if done:  # end of stream (or bytes, which an HTTP/1.1 client does not send while waiting)
                self.record(m=n, end=time.time(), ok=False)
                return False
            hangup.cancel()
            with suppress(asyncio.CancelledError):
                await hangup  # the reader accepts the next read only once this one is gone
        finally:
            self.busy.discard(instance)
        try:
            await self.answer(writer, 200, marked(self.bases[n % len(self.bases)], n), "application/octet-stream",
                              keep_alive, 'Content-Disposition: attachment; filename="profile"\r\n')
        except ConnectionError:
            self.record(m=n, end=time.time(), ok=False)
            return False
        self.record(m=n, end=time.time(), ok=True)
        return keep_alive

    @staticmethod
    async def answer(writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str, keep_alive: bool,
                     extra: str = "") -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}[status]
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nX-Content-Type-Options: nosniff\r\n"
            f"{extra}Content-Length: {len(body)}\r\n{'' if keep_alive else 'Connection: close' + chr(13) + chr(10)}\r\n"
        )
        writer.write(head.encode("latin-1") + body)
        await writer.drain()


async def serve(bases: Sequence[BaseProfile], log_path: Path) -> None:
    with log_path.open("a", buffering=1) as log:
        fleet = Fleet(bases, log)
        server = await asyncio.start_server(fleet.connection, "127.0.0.1", 0, backlog=4096)
        print(server.sockets[0].getsockname()[1], flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            await stop.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description="A fake fleet of Go pprof endpoints (see the module docstring).")
    parser.add_argument("--log", type=Path, required=True, help="JSON-lines file of every request")
    parser.add_argument("profiles", nargs="+", type=Path, help="real Go CPU profiles to serve, marked")
    args = parser.parse_args()
    bases = [load_base(path.read_bytes()) for path in args.profiles]
    asyncio.run(serve(bases, args.log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
