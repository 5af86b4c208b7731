"""The ``autopgo`` command (cli.main) run in-process on small hand-built profiles."""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sample_profiles import cpu_profile, heap_profile

from cli.main import main
from profiling.pprof import Profile, ValueType, decode, encode

AUTOPGO = Path(sys.executable).with_name("autopgo")


def write(path: Path, p: Profile) -> Path:
    path.write_bytes(encode(p))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, command: str, *fragments: str) -> None:
    assert code == 1
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert err.startswith(f"autopgo {command}: "), err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"


def stacks(p: Profile) -> list[tuple[tuple[str, ...], tuple[int, ...]]]:
    """Each sample as (function names from leaf to root, values), sorted."""
    functions, locations = p.functions_by_id(), p.locations_by_id()
    return sorted(
        (tuple(functions[ln.function_id].name for lid in s.location_ids for ln in locations[lid].lines), s.values)
        for s in p.samples
    )


# ----------------------------------------------------------------------------------------------
# merge


def test_merge_writes_a_gzip_profile_that_decodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "a.pb.gz", cpu_profile())
    b = write(tmp_path / "b.pb.gz", cpu_profile(scale=2))
    out = tmp_path / "merged.pb.gz"
    code, stdout, stderr = run(capsys, "merge", "-o", out, a, b, "-j", 1)
    assert (code, stdout, stderr) == (0, "", "")
    data = out.read_bytes()
    assert data[:2] == b"\x1f\x8b"
    merged = decode(gzip.decompress(data))
    assert stacks(merged) == [
        (("main.leaf", "main.work", "main.main"), (9, 90_000_000)),
        (("runtime.mallocgc", "main.main"), (3, 30_000_000)),
    ]
    assert merged.duration_nanos == 20_000_000_000
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_merge_accepts_raw_protobuf_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "a.pb"
    raw.write_bytes(gzip.decompress(encode(cpu_profile())))
    out = tmp_path / "out.pb.gz"
    assert run(capsys, "merge", "-o", out, raw)[0] == 0
    assert stacks(decode(out.read_bytes())) == stacks(cpu_profile())


def test_merge_in_parallel_matches_serial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = [write(tmp_path / f"in{i}.pb.gz", cpu_profile(scale=i + 1)) for i in range(8)]
    serial, parallel = tmp_path / "serial.pb.gz", tmp_path / "parallel.pb.gz"
    assert run(capsys, "merge", "-o", serial, "-j", 1, *inputs)[0] == 0
    assert run(capsys, "merge", "-o", parallel, "-j", 2, *inputs)[0] == 0
    assert decode(parallel.read_bytes()) == decode(serial.read_bytes())
    assert stacks(decode(serial.read_bytes()))[1] == (("runtime.mallocgc", "main.main"), (36, 360_000_000))


def test_drop_that_matches_nothing_keeps_the_samples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "a.pb.gz", cpu_profile())
    plain, dropped = tmp_path / "plain.pb.gz", tmp_path / "dropped.pb.gz"
    assert run(capsys, "merge", "-o", plain, a)[0] == 0
    assert run(capsys, "merge", "-o", dropped, "--drop", "^nothing\\.matches$", a)[0] == 0
    assert stacks(decode(dropped.read_bytes())) == stacks(decode(plain.read_bytes())) == stacks(cpu_profile())


@pytest.mark.parametrize(
    ("drop", "expected"),
    [
        # main.work is the outer frame of location 1: the location goes, main.main is the new leaf.
        ("^main\\.work$", [(("main.main",), (3, 30_000_000)), (("runtime.mallocgc", "main.main"), (1, 10_000_000))]),
        # Only the inlined main.leaf matches: location 1 keeps its outer frame main.work.
        (
            "^main\\.leaf$",
            [(("main.work", "main.main"), (3, 30_000_000)), (("runtime.mallocgc", "main.main"), (1, 10_000_000))],
        ),
    ],
    ids=["outer-frame", "inlined-frame"],
)
def test_drop_prunes_matching_frames_and_their_callees(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], drop: str, expected: list
) -> None:
    a = write(tmp_path / "a.pb.gz", cpu_profile())
    out = tmp_path / "out.pb.gz"
    assert run(capsys, "merge", "-o", out, "--drop", drop, a)[0] == 0
    assert stacks(decode(out.read_bytes())) == expected


