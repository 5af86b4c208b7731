"""Benchmark: `autopgo merge` against pprof's own merge on real Go CPU profiles.

What it measures
    For the first N cached profiles (N = 10, 50, 200 by default) it runs, as
    separate processes and in the same run,

      (a) ``<venv>/bin/autopgo merge -o OUT <files>``
      (b) ``<pprof> -proto -symbolize=none -output OUT <files>``  (the binary
          behind ``go tool pprof``, with the offline Go environment of
          tests/harness.py and HOME pointed at a temporary directory)

    Each command runs once to warm up, then ``--reps`` times, alternating the
    two tools. Reported per tool: median wall time, median user+sys CPU time
    and peak resident memory (max over runs), both taken from ``os.wait4`` on
    the tool's process: its rusage plus that of the descendants it reaped, so
    autopgo's forked merge workers count for CPU, while ``ru_maxrss`` is the
    largest single process, not a sum. The tool is started through a tiny
    ``sh`` and adopted by this process (PR_SET_CHILD_SUBREAPER): started
    directly, it would inherit this process's own peak RSS (Linux only).
    Both outputs are decoded with ``profiling.pprof.fileio.read_profile`` and must
    be equal.

    It also times the merge engine in this process ("engine"): the same
    decode, merge, encode and write as the command, without Python's start-up
    and imports (about 60 ms, more than pprof needs for 50 profiles), which is
    what a long-running merge worker pays.

Profiles
    200 distinct CPU profiles are cached in bench/.data/profiles/ (git-ignored).
    When fewer are there, the Go test service (tests/goservice) is built into
    bench/.data/ and four instances (each loading itself with 4 goroutines) are
    scraped for 2-second CPU profiles, one thread per instance, until the cache
    is full. That takes about two minutes.

How to run (by hand, from the project root; never by pytest)
    .venv/bin/python bench/merge.py
    .venv/bin/python bench/merge.py --reps 11 --sizes 10,50
    .venv/bin/python bench/merge.py --regenerate     # rebuild the profile cache
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "bench" / ".data"
PROFILE_DIR = DATA_DIR / "profiles"
PROFILE_COUNT = 200
PROFILE_SECONDS = 2
INSTANCES = 4
LOAD = 4
PROGRESS_EVERY = 20
DEFAULT_REPS = 7
DEFAULT_SIZES = (10, 50, 200)
TARGET_N = 50
TARGET_RATIO = 1.00
SH = "/bin/sh"
# Start "$@" in the background with its output redirected, print its pid and exit.
LAUNCH_SCRIPT = 'err=$1; shift; "$@" </dev/null >/dev/null 2>"$err" & echo $!'
PR_SET_CHILD_SUBREAPER = 36

sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import harness  # noqa: E402

from profiling.atomicfile import atomic_write  # noqa: E402
from profiling.pprof import (
    encode,  # noqa: E402
    merge_files,  # noqa: E402
    read_profile,  # noqa: E402
)

# --------------------------------------------------------------------------- profiles


def profile_path(index: int) -> Path:
    return PROFILE_DIR / f"cpu{index:03d}.pb.gz"


def cached_profiles() -> list[Path]:
    return [profile_path(i) for i in range(PROFILE_COUNT) if profile_path(i).is_file()]


def clear_cache() -> None:
    for path in PROFILE_DIR.glob("cpu*.pb.gz"):
        path.unlink()


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def scrape_worker(
    service: harness.Service,
    todo: queue.SimpleQueue[int],
    stop: threading.Event,
    report: Callable[[], None],
) -> None:
    """Scrape profiles from one instance, one at a time, until ``todo`` is empty."""
    try:
        while not stop.is_set():
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            data = service.profile(seconds=PROFILE_SECONDS)
            if data[:2] != b"\x1f\x8b":
                raise RuntimeError(f"{service.url}: the profile is not gzip data")
            write_atomically(profile_path(index), data)
            report()
    except BaseException:
        stop.set()
        raise


def progress_reporter(total: int) -> Callable[[], None]:
    lock = threading.Lock()
    done = [0]

    def report() -> None:
        with lock:
            done[0] += 1
            if done[0] % PROGRESS_EVERY == 0 or done[0] == total:
                print(f"  scraped {done[0]}/{total}", flush=True)

    return report


def generate_profiles(missing: list[int]) -> None:
    """Fill the cache slots in ``missing`` from concurrently running service instances."""
    print(f"building the Go test service into {DATA_DIR} ...", flush=True)
    binary = harness.build_service(DATA_DIR)
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in missing:
        todo.put(index)
    stop = threading.Event()
    report = progress_reporter(len(missing))
    rounds = -(-len(missing) // INSTANCES)
    print(
        f"scraping {len(missing)} CPU profiles ({PROFILE_SECONDS}s each) from {INSTANCES} instances "
        f"(load={LOAD}), about {rounds * PROFILE_SECONDS}s ...",
        flush=True,
    )
    with ExitStack() as stack:
        services = [stack.enter_context(harness.Service(binary, load=LOAD)) for _ in range(INSTANCES)]
        with ThreadPoolExecutor(max_workers=INSTANCES) as pool:
            futures = [pool.submit(scrape_worker, s, todo, stop, report) for s in services]
            try:
                for future in futures:
                    future.result()
            finally:
                stop.set()


def check_distinct(paths: Sequence[Path]) -> None:
    seen: dict[str, Path] = {}
    for path in paths:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in seen:
            raise SystemExit(f"{path} and {seen[digest]} are identical; rerun with --regenerate")
        seen[digest] = path


def ensure_profiles(regenerate: bool) -> list[Path]:
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    if regenerate:
        clear_cache()
    missing = [i for i in range(PROFILE_COUNT) if not profile_path(i).is_file()]
    if missing:
        generate_profiles(missing)
    paths = cached_profiles()
    if len(paths) != PROFILE_COUNT:
        raise SystemExit(f"expected {PROFILE_COUNT} profiles in {PROFILE_DIR}, found {len(paths)}")
    check_distinct(paths)
    median_kib = statistics.median(p.stat().st_size for p in paths) / 1024
    print(f"{len(paths)} distinct profiles in {PROFILE_DIR}, median size {median_kib:.1f} KiB")
    return paths


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Run:
    wall_s: float
    cpu_s: float
    maxrss_kib: int


@dataclass(frozen=True)
class Tool:
    name: str
    command: Callable[[Path, Sequence[Path]], list[str]]
    env: dict[str, str]


@dataclass(frozen=True)
class Summary:
    wall_ms: float
    cpu_ms: float
    peak_mib: float


def autopgo_tool() -> Tool:
    script = Path(sys.executable).parent / "autopgo"
    if not script.exists():
        raise SystemExit(f"{script} not found: install the project into the venv (pip install -e '.[test]')")

    def command(out: Path, inputs: Sequence[Path]) -> list[str]:
        return [str(script), "merge", "-o", str(out), *map(str, inputs)]

    # As installed code runs: with its bytecode cached (the warm-up run writes it),
    # not compiled again on every start.
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return Tool("autopgo", command, env)


def pprof_tool(home: Path) -> Tool:
    pprof = harness.pprof_executable()
    env = harness.go_env()
    env["HOME"] = str(home)

    def command(out: Path, inputs: Sequence[Path]) -> list[str]:
        return [pprof, "-proto", "-symbolize=none", "-output", str(out), *map(str, inputs)]

    return Tool("pprof", command, env)


def become_subreaper() -> None:
    """Adopt orphaned descendants, so that a grandchild can be waited for with wait4.

    Why: a child exec'd straight from this (large) Python process inherits its
    memory high-water mark (vfork shares the parent's mm, and exec records its
    peak in the child's ru_maxrss), so wait4 would report this process's RSS.
    Launching the tool from a small ``sh`` that backgrounds it and exits makes
    the tool an orphan that we adopt and reap, with only sh's ~1 MiB as floor.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def run_once(argv: list[str], env: dict[str, str]) -> Run:
    """Run ``argv`` to completion; wall time, and CPU time and peak RSS from wait4 on it."""
    with tempfile.NamedTemporaryFile(prefix="bench-stderr-") as stderr:
        start = time.perf_counter()
        launcher = subprocess.Popen(
            [SH, "-c", LAUNCH_SCRIPT, "sh", stderr.name, *argv],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        assert launcher.stdout is not None
        with launcher.stdout:
            pid = int(launcher.stdout.read())
        launcher.wait()
        try:
            _, status, usage = os.wait4(pid, 0)
        except ChildProcessError:
            raise RuntimeError(f"{argv[0]} (pid {pid}) was reaped by its launcher") from None
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
        wall = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            message = Path(stderr.name).read_text(errors="replace")
            raise RuntimeError(f"{' '.join(argv[:3])} ... exited with {code}:\n{message}")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)


def summarize(runs: Sequence[Run]) -> Summary:
    return Summary(
        wall_ms=1000 * statistics.median(r.wall_s for r in runs),
        cpu_ms=1000 * statistics.median(r.cpu_s for r in runs),
        peak_mib=max(r.maxrss_kib for r in runs) / 1024,
    )


def time_tools(tools: Sequence[Tool], inputs: Sequence[Path], work: Path, reps: int) -> dict[str, Summary]:
    """Warm each tool up once, then run them ``reps`` times, alternating."""
    outputs = {tool.name: work / f"{tool.name}-{len(inputs)}.pb.gz" for tool in tools}
    argvs = {tool.name: tool.command(outputs[tool.name], inputs) for tool in tools}
    runs: dict[str, list[Run]] = {tool.name: [] for tool in tools}
    for tool in tools:
        run_once(argvs[tool.name], tool.env)
    for _ in range(reps):
        for tool in tools:
            runs[tool.name].append(run_once(argvs[tool.name], tool.env))
    return {name: summarize(r) for name, r in runs.items()}


def time_engine(inputs: Sequence[Path], work: Path, reps: int) -> float:
    """Median wall ms of the merge engine in this (already warm) process.

    The same work as `autopgo merge` without Python's start-up and imports:
    decode on all CPUs, merge, encode and write the result. A long-running
    merge worker pays this, not the start-up.
    """
    out = work / f"engine-{len(inputs)}.pb.gz"
    jobs = os.cpu_count() or 1

    def once() -> float:
        start = time.perf_counter()
        atomic_write(out, encode(merge_files(inputs, jobs=jobs)))
        return time.perf_counter() - start

    once()
    return 1000 * statistics.median(once() for _ in range(reps))


def check_equal(work: Path, n: int) -> None:
    ours = read_profile(work / f"autopgo-{n}.pb.gz")
    theirs = read_profile(work / f"pprof-{n}.pb.gz")
    if ours != theirs or read_profile(work / f"engine-{n}.pb.gz") != theirs:
        raise SystemExit(f"N={n}: autopgo and pprof produced different profiles")
    print(f"N={n}: outputs equal", flush=True)


# --------------------------------------------------------------------------- report


def format_table(results: dict[int, dict[str, Summary]], engine: dict[int, float]) -> str:
    header = (
        "N",
        "autopgo ms",
        "pprof ms",
        "ratio",
        "engine ms",
        "engine ratio",
        "autopgo MiB",
        "pprof MiB",
        "autopgo CPU ms",
        "pprof CPU ms",
    )
    rows = [header]
    for n, r in results.items():
        a, p = r["autopgo"], r["pprof"]
        rows.append(
            (
                str(n),
                f"{a.wall_ms:.0f}",
                f"{p.wall_ms:.0f}",
                f"{a.wall_ms / p.wall_ms:.2f}",
                f"{engine[n]:.0f}",
                f"{engine[n] / p.wall_ms:.2f}",
                f"{a.peak_mib:.1f}",
                f"{p.peak_mib:.1f}",
                f"{a.cpu_ms:.0f}",
                f"{p.cpu_ms:.0f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows)


def target_line(results: dict[int, dict[str, Summary]], engine: dict[int, float]) -> str:
    line = f"target: ratio <= {TARGET_RATIO:.2f} at N={TARGET_N}"
    if TARGET_N not in results:
        return f"{line}: not measured (N={TARGET_N} not in --sizes)"
    pprof_ms = results[TARGET_N]["pprof"].wall_ms
    verdicts = []
    for what, ms in (("command", results[TARGET_N]["autopgo"].wall_ms), ("engine", engine[TARGET_N])):
        ratio = round(ms / pprof_ms, 2)
        verdicts.append(f"{what} {'met' if ratio <= TARGET_RATIO else 'NOT met'} (ratio {ratio:.2f})")
    return f"{line}: {'; '.join(verdicts)}"


# --------------------------------------------------------------------------- main


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    # pprof passes a single input through unmerged (driver/fetch.go), so N=1 compares nothing.
    if not sizes or any(not 2 <= n <= PROFILE_COUNT for n in sizes):
        raise argparse.ArgumentTypeError(
            f"sizes must be between 2 and {PROFILE_COUNT} (pprof does not merge a single input)"
        )
    return sizes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Time `autopgo merge` against pprof -proto on real CPU profiles.")
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS, help=f"timed runs per tool (default {DEFAULT_REPS})")
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=list(DEFAULT_SIZES),
        help=f"comma-separated numbers of profiles to merge (default {','.join(map(str, DEFAULT_SIZES))})",
    )
    parser.add_argument("--regenerate", action="store_true", help="discard and rebuild the profile cache")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    profiles = ensure_profiles(args.regenerate)
    print("preparing pprof (built on first use) ...", flush=True)
    become_subreaper()
    results: dict[int, dict[str, Summary]] = {}
    engine: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="autopgo-bench-") as tmp:
        work, home = Path(tmp) / "out", Path(tmp) / "home"
        work.mkdir()
        home.mkdir()
        tools = [autopgo_tool(), pprof_tool(home)]
        for n in args.sizes:
            print(f"N={n}: 1 warm-up + {args.reps} runs per tool ...", flush=True)
            results[n] = time_tools(tools, profiles[:n], work, args.reps)
            engine[n] = time_engine(profiles[:n], work, args.reps)
            check_equal(work, n)
    print()
    print(format_table(results, engine))
    print(target_line(results, engine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
