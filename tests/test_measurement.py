"""What `autopgo inspect` prints, against `go tool pprof -top` on the same profiles: the same
values in the same units (`0.01s`, `120ms`, `512.50kB`), the same percentages, the same duration."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import harness
import httpx
import pytest
from processes import wait_for

from cli.main import main
from profiling.pprof import Function, Line, Location, Profile, Sample, ValueType, encode, merge, read_profile

pytestmark = pytest.mark.slow

Row = tuple[str, str, str, str, str]  # flat, flat%, sum%, cum, cum%


def pprof_top(path: Path) -> tuple[str, list[tuple[str, Row]]]:
    """`go tool pprof -top`'s Duration line and its rows, as (function, (flat, flat%, sum%, cum, cum%))."""
    env = harness.go_env()
    env["HOME"] = str(path.parent)
    result = subprocess.run(
        [harness.pprof_executable(), "-top", str(path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    duration = next((line for line in lines if line.startswith("Duration: ")), "")
    header = next(i for i, line in enumerate(lines) if line.split() == ["flat", "flat%", "sum%", "cum", "cum%"])
    rows = []
    for line in lines[header + 1 :]:
        fields = line.split()
        name = re.sub(r" \((partial-)?inline\)$", "", " ".join(fields[5:]))
        rows.append((name, tuple(fields[:5])))
    return duration, rows


def inspect(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, str], list[tuple[str, Row]]]:
    """`autopgo inspect -n 100000`'s header fields and its rows, parsed as for pprof."""
    assert main(["inspect", "-n", "100000", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    fields = dict(line.split(":", 1) for line in out if re.match(r"^(Duration|Period):", line))
    fields["Top functions"] = next(line for line in out if line.startswith("Top functions"))
    start = next(i for i, line in enumerate(out) if line.split() == ["flat", "flat%", "sum%", "cum", "cum%", "function"])
    rows = [(" ".join(line.split()[5:]), tuple(line.split()[:5])) for line in out[start + 1 :]]
    return {k: v.strip() for k, v in fields.items()}, rows


def assert_same_as_pprof(path: Path, capsys: pytest.CaptureFixture[str]) -> list[tuple[str, Row]]:
    duration, theirs = pprof_top(path)
    header, ours = inspect(path, capsys)
    assert theirs, "pprof listed no function"
    assert ours == theirs
    if duration:  # "Duration: 1.01s, Total samples = 2.46s (243.52%)"
        match = re.match(r"Duration: (\S+), Total samples = (\S+)", duration)
        assert match, duration
        assert header["Duration"] == match[1]
        assert header["Top functions"].endswith(f"(total {match[2]}):")
    return ours


def test_inspect_matches_pprof_top_on_real_cpu_profiles(
    cpu_profiles: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    merged = tmp_path / "merged.pb.gz"
    merged.write_bytes(encode(merge([read_profile(p) for p in cpu_profiles])))
    for path in [cpu_profiles[0], merged]:
        rows = assert_same_as_pprof(path, capsys)
        assert not any(re.fullmatch(r"\d{4,}", cell) for _, row in rows for cell in row), rows[:5]


def test_inspect_matches_pprof_top_on_a_real_heap_profile(
    service_binary: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "heap.pb.gz"

    def sampled_heap() -> bool:  # a service that has just started may not have a sampled allocation yet
        response = httpx.get(f"{service.url}/debug/pprof/heap", timeout=30)
        response.raise_for_status()
        path.write_bytes(response.content)
        return bool(read_profile(path).samples)

    with harness.Service(service_binary).start() as service:
        wait_for("a heap profile with samples", sampled_heap, 60, every=1)
    rows = assert_same_as_pprof(path, capsys)
    assert any(row[0].endswith(("kB", "MB")) for _, row in rows), rows[:5]


def flat_profile(unit: ValueType, values: list[int], duration_nanos: int = 0) -> Profile:
    """One function per value, each the leaf of its own sample under main.main."""
    names = ["main.main"] + [f"main.f{i:03d}" for i in range(len(values))]
    return Profile(
        sample_types=[unit],
        samples=[Sample((i + 2, 1), (v,)) for i, v in enumerate(values)],
        locations=[Location(i + 1, 0, 0, (Line(i + 1, 10),)) for i in range(len(names))],
        functions=[Function(i + 1, name, name, "main.go", 1) for i, name in enumerate(names)],
        duration_nanos=duration_nanos,
        period_type=unit,
        period=1,
    )


NS = ValueType("cpu", "nanoseconds")
CASES = {
    "nanoseconds": (NS, [7, 130, 999], 0),
    "microseconds": (NS, [1_500, 25_000, 999_999], 1_000),
    "milliseconds, small share": (NS, [1_000_000, 3_000_000_000, 120_000_000], 90_000_000_000),
    "hours": (NS, [5_400_000_000_000, 7_200_000_000_000, 3_600_000_000_000], 9_000_000_000_000),
    "bytes": (ValueType("inuse_space", "bytes"), [317, 1_000, 1023], 0),
    "kilobytes and megabytes": (ValueType("alloc_space", "bytes"), [524_288, 1_572_864, 10_240, 3 << 30], 0),
    "counts": (ValueType("samples", "count"), [1, 12_345, 3], 5_000_000_000),
}


@pytest.mark.parametrize("case", CASES)
def test_inspect_units_match_pprof(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unit, values, duration = CASES[case]
    path = tmp_path / "p.pb.gz"
    path.write_bytes(encode(flat_profile(unit, values, duration)))
    assert_same_as_pprof(path, capsys)