def test_drop_with_keep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "a.pb.gz", cpu_profile())
    out = tmp_path / "out.pb.gz"
    assert run(capsys, "merge", "-o", out, "--drop", "^(main\\.leaf|runtime\\.)", "--keep", "^main\\.", a)[0] == 0
    assert stacks(decode(out.read_bytes())) == [
        (("main.leaf", "main.work", "main.main"), (3, 30_000_000)),
        (("main.main",), (1, 10_000_000)),
    ]


def test_prune_config_applies_the_apps_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "a.pb.gz", cpu_profile())
    config = tmp_path / "prune.yaml"
    config.write_text("- app: svc\n  rules:\n    - drop: ^runtime\\.\n- app: other\n  rules:\n    - drop: ^main\\.\n")
    out = tmp_path / "out.pb.gz"
    assert run(capsys, "merge", "-o", out, "--prune-config", config, "--app", "svc", a)[0] == 0
    assert stacks(decode(out.read_bytes())) == [
        (("main.leaf", "main.work", "main.main"), (3, 30_000_000)),
        (("main.main",), (1, 10_000_000)),
    ]
    assert all(loc.lines for loc in decode(out.read_bytes()).locations)


def test_keep_without_drop_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "a.pb.gz", cpu_profile())
    out = tmp_path / "out.pb.gz"
    code, stdout, err = run(capsys, "merge", "-o", out, "--keep", "^main\\.", a)
    assert_one_line_error(code, err, "merge", "--keep")
    assert stdout == "" and not out.exists()


@pytest.mark.parametrize("given", ["config-only", "app-only"])
def test_prune_config_and_app_go_together(tmp_path: Path, capsys: pytest.CaptureFixture[str], given: str) -> None:
    a = write(tmp_path / "a.pb.gz", cpu_profile())
    config = tmp_path / "prune.yaml"
    config.write_text("- app: svc\n")
    out = tmp_path / "out.pb.gz"
    extra = ["--prune-config", config] if given == "config-only" else ["--app", "svc"]
    code, _, err = run(capsys, "merge", "-o", out, *extra, a)
    assert_one_line_error(code, err, "merge", "--prune-config", "--app")
    assert not out.exists()


def test_bad_prune_config_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "a.pb.gz", cpu_profile())
    config = tmp_path / "prune.yaml"
    config.write_text("- app: svc\n  rules:\n    - drop: '(unclosed'\n")
    out = tmp_path / "out.pb.gz"
    code, _, err = run(capsys, "merge", "-o", out, "--prune-config", config, "--app", "svc", a)
    assert_one_line_error(code, err, "merge", str(config), "entry 1")
    assert not out.exists()


def test_bad_drop_regex_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "a.pb.gz", cpu_profile())
    out = tmp_path / "out.pb.gz"
    code, _, err = run(capsys, "merge", "-o", out, "--drop", "(", a)
    assert_one_line_error(code, err, "merge", "bad regular expression")
    assert not out.exists()


def test_missing_input_fails_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "a.pb.gz", cpu_profile())
    missing = tmp_path / "nope.pb.gz"
    out = tmp_path / "out.pb.gz"
    code, stdout, err = run(capsys, "merge", "-o", out, a, missing)
    assert_one_line_error(code, err, "merge", str(missing))
    assert stdout == "" and not out.exists()


