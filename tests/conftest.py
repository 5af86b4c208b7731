"""Session fixtures with real Go parts: the test service, scraped CPU profiles, pprof."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

from profiling.pprof import (  # noqa: E402
    decode,
    encode,
    merge,  # noqa: E402
)


@pytest.fixture(scope="session")
def go_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("go")


@pytest.fixture(scope="session")
def service_binary(go_work: Path) -> Path:
    return harness.build_service(go_work)


@pytest.fixture(scope="session")
def cpu_profiles(service_binary: Path, go_work: Path) -> list[Path]:
    """Five real CPU profiles from two instances of the service under load."""
    paths = []
    with harness.Service(service_binary).start() as first, harness.Service(service_binary).start() as second:
        for i, service in enumerate([first, second, first, second, first]):
            path = go_work / f"cpu{i}.pb.gz"
            path.write_bytes(service.profile(seconds=1))
            paths.append(path)
    return paths


@pytest.fixture(scope="session")
def long_cpu_profile(service_binary: Path, go_work: Path) -> Path:
    """A real CPU profile of over 23000 bytes, to cut at 23000.

    A profile's size follows the stacks sampled, which grow with the service's
    uptime and with the CPU it gets: on a busy machine scrapes of a few seconds
    can all come out smaller. Then the profile is the merge of those scrapes
    (real samples, more distinct stacks), as Go's pprof -proto would write it.
    """
    path = go_work / "cpu-long.pb.gz"
    scraped: list[bytes] = []
    with harness.Service(service_binary).start() as service:
        for _ in range(8):
            scraped.append(service.profile(seconds=4))
            if len(scraped[-1]) > 23_000:
                path.write_bytes(scraped[-1])
                return path
            merged = encode(merge([decode(data) for data in scraped]))
            if len(merged) > 23_000:
                path.write_bytes(merged)
                return path
    raise AssertionError(f"no profile over 23000 bytes from eight scrapes: {[len(d) for d in scraped]}")


@pytest.fixture(scope="session")
def pprofref(go_work: Path) -> Path:
    return harness.build_pprofref(go_work)
