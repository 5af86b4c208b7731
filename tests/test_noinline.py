"""The never-inline guard (profiling.pprof.noinline) against the Go toolchain: `go tool preprofile`
shows what the compiler reads, and the compiler itself shows what it inlines."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import harness
import pytest

from profiling.pprof import (
    BUILTIN_NEVER_INLINE,
    NOINLINE_SUFFIX,
    Function,
    Line,
    Location,
    Profile,
    Sample,
    ValueType,
    compact,
    decode,
    encode,
    guard_never_inline,
    merge,
    read_profile,
)

pytestmark = pytest.mark.slow

HEADER = "GO PREPROFILE V1\n"
GOPARK = [re.compile(r"^runtime\.gopark$")]
Edge = tuple[str, str, int, int]  # caller, callee, call-site offset, weight


def edges(preprofile: bytes) -> list[Edge]:
    """The edges of `go tool preprofile` output, in its order."""
    text = preprofile.decode()
    assert text.startswith(HEADER)
    lines = text[len(HEADER) :].splitlines()
    return [(lines[i], lines[i + 1], *map(int, lines[i + 2].split())) for i in range(0, len(lines), 3)]


def serialized(edge_list: list[Edge]) -> bytes:
    """Edges as `go tool preprofile` writes them: heaviest first, then by caller, callee and offset."""
    ordered = sorted(edge_list, key=lambda e: (-e[3], e[0], e[1], e[2]))
    return (HEADER + "".join(f"{caller}\n{callee}\n{offset} {weight}\n" for caller, callee, offset, weight in ordered)).encode()


def with_callee_renamed(preprofile: bytes, name: str) -> bytes:
    """What preprofile must print once the edges into ``name`` are guarded, and nothing else."""
    return serialized([(c, d + NOINLINE_SUFFIX if d == name else d, o, w) for c, d, o, w in edges(preprofile)])


def preprofile_of(p: Profile, path: Path) -> bytes:
    path.write_bytes(encode(p))
    return harness.preprofile(path)


def cpu(samples: list[Sample], functions: list[Function], locations: list[Location]) -> Profile:
    return Profile(
        sample_types=[ValueType("samples", "count"), ValueType("cpu", "nanoseconds")],
        samples=samples,
        locations=locations,
        functions=functions,
        period_type=ValueType("cpu", "nanoseconds"),
        period=10_000_000,
    )


def gopark_profile() -> Profile:
    """runtime.gopark as a callee (of chanrecv, and of selectgo at two call sites), as a caller
    (of mcall), alone on a stack, and an unrelated edge of the same weight as a guarded one."""
    functions = [
        Function(1, "runtime.chanrecv", "runtime.chanrecv", "chan.go", 100),
        Function(2, "runtime.gopark", "runtime.gopark", "proc.go", 400),
        Function(3, "runtime.mcall", "runtime.mcall", "asm.s", 50),
        Function(4, "main.work", "main.work", "main.go", 20),
        Function(5, "main.helper", "main.helper", "main.go", 30),
        Function(6, "runtime.selectgo", "runtime.selectgo", "select.go", 200),
    ]
    locations = [
        Location(1, 0, 0x1000, (Line(1, 115),)),  # chanrecv calls gopark
        Location(2, 0, 0x2000, (Line(2, 402),)),  # in gopark
        Location(3, 0, 0x2100, (Line(2, 410),)),  # gopark calls mcall
        Location(4, 0, 0x3000, (Line(3, 51),)),
        Location(5, 0, 0x4000, (Line(4, 25),)),
        Location(6, 0, 0x5000, (Line(5, 31),)),
        Location(7, 0, 0x6000, (Line(6, 230),)),  # selectgo calls gopark
        Location(8, 0, 0x6100, (Line(6, 250),)),  # selectgo calls gopark elsewhere
    ]
    samples = [
        Sample((2, 1), (5, 50_000_000)),
        Sample((4, 3, 1), (3, 30_000_000)),  # mcall <- gopark <- chanrecv: the compiler reads gopark -> mcall
        Sample((6, 5), (5, 50_000_000)),
        Sample((2,), (2, 20_000_000)),  # gopark alone: no edge
        Sample((2, 7), (4, 40_000_000)),
        Sample((2, 8), (1, 10_000_000)),
        Sample((2, 1), (0, 0)),  # no weight: no edge
    ]
    return cpu(samples, functions, locations)


def test_gopark_edges_into_it_are_renamed_and_nothing_else(tmp_path: Path) -> None:
    plain = gopark_profile()
    before = preprofile_of(plain, tmp_path / "plain.pgo")
    guarded = guard_never_inline(plain, GOPARK)
    after = preprofile_of(guarded, tmp_path / "guarded.pgo")

    assert ("runtime.chanrecv", "runtime.gopark", 15, 5) in edges(before)
    assert after == with_callee_renamed(before, "runtime.gopark") != before
    assert ("runtime.gopark", "runtime.mcall", 10, 3) in edges(after)  # out of gopark: untouched
    # The renamed copy is a function entry of its own; the samples stay, compacted as a merge does.
    names = {fn.name for fn in guarded.functions}
    assert {"runtime.gopark", "runtime.gopark" + NOINLINE_SUFFIX} <= names
    assert [s.values for s in guarded.samples] == [s.values for s in compact(plain).samples]


def test_the_built_in_list_guards_gopark(tmp_path: Path) -> None:
    before = preprofile_of(gopark_profile(), tmp_path / "plain.pgo")
    after = preprofile_of(guard_never_inline(gopark_profile(), BUILTIN_NEVER_INLINE), tmp_path / "guarded.pgo")
    assert after == with_callee_renamed(before, "runtime.gopark")


def test_guarding_twice_changes_nothing(tmp_path: Path) -> None:
    once = decode(encode(guard_never_inline(gopark_profile(), GOPARK)))
    # A pattern that also matches the renamed name must not rename it again.
    assert guard_never_inline(once, [re.compile("gopark")]) is once
    twice = decode(encode(guard_never_inline(merge([once, gopark_profile()]), GOPARK)))
    assert not any(fn.name.endswith(NOINLINE_SUFFIX * 2) for fn in twice.functions)
    doubled = merge([gopark_profile(), gopark_profile()])
    assert preprofile_of(twice, tmp_path / "twice.pgo") == preprofile_of(
        guard_never_inline(doubled, GOPARK), tmp_path / "doubled.pgo"
    )


def test_a_frame_that_is_callee_and_caller_is_renamed_in_both_roles(tmp_path: Path) -> None:
    """gopark with runtime.releasem inlined into it in the profiled binary: one frame is the callee of
    chanrecv and the caller of releasem, so the guard renames it in both edges; the weights stay."""
    p = gopark_profile()
    p.functions.append(Function(7, "runtime.releasem", "runtime.releasem", "runtime1.go", 600))
    p.locations.append(Location(9, 0, 0x2200, (Line(7, 602), Line(2, 405))))  # releasem inlined in gopark
    p.samples.append(Sample((9, 1), (6, 60_000_000)))
    before = edges(preprofile_of(p, tmp_path / "plain.pgo"))
    after = edges(preprofile_of(guard_never_inline(p, GOPARK), tmp_path / "guarded.pgo"))

    guarded = "runtime.gopark" + NOINLINE_SUFFIX
    assert ("runtime.chanrecv", "runtime.gopark", 15, 11) in before
    assert ("runtime.gopark", "runtime.releasem", 5, 6) in before
    assert ("runtime.chanrecv", guarded, 15, 11) in after and (guarded, "runtime.releasem", 5, 6) in after
    assert ("runtime.gopark", "runtime.mcall", 10, 3) in after  # a frame that is no callee keeps its name
    untouched = [e for e in before if "runtime.gopark" not in (e[0], e[1])]
    assert [e for e in after if guarded not in (e[0], e[1]) and "runtime.gopark" not in (e[0], e[1])] == untouched
    assert sum(e[3] for e in after) == sum(e[3] for e in before)  # the total hotness is measured against
    assert not [e for e in after if e[1] == "runtime.gopark"]


def test_real_profile_only_edges_into_the_guarded_function_change(cpu_profiles: list[Path], tmp_path: Path) -> None:
    merged = merge([read_profile(p) for p in cpu_profiles])
    before = preprofile_of(merged, tmp_path / "plain.pgo")
    callers = {caller for caller, _, _, _ in edges(before)}
    # The heaviest callee that calls nothing the compiler sees (an assembly or leaf function, say).
    callee = next(callee for _, callee, _, _ in edges(before) if callee not in callers)

    guarded = guard_never_inline(merged, [re.compile(f"^{re.escape(callee)}$")])
    after = preprofile_of(guarded, tmp_path / "guarded.pgo")

    assert after == with_callee_renamed(before, callee) != before


def test_go_build_with_a_guarded_profile(cpu_profiles: list[Path], tmp_path: Path) -> None:
    merged = merge([read_profile(p) for p in cpu_profiles])
    before = edges(preprofile_of(merged, tmp_path / "plain.pgo"))
    hottest_callee = before[0][1]
    patterns = [*BUILTIN_NEVER_INLINE, re.compile(f"^{re.escape(hottest_callee)}$")]
    guarded = tmp_path / "default.pgo"
    guarded.write_bytes(encode(guard_never_inline(merged, patterns)))
    assert any(callee.endswith(NOINLINE_SUFFIX) for _, callee, _, _ in edges(harness.preprofile(guarded)))

    binary = harness.build_service(tmp_path, pgo=guarded)
    assert re.search(r"build\s+-pgo=\S*default\.pgo", harness.go("version", "-m", str(binary)))


HOT_PROGRAM = """\
package main