@pytest.mark.parametrize("jobs", [1, 2], ids=["serial", "parallel"])
def test_garbage_input_fails_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str], jobs: int) -> None:
    inputs = [write(tmp_path / f"in{i}.pb.gz", cpu_profile()) for i in range(8)]
    garbage = tmp_path / "garbage.pb.gz"
    garbage.write_bytes(b"this is not a profile, just some text\n" * 4)
    inputs[6] = garbage  # with -j 2 the second worker meets it
    out = tmp_path / "out.pb.gz"
    code, stdout, err = run(capsys, "merge", "-o", out, "-j", jobs, *inputs)
    assert_one_line_error(code, err, "merge", str(garbage))
    assert stdout == "" and not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


TRUNCATED = "decompressing profile: unexpected end of gzip data (truncated)"


def merge_inputs(cpu_profiles: list[Path], odd_one: Path) -> list[Path]:
    """Eight inputs with ``odd_one`` second: with -j 2 a decoding worker meets it."""
    return [cpu_profiles[0], odd_one, *cpu_profiles[1:], *cpu_profiles[:2]]


@pytest.mark.parametrize("cut", [100, 10000, 20000, 23000, -1, -9])
def test_truncated_profile_is_called_truncated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cpu_profiles: list[Path], long_cpu_profile: Path, cut: int
) -> None:
    cut_file = tmp_path / "t.pb.gz"
    cut_file.write_bytes(long_cpu_profile.read_bytes()[:cut])
    code, out, err = run(capsys, "inspect", cut_file)
    assert_one_line_error(code, err, "inspect", f"{cut_file}: {TRUNCATED}")
    assert out == ""
    for jobs in (1, 2):
        output = tmp_path / "out.pb.gz"
        code, out, err = run(capsys, "merge", "-o", output, "-j", jobs, *merge_inputs(cpu_profiles, cut_file))
        assert_one_line_error(code, err, "merge", f"{cut_file}: {TRUNCATED}")
        assert "larger than the limit" not in err and not output.exists()


def test_corrupt_gzip_checksum_is_called_corrupt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cpu_profiles: list[Path], long_cpu_profile: Path
) -> None:
    data = bytearray(long_cpu_profile.read_bytes())
    data[-8] ^= 0xFF  # the gzip trailer's CRC-32
    corrupt = tmp_path / "c.pb.gz"
    corrupt.write_bytes(data)
    says = f"{corrupt}: decompressing profile: corrupt gzip data (CRC-32 checksum mismatch)"
    code, out, err = run(capsys, "inspect", corrupt)
    assert_one_line_error(code, err, "inspect", says)
    assert out == ""
    for jobs in (1, 2):
        output = tmp_path / "out.pb.gz"
        code, out, err = run(capsys, "merge", "-o", output, "-j", jobs, *merge_inputs(cpu_profiles, corrupt))
        assert_one_line_error(code, err, "merge", says)
        assert not output.exists()


def test_profile_over_max_decompressed_is_larger_than_the_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cpu_profiles: list[Path], long_cpu_profile: Path
) -> None:
    limit = max(len(gzip.decompress(p.read_bytes())) for p in cpu_profiles)
    assert len(gzip.decompress(long_cpu_profile.read_bytes())) > limit
    too_large = f"{long_cpu_profile}: decompressed profile is larger than the limit of {limit} bytes"
    code, _, err = run(capsys, "inspect", "--max-decompressed", limit, long_cpu_profile)
    assert_one_line_error(code, err, "inspect", too_large)
    for jobs in (1, 2):
        output = tmp_path / "out.pb.gz"
        inputs = merge_inputs(cpu_profiles, long_cpu_profile)
        code, _, err = run(capsys, "merge", "-o", output, "-j", jobs, "--max-decompressed", limit, *inputs)
        assert_one_line_error(code, err, "merge", too_large)
        assert not output.exists()
    assert run(capsys, "merge", "-o", tmp_path / "out.pb.gz", "--max-decompressed", limit, *cpu_profiles)[0] == 0


