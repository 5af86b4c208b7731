"""Benchmark: what merging one more batch costs after 100, 1,000 and 10,000 uploads of history,
with a window (``window: 72h``) and without.

What it measures
    For each history size H and each setting, a fresh file store (a temporary folder) is
    given H uploads, one an hour (so 100 uploads already span more than the window), each a
    real Go CPU profile of the test service with a function of its own appended (as
    bench/fleet_server.py marks them: real profiles differ from one release and instance to
    the next, and an app's history grows), collected 30 s before its upload
    (``time_nanos``). They are committed in batches of ``--history-batch`` uploads with the
    merge's clock at the time of the batch's last upload, as the pipeline would have merged
    them. Then ``--reps`` more batches of ``--batch`` uploads are merged one after another,
    each timed with the process's CPU time (``time.process_time``: user + system) around
    ``merge_pending``, which reads the store, merges, writes and cleans up. Reported: the
    median CPU per upload merged, the merged state's size (default.pgo, plus parts.bin with
    a window), and the ratio of the 10,000 figure to the 100 one. Target: with the window,
    that ratio is under 1.5 (the cost follows the window, not the history).

Profiles
    Four 2-second CPU profiles of the Go test service (tests/goservice), scraped once and
    kept in bench/.data/history/ (git-ignored).

How to run (by hand, from the project root; never by pytest)
    .venv/bin/python bench/history.py
    .venv/bin/python bench/history.py --sizes 100,1000 --reps 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from fleet_server import BaseProfile, load_base, marked  # noqa: E402

from profiling.pipeline import (  # noqa: E402
    PartsPolicy,  # noqa: E402
    merge_pending,  # noqa: E402
    merged_key,
    new_staging_key,
    parts_key,
)
from profiling.pprof.proto import profile_pb2 as pb  # noqa: E402
from profiling.storage import (
    BlobStore,  # noqa: E402
    open_store,  # noqa: E402
)

DATA_DIR = ROOT / "bench" / ".data" / "history"
BASES = 4
PROFILE_SECONDS = 2
APP = "history"
HOUR = 3600 * 10**9
EVERY = HOUR  # one upload an hour
COLLECTED_BEFORE = 30 * 10**9
DEFAULT_SIZES = (100, 1_000, 10_000)
WINDOW = timedelta(hours=72)
TARGET_RATIO = 1.5


def base_profiles() -> list[BaseProfile]:
    """The real profiles every upload is made from, scraped from the Go test service once."""
    paths = [DATA_DIR / f"cpu{i}.pb.gz" for i in range(BASES)]
    if not all(p.exists() for p in paths):
        import harness

        DATA_DIR.mkdir(parents=True, exist_ok=True)
        print(f"scraping {BASES} profiles of the Go test service into {DATA_DIR} ...", flush=True)
        binary = harness.build_service(DATA_DIR)
        with harness.Service(binary).start() as service:
            for path in paths:
                path.write_bytes(service.profile(seconds=PROFILE_SECONDS))
    return [load_base(p.read_bytes()) for p in paths]


class Uploads:
    """Upload ``n`` of the simulated history: base ``n % BASES`` with marker ``n``, at hour ``n``."""

    def __init__(self, bases: Sequence[BaseProfile], start_ns: int) -> None:
        self.bases = bases
        self.messages = [pb.Profile.FromString(base.raw) for base in bases]
        self.start = start_ns

    def time_of(self, n: int) -> int:
        return self.start + n * EVERY

    def stage(self, store: BlobStore, n: int) -> None:
        uploaded = self.time_of(n)
        base, message = self.bases[n % len(self.bases)], self.messages[n % len(self.bases)]
        message.time_nanos = uploaded - COLLECTED_BEFORE
        data = marked(BaseProfile(message.SerializeToString(), *_rest(base)), n + 1)
        store.put(new_staging_key(APP, uploaded), data, if_none_match=True)


def _rest(base: BaseProfile) -> tuple[int, int, int, tuple[int, ...]]:
    return base.strings, base.function_id, base.location_id, base.values


@dataclass(frozen=True, slots=True)
class Result:
    history: int
    setting: str
    cpu_per_upload: float  # seconds
    state_bytes: int


def measure(bases: Sequence[BaseProfile], history: int, policy: PartsPolicy, args: argparse.Namespace) -> Result:
    with tempfile.TemporaryDirectory(prefix="autopgo-history-") as tmp:
        store = open_store(str(Path(tmp) / "blobs"))
        uploads = Uploads(bases, time.time_ns() - (history + args.reps * args.batch) * EVERY)
        n = 0

        def merge_next(count: int) -> float:
            nonlocal n
            for i in range(n, n + count):
                uploads.stage(store, i)
            n += count
            now = uploads.time_of(n - 1) + 1
            started = time.process_time()
            report = merge_pending(store, APP, policy=policy, clock=lambda: now, max_batch=count)
            spent = time.process_time() - started
            assert len(report.merged) == count, (len(report.merged), count, report.rejected[:1])
            return spent

        while n < history:
            merge_next(min(args.history_batch, history - n))
        costs = [merge_next(args.batch) / args.batch for _ in range(args.reps)]
        size = sum(info.size for info in store.list(APP + "/") if info.key in (merged_key(APP), parts_key(APP)))
        store.close()
    setting = f"window {_hours(policy.window)}" if policy.window else "no window"
    return Result(history, setting, statistics.median(costs), size)


def _hours(window: timedelta | None) -> str:
    return f"{window // timedelta(hours=1)}h" if window else "-"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="history sizes, comma-separated")
    parser.add_argument("--batch", type=int, default=10, help="uploads in each measured batch")
    parser.add_argument("--reps", type=int, default=5, help="measured batches per history size")
    parser.add_argument("--history-batch", type=int, default=50, help="uploads per batch while making the history")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    bases = base_profiles()
    results: list[Result] = []
    print(f"{'history':>8}  {'setting':<12} {'CPU per upload':>15} {'merged state':>13}", flush=True)
    for policy in (PartsPolicy.of(window=WINDOW), PartsPolicy()):
        for history in sizes:
            result = measure(bases, history, policy, args)
            results.append(result)
            print(
                f"{result.history:>8}  {result.setting:<12} {result.cpu_per_upload * 1000:>12.2f} ms "
                f"{result.state_bytes / 1024:>10.0f} KiB",
                flush=True,
            )
    ok = True
    for setting in dict.fromkeys(r.setting for r in results):
        mine = {r.history: r.cpu_per_upload for r in results if r.setting == setting}
        first, last = min(mine), max(mine)
        ratio = mine[last] / mine[first]
        line = f"{setting}: CPU per upload after {last:,} uploads / after {first:,}: {ratio:.2f}"
        if setting.startswith("window"):
            ok = ratio < TARGET_RATIO
            line += f" (target < {TARGET_RATIO}: {'met' if ok else 'NOT met'})"
        print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
