"""merge_files with forked decoding workers: the same result and the same errors as serially."""

from __future__ import annotations

import gzip
import os
import random
from pathlib import Path

import pytest
from sample_profiles import cpu_profile, heap_profile
from test_merge_upstream import random_profile

import profiling.pprof.parallel as parallel
from profiling.errors import ProfileError, ProfileTooLargeError
from profiling.pprof import Profile, Sample, encode, encode_raw, merge_files


def write_all(tmp_path: Path, profiles: list[Profile]) -> list[Path]:
    paths = []
    for i, p in enumerate(profiles):
        path = tmp_path / f"in{i:02d}.pb.gz"
        path.write_bytes(encode(p))
        paths.append(path)
    return paths


def serial_error(paths: list[Path]) -> str:
    with pytest.raises(ProfileError) as info:
        merge_files(paths, jobs=1)
    return str(info.value)


@pytest.mark.parametrize("jobs", [2, 3, 5])
def test_random_profiles_merge_as_serially(tmp_path: Path, jobs: int) -> None:
    """Random profiles: mappings, inlined frames, labels, zero samples and values that cancel out."""
    rng = random.Random(jobs)
    binaries = [("/bin/app", "id1"), ("/lib/x.so", ""), ("", "")]
    paths = write_all(tmp_path, [random_profile(rng, binaries) for _ in range(24)])
    assert encode_raw(merge_files(paths, jobs=jobs)) == encode_raw(merge_files(paths, jobs=1))


def test_values_that_cancel_out(tmp_path: Path) -> None:
    minus = cpu_profile()
    minus.samples = [Sample(s.location_ids, tuple(-v for v in s.values)) for s in minus.samples]
    paths = write_all(tmp_path, [cpu_profile(start_line=20)] * 3 + [cpu_profile(), minus] * 3 + [cpu_profile()])
    assert encode_raw(merge_files(paths, jobs=2)) == encode_raw(merge_files(paths, jobs=1))


@pytest.mark.parametrize("bad", [0, 7, 13])
def test_a_bad_file_fails_naming_it_as_serially(tmp_path: Path, bad: int) -> None:
    paths = write_all(tmp_path, [cpu_profile(scale=i + 1) for i in range(16)])
    paths[bad].write_bytes(b"not a profile at all")
    message = serial_error(paths)
    assert str(paths[bad]) in message
    for jobs in (2, 3):
        with pytest.raises(ProfileError) as info:
            merge_files(paths, jobs=jobs)
        assert str(info.value) == message


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_size_and_truncation_errors_keep_their_type(tmp_path: Path, long_cpu_profile: Path, jobs: int) -> None:
    """A decoding worker's ProfileTooLargeError reaches the caller as such, and a cut file is truncated."""
    paths = write_all(tmp_path, [cpu_profile(scale=i + 1) for i in range(16)])
    data = long_cpu_profile.read_bytes()
    limit = len(gzip.decompress(data)) - 1
    paths[7].write_bytes(data)  # decoded by a worker unless jobs == 1
    with pytest.raises(ProfileTooLargeError) as too_large:
        merge_files(paths, jobs=jobs, max_decompressed=limit)
    assert str(too_large.value) == f"{paths[7]}: decompressed profile is larger than the limit of {limit} bytes"
    paths[7].write_bytes(data[:20000])
    with pytest.raises(ProfileError) as truncated:
        merge_files(paths, jobs=jobs)
    assert type(truncated.value) is ProfileError
    assert str(truncated.value) == f"{paths[7]}: decompressing profile: unexpected end of gzip data (truncated)"


def test_the_first_failure_in_input_order_is_reported(tmp_path: Path) -> None:
    """An incompatible profile, then garbage decoded by another process: the first fails first."""
    paths = write_all(tmp_path, [cpu_profile()] * 10 + [heap_profile(), cpu_profile()])
    paths[-1].write_bytes(b"garbage")
    message = serial_error(paths)
    assert message.startswith("incompatible") and str(paths[-2]) in message
    with pytest.raises(ProfileError) as info:
        merge_files(paths, jobs=2)
    assert str(info.value) == message


def test_a_worker_that_dies_fails_the_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = write_all(tmp_path, [cpu_profile()] * 12)
    monkeypatch.setattr(parallel, "_decode_all", lambda *args: os._exit(3))
    with pytest.raises(RuntimeError, match=r"^merge worker \d+ exited without a result$"):
        merge_files(paths, jobs=2)


def test_a_worker_that_crashes_reports_the_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = write_all(tmp_path, [cpu_profile()] * 12)
    parent = os.getpid()
    real_read_tables = parallel.read_tables

    def read_tables(path: Path, **kwargs: int):
        if os.getpid() != parent:
            raise MemoryError("out of memory")
        return real_read_tables(path, **kwargs)

    monkeypatch.setattr(parallel, "read_tables", read_tables)
    with pytest.raises(RuntimeError, match=r"^merge worker \d+ failed: MemoryError: out of memory$"):
        merge_files(paths, jobs=2)