def test_failure_leaves_an_existing_output_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.pb.gz"
    garbage.write_bytes(b"\x1f\x8bnot really gzip")
    out = tmp_path / "out.pb.gz"
    out.write_bytes(b"previous")
    code, _, err = run(capsys, "merge", "-o", out, garbage)
    assert_one_line_error(code, err, "merge", str(garbage))
    assert out.read_bytes() == b"previous"


def test_incompatible_sample_types_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "cpu.pb.gz", cpu_profile())
    b = write(tmp_path / "heap.pb.gz", heap_profile())
    b2 = tmp_path / "heap2.pb.gz"
    other = cpu_profile()
    other.sample_types = [ValueType("samples", "count"), ValueType("wall", "nanoseconds")]
    write(b2, other)
    out = tmp_path / "out.pb.gz"
    code, _, err = run(capsys, "merge", "-o", out, a, b2)
    assert_one_line_error(code, err, "merge", "incompatible sample types")
    assert not out.exists()
    code, _, err = run(capsys, "merge", "-o", out, a, b)
    assert_one_line_error(code, err, "merge", "incompatible")
    assert not out.exists()


def test_trim_keeps_what_pgo_needs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "a.pb.gz", cpu_profile())
    out = tmp_path / "out.pb.gz"
    assert run(capsys, "merge", "-o", out, "--trim", a)[0] == 0
    trimmed = decode(out.read_bytes())
    assert trimmed.sample_types == [ValueType("samples", "count")]
    assert trimmed.mappings == [] and all(s.labels is None for s in trimmed.samples)
    names = {f.name for f in trimmed.functions}
    assert {"main.work", "main.main"} <= names


def test_trim_needs_start_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "a.pb.gz", cpu_profile(start_line=0))
    assert all(f.start_line == 0 for f in decode((tmp_path / "a.pb.gz").read_bytes()).functions)
    out = tmp_path / "out.pb.gz"
    code, _, err = run(capsys, "merge", "-o", out, "--trim", a)
    assert_one_line_error(code, err, "merge", "start_line")
    assert not out.exists()


def test_trim_needs_a_cpu_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "heap.pb.gz", heap_profile())
    out = tmp_path / "out.pb.gz"
    code, _, err = run(capsys, "merge", "-o", out, "--trim", a)
    assert_one_line_error(code, err, "merge", "samples/count")
    assert not out.exists()


# ----------------------------------------------------------------------------------------------
# inspect


def test_inspect_prints_types_counts_and_top(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "a.pb.gz", cpu_profile())
    code, out, err = run(capsys, "inspect", a)
    assert (code, err) == (0, "")
    assert "Sample types: samples/count, cpu/nanoseconds" in out
    assert re.search(r"Period:\s+10ms \(cpu/nanoseconds\)", out), out
    assert re.search(r"Duration:\s+10s\n", out), out
    assert re.search(r"Samples:\s+2\s+Locations: 3\s+Functions: 4\s+Mappings: 1", out), out
    assert re.search(r"Top functions by flat cpu/nanoseconds \(total 40ms\)", out), out
    rows = {line.split()[-1]: line.split()[:-1] for line in out.splitlines() if line.endswith(("main.leaf", "main.main"))}
    # flat, flat%, sum%, cum, cum%: as go tool pprof -top prints them (tests/test_measurement.py compares)
    assert rows["main.leaf"] == ["30ms", "75.00%", "75.00%", "30ms", "75.00%"]
    assert rows["main.main"] == ["0", "0%", "100%", "40ms", "100%"]


def test_inspect_prints_sizes_as_pprof_does(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "a.pb.gz", heap_profile())
    code, out, err = run(capsys, "inspect", a)
    assert (code, err) == (0, "")
    assert re.search(r"Period:\s+512kB \(space/bytes\)", out), out
    assert re.search(r"Top functions by flat alloc_space/bytes \(total 4kB\)", out), out
    leaf = next(line.split() for line in out.splitlines() if line.endswith("main.leaf"))
    assert leaf == ["3kB", "75.00%", "75.00%", "3kB", "75.00%", "main.leaf"]


