"""A window, builds and workloads against the Go toolchain: real CPU profiles of the Go test
service, merged as google/pprof's profile package does (tests/pprofref), and built with.

- a window serves exactly the reference merge of the uploads collected within it;
- ``builds: 1`` serves only the newest of two builds of the service (one function moved);
- workload weights are google/pprof's ``Scale`` of each workload's merge, then ``Merge``;
- ``go build -pgo`` takes every result.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import harness
import pytest
from test_batches import without_batch_comments

from profiling.pipeline import PartsPolicy, merge_pending, new_staging_key, read_merged, staging_prefix
from profiling.pprof import Profile, decode, encode, read_profile, to_profile
from profiling.storage import open_store

pytestmark = pytest.mark.slow

APP = "svc"
HOUR = 3600 * 10**9


def served(store) -> Profile:
    current = read_merged(store, APP)
    assert current is not None
    return without_batch_comments(to_profile(current.tables))


def served_file(store, path: Path) -> Path:
    path.write_bytes(store.get(f"{APP}/default.pgo"))
    return path


def stage(store, data: bytes, uploaded_ns: int, workload: str = "") -> None:
    store.put(new_staging_key(APP, uploaded_ns, 0, workload), data, if_none_match=True)


def collected_at(path: Path, time_nanos: int, out: Path) -> Path:
    """A copy of a real profile claiming to be collected at ``time_nanos``."""
    p = read_profile(path)
    p.time_nanos = time_nanos
    out.write_bytes(encode(p))
    return out


def run_ref(binary: Path, out: Path, command: str, *args: object) -> Profile:
    """tests/pprofref's ``command`` writing ``out``, read back."""
    subprocess.run([binary, command, out, *map(str, args)], check=True, capture_output=True)
    return read_profile(out)


def builds_with(pgo: Path, tmp_path: Path) -> None:
    """``go build -pgo`` of the test service succeeds with the profile."""
    assert harness.build_service(tmp_path, pgo=pgo).exists()


def test_windowed_profile_is_the_reference_merge_of_the_uploads_within_it(
    cpu_profiles: list[Path], pprofref: Path, tmp_path: Path
) -> None:
    store = open_store(str(tmp_path / "blobs"))
    now = time.time_ns()
    # collected hours ago (or "future": claiming a time after its upload), in upload order
    plan = [100, 80, 5, 2, 1, 0, "future"]
    inside = []
    for i, when in enumerate(plan):
        source = cpu_profiles[i % len(cpu_profiles)]
        uploaded = now - 10**9 * (len(plan) - i)  # upload times in order, seconds apart
        time_nanos = uploaded + HOUR if when == "future" else now - when * HOUR
        path = collected_at(source, time_nanos, tmp_path / f"up{i}.pb.gz")
        stage(store, path.read_bytes(), uploaded)
        if when not in (100, 80):
            inside.append(path)

    report = merge_pending(store, APP, policy=PartsPolicy.of(window=timedelta(hours=72)), clock=lambda: now)

    assert len(report.merged) == 5 and len(report.expired) == 2
    expected = run_ref(pprofref, tmp_path / "ref.pb.gz", "merge", *inside)
    assert served(store) == expected
    assert list(store.list(staging_prefix(APP))) == []
    builds_with(served_file(store, tmp_path / "window.pgo"), tmp_path)


def build_moved_service(tmp_path: Path) -> Path:
    """The test service with one function moved down a few lines: another build id, other lines."""
    source = tmp_path / "moved-src"
    shutil.copytree(harness.SERVICE_SRC, source)
    main = source / "main.go"
    text = main.read_text()
    marker = "// handleJSON encodes"
    assert marker in text
    main.write_text(text.replace(marker, "// (moved)\n//\n//\n" + marker, 1))
    binary = tmp_path / "goservice-moved"
    harness.go("build", "-o", str(binary), ".", cwd=source)
    return binary


def test_builds_1_serves_only_the_newest_build(
    service_binary: Path, pprofref: Path, tmp_path: Path
) -> None:
    moved = build_moved_service(tmp_path)
    with harness.Service(service_binary).start() as old:
        old_profiles = [old.profile(seconds=1) for _ in range(2)]
    with harness.Service(moved).start() as new:
        new_profiles = [new.profile(seconds=1) for _ in range(2)]
    old_build, new_build = (decode(p[0]).mappings[0].build_id for p in (old_profiles, new_profiles))
    assert old_build and new_build and old_build != new_build

    store = open_store(str(tmp_path / "blobs"))
    policy = PartsPolicy.of(builds=1)
    for data in old_profiles:
        stage(store, data, time.time_ns())
    merge_pending(store, APP, policy=policy)
    assert {m.build_id for m in served(store).mappings} >= {old_build}

    for data in new_profiles:
        stage(store, data, time.time_ns())
    report = merge_pending(store, APP, policy=policy)

    paths = []
    for i, data in enumerate(new_profiles):
        paths.append(tmp_path / f"new{i}.pb.gz")
        paths[-1].write_bytes(data)
    profile = served(store)
    assert profile == run_ref(pprofref, tmp_path / "ref.pb.gz", "merge", *paths)
    assert old_build not in {m.build_id for m in profile.mappings}
    assert report.derived is not None and [b for b, _ in report.derived.builds] == [new_build]
    assert read_merged(store, APP).labels.build == new_build
    builds_with(served_file(store, tmp_path / "builds.pgo"), tmp_path)


def cpu(p: Profile) -> int:
    return sum(s.values[0] for s in p.samples)  # samples/count, the value Go's PGO weighs


def test_workload_weights_are_scale_then_merge(cpu_profiles: list[Path], pprofref: Path, tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "blobs"))
    workloads = ["api", "batch", "api", "", "batch"]  # the last of no workload: kept as measured
    for i, (path, workload) in enumerate(zip(cpu_profiles, workloads, strict=True)):
        stage(store, path.read_bytes(), time.time_ns() + i, workload)
    weights = {"api": 3.0, "batch": 1.0}

    report = merge_pending(store, APP, policy=PartsPolicy.of(workloads=weights))

    groups = {
        name: run_ref(pprofref, tmp_path / f"{name or 'none'}.pb.gz", "merge",
                      *(p for p, w in zip(cpu_profiles, workloads) if w == name))
        for name in ("api", "batch", "")
    }
    total_cpu = cpu(groups["api"]) + cpu(groups["batch"])
    ratios = {w: weights[w] / sum(weights.values()) * total_cpu / cpu(groups[w]) for w in weights}
    assert report.derived is not None and report.derived.ratios == ratios
    args = []
    for name in ("api", "batch", ""):
        args += [repr(ratios.get(name, 1.0)), tmp_path / f"{name or 'none'}.pb.gz"]
    expected = run_ref(pprofref, tmp_path / "ref.pb.gz", "scalemerge", *args)
    profile = served(store)
    assert profile == expected

    # The weighted workloads' shares of their CPU are the weights' shares (before Scale rounds
    # each sample's values), and their total CPU stays what it was.
    scaled = {w: cpu(groups[w]) * ratios[w] for w in weights}
    assert scaled["api"] / (scaled["api"] + scaled["batch"]) == pytest.approx(0.75)
    assert sum(scaled.values()) == pytest.approx(total_cpu)
    builds_with(served_file(store, tmp_path / "weights.pgo"), tmp_path)
