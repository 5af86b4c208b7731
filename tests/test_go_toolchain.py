"""The engine against the Go toolchain, on real CPU profiles from the Go test service."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import harness
import pytest
from wire_cases import UNUSUAL_ENCODINGS

from profiling.pprof import (
    certainly_valid,
    compact,
    decode,
    decompress,
    encode,
    merge,
    merge_files,
    prune,
    read_profile,
    to_profile,
    trim_for_pgo,
    validate,
)

pytestmark = pytest.mark.slow


def write(path: Path, profile) -> Path:
    path.write_bytes(encode(profile))
    return path


def test_merge_equals_pprof_proto(cpu_profiles: list[Path], tmp_path: Path) -> None:
    ours = merge([read_profile(p) for p in cpu_profiles])
    harness.pprof_merge(cpu_profiles, tmp_path / "pprof.pb.gz")
    theirs = read_profile(tmp_path / "pprof.pb.gz")

    assert ours == theirs
    assert len(ours.samples) > 50 and len(ours.locations) > 100
    assert any(s.labels for s in ours.samples), "pprof.Do labels should survive the merge"


def test_merge_in_another_order_equals_pprof(cpu_profiles: list[Path], tmp_path: Path) -> None:
    inputs = [cpu_profiles[3], cpu_profiles[0], cpu_profiles[4], cpu_profiles[0]]
    harness.pprof_merge(inputs, tmp_path / "pprof.pb.gz")
    assert merge([read_profile(p) for p in inputs]) == read_profile(tmp_path / "pprof.pb.gz")


def test_parallel_merge_equals_serial(cpu_profiles: list[Path]) -> None:
    inputs = cpu_profiles * 4
    serial = merge([read_profile(p) for p in inputs])
    assert to_profile(merge_files(inputs, jobs=3)) == to_profile(merge_files(inputs, jobs=1)) == serial


def test_merge_matches_upstream_merge(cpu_profiles: list[Path], pprofref: Path, tmp_path: Path) -> None:
    subprocess.run([pprofref, "merge", tmp_path / "ref.pb.gz", *cpu_profiles], check=True)
    assert merge([read_profile(p) for p in cpu_profiles]) == read_profile(tmp_path / "ref.pb.gz")


def test_unusual_encodings_are_decided_as_upstream_does(pprofref: Path, tmp_path: Path) -> None:
    decisions = {}
    for case, (data, _) in UNUSUAL_ENCODINGS.items():
        path = tmp_path / "case.pb"
        path.write_bytes(data)
        decisions[case] = subprocess.run([pprofref, "parse", path], capture_output=True).returncode == 0
    assert decisions == {case: accepted for case, (_, accepted) in UNUSUAL_ENCODINGS.items()}


def test_validate_accepts_real_profiles_on_the_quick_path(cpu_profiles: list[Path], tmp_path: Path) -> None:
    harness.pprof_merge(cpu_profiles, tmp_path / "pprof.pb.gz")
    for path in [*cpu_profiles, tmp_path / "pprof.pb.gz"]:
        data = path.read_bytes()
        validate(data, require_pgo=True)
        assert certainly_valid(decompress(data), require_pgo=True), path.name


def test_preprofile_identical_for_ours_and_pprof(cpu_profiles: list[Path], tmp_path: Path) -> None:
    ours = write(tmp_path / "ours.pb.gz", merge([read_profile(p) for p in cpu_profiles]))
    harness.pprof_merge(cpu_profiles, tmp_path / "pprof.pb.gz")
    expected = harness.preprofile(tmp_path / "pprof.pb.gz")
    assert expected.startswith(b"GO PREPROFILE V1\n") and expected.count(b"\n") > 100
    assert harness.preprofile(ours) == expected


def test_trim_keeps_the_compiler_view_and_shrinks(cpu_profiles: list[Path], tmp_path: Path) -> None:
    merged = merge([read_profile(p) for p in cpu_profiles])
    full = write(tmp_path / "full.pb.gz", merged)
    trimmed_profile = trim_for_pgo(merged)
    trimmed = write(tmp_path / "trimmed.pb.gz", trimmed_profile)

    assert harness.preprofile(trimmed) == harness.preprofile(full)
    assert trimmed.stat().st_size < full.stat().st_size * 0.6
    assert not trimmed_profile.mappings and all(s.labels is None for s in trimmed_profile.samples)
    assert all(loc.address == 0 for loc in trimmed_profile.locations)
    # Trimming is idempotent: the trimmed profile is already minimal.
    assert trim_for_pgo(decode(trimmed.read_bytes())) == decode(trimmed.read_bytes())


def test_go_build_with_merged_profile(cpu_profiles: list[Path], tmp_path: Path) -> None:
    merged = write(tmp_path / "default.pgo", merge([read_profile(p) for p in cpu_profiles]))
    binary = harness.build_service(tmp_path, pgo=merged)
    info = harness.go("version", "-m", str(binary))
    assert re.search(r"build\s+-pgo=\S*default\.pgo", info), info


def test_go_build_with_trimmed_profile(cpu_profiles: list[Path], tmp_path: Path) -> None:
    trimmed = trim_for_pgo(merge([read_profile(p) for p in cpu_profiles]))
    binary = harness.build_service(tmp_path, pgo=write(tmp_path / "trimmed.pgo", trimmed))
    assert "-pgo=" in harness.go("version", "-m", str(binary))


PRUNE_CASES = [
    (r"^runtime\.", None),
    (r"^runtime\.", r"^runtime\.(main|goexit)$"),
    (r"main\.fib", None),
    (r"net/http\.", r"serve"),
    (r"^main\.", None),  # main.(*T).M style names are matched as "main."
    (r"crypto/", None),
    (r"regexp\.\(\*Regexp\)", None),  # never matches: the name is cut at "("
]


@pytest.mark.parametrize(("drop", "keep"), PRUNE_CASES)
def test_prune_matches_upstream(cpu_profiles: list[Path], pprofref: Path, tmp_path: Path, drop: str, keep: str | None) -> None:
    merged_path = write(tmp_path / "merged.pb.gz", merge([read_profile(p) for p in cpu_profiles]))
    subprocess.run([pprofref, "prune", tmp_path / "ref.pb.gz", drop, keep or "", merged_path], check=True)

    ours = prune(read_profile(merged_path), re.compile(drop), re.compile(keep) if keep else None)
    assert ours == read_profile(tmp_path / "ref.pb.gz")
    assert compact(ours) == compact(read_profile(tmp_path / "ref.pb.gz"))


def test_real_heap_profile_is_refused_by_trim(service_binary: Path) -> None:
    import httpx

    from profiling.errors import ProfileError

    with harness.Service(service_binary) as service:
        heap = decode(httpx.get(f"{service.url}/debug/pprof/heap", timeout=30).content)
    with pytest.raises(ProfileError, match="samples/count or cpu/nanoseconds"):
        trim_for_pgo(heap)