import "os"

func checksum(data []byte) int {
	s := 0
	for i, b := range data {
		s = s*31 + int(b) ^ i
		if s > 1<<20 {
			s = s%65521 + len(data)
		}
		if b == 'x' {
			s += 7 * i
		} else if b == 'y' {
			s -= 3 * i
		}
	}
	for j := 0; j < len(data)/2; j++ {
		s += int(data[j]) * int(data[len(data)-1-j])
	}
	return s
}

func main() {
	total := 0
	for _, arg := range os.Args {
		total += checksum([]byte(arg))
	}
	os.Exit(total & 1)
}
"""


def line_of(text: str) -> int:
    return next(n for n, line in enumerate(HOT_PROGRAM.splitlines(), 1) if line.strip().startswith(text))


CHECKSUM_START, MAIN_START, CALL_LINE = line_of("func checksum("), line_of("func main("), line_of("total += checksum(")


def hot_edge_profile(callee: str) -> Profile:
    """A profile with one hot edge: main.main calls ``callee`` at checksum's call site."""
    functions = [
        Function(1, "main.main", "main.main", "main.go", MAIN_START),
        Function(2, callee, callee, "main.go", CHECKSUM_START),
    ]
    locations = [Location(1, 0, 0x1000, (Line(1, CALL_LINE),)), Location(2, 0, 0x2000, (Line(2, CHECKSUM_START + 3),))]
    return cpu([Sample((2, 1), (1000, 10_000_000_000))], functions, locations)