def test_inspect_top_n(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "a.pb.gz", cpu_profile())
    code, out, _ = run(capsys, "inspect", "-n", 1, a)
    assert code == 0
    table = out.split("Top functions", 1)[1].splitlines()[1:]
    assert len(table) == 2 and table[1].endswith("main.leaf"), table


def test_inspect_garbage_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x01garbage")
    code, out, err = run(capsys, "inspect", garbage)
    assert_one_line_error(code, err, "inspect", str(garbage))
    assert out == ""


@pytest.mark.parametrize("command", ["merge", "inspect"])
def test_max_decompressed_takes_a_size_with_a_unit(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    a = write(tmp_path / "a.pb.gz", cpu_profile())  # 317 bytes once decompressed
    out = tmp_path / "out.pb.gz"
    argv = ["merge", "-o", out, a] if command == "merge" else ["inspect", a]
    code, _, err = run(capsys, *argv, "--max-decompressed", "0.5K")
    assert (code, err) == (0, "")
    code, _, err = run(capsys, *argv, "--max-decompressed", "0.25KiB")
    assert_one_line_error(code, err, command, "larger than the limit")
    for bad, problem in [("1.5", "1.5 is not a whole number of bytes"), ("0", "must be more than 0 bytes"),
                         ("-1K", "must not be negative"), ("big", "expected a size such as")]:
        code, _, err = run(capsys, *argv, f"--max-decompressed={bad}")
        assert_one_line_error(code, err, command, f"autopgo {command}: --max-decompressed: {problem}")


@pytest.mark.parametrize("limit", ["64MiB", "512MB", "536870912"])
@pytest.mark.parametrize("command", ["merge", "inspect"])
def test_max_decompressed_as_the_readme_writes_it(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, limit: str) -> None:
    """A size with a unit, as --max-body takes it, or a bare number of bytes, as before."""
    a = write(tmp_path / "a.pb.gz", cpu_profile())
    argv = ["merge", "-o", tmp_path / "out.pb.gz", a] if command == "merge" else ["inspect", a]
    code, _, err = run(capsys, *argv, "--max-decompressed", limit)
    assert (code, err) == (0, "")


def test_prune_config_that_is_not_yaml_shows_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "a.pb.gz", cpu_profile())
    config = tmp_path / "prune.yaml"
    config.write_text("- app: svc\n  rules:\n    - drop: x\n\tkeep: y\n")
    code, out, err = run(capsys, "merge", "-o", tmp_path / "out.pb.gz", "--prune-config", config, "--app", "svc", a)
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"autopgo merge: {config}:4:1: not valid YAML: found character '\\t' that cannot start any token",
        "autopgo merge:   4 | \tkeep: y",
        "autopgo merge:     | ^ while scanning for the next token",
    ]


def test_bad_prune_config_reports_every_mistake(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "a.pb.gz", cpu_profile())
    config = tmp_path / "prune.yaml"
    config.write_text("- app: svc\n  rules:\n    - drop: '(unclosed'\n    - keep: x\n")
    code, _, err = run(capsys, "merge", "-o", tmp_path / "out.pb.gz", "--prune-config", config, "--app", "svc", a)
    assert code == 1
    assert err.splitlines() == [
        f"autopgo merge: {config}: 2 mistakes",
        f"autopgo merge: {config}:3: entry 1 (app svc), rule 1: drop: bad regular expression '(unclosed':"
        " missing ), unterminated subpattern at position 0",
        f"autopgo merge: {config}:4: entry 1 (app svc), rule 2: drop must be a non-empty regular expression",
    ]


def test_console_script_inspect(tmp_path: Path) -> None:
    a = write(tmp_path / "a.pb.gz", cpu_profile())
    assert AUTOPGO.exists(), AUTOPGO
    result = subprocess.run([str(AUTOPGO), "inspect", str(a)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "main.leaf" in result.stdout and result.stderr == ""