def inlining_report(module: Path, profile: Profile | None) -> str:
    """What the compiler says about inlining main.go when built with ``profile`` (None: without one)."""
    pgo = module / "default.pgo"
    if profile is not None:
        pgo.write_bytes(encode(profile))
    result = subprocess.run(
        [harness.go_executable(), "build", "-o", str(module / "prog"), f"-pgo={pgo if profile else 'off'}", "-gcflags=-m", "."],
        cwd=module,
        env=harness.go_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_the_compiler_does_not_inline_a_guarded_hot_callee(tmp_path: Path) -> None:
    module = tmp_path / "hot"
    module.mkdir()
    (module / "go.mod").write_text("module autopgo.test/hot\n\ngo 1.21\n")
    (module / "main.go").write_text(HOT_PROGRAM)
    call = f"main.go:{CALL_LINE}:"
    inlined = re.compile(rf"{re.escape(call)}\d+: inlining call to checksum")

    # Too big to inline without a profile; inlined where the profile says the call is hot.
    assert not inlined.search(inlining_report(module, None))
    plain = hot_edge_profile("main.checksum")
    assert inlined.search(inlining_report(module, plain))
    guarded = guard_never_inline(plain, [re.compile(r"^main\.checksum$")])
    assert sorted(fn.name for fn in guarded.functions) == ["main.checksum" + NOINLINE_SUFFIX, "main.main"]
    assert not inlined.search(inlining_report(module, guarded))
