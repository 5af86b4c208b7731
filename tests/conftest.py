"""Session fixtures with real Go parts: the test service, scraped CPU profiles, pprof."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


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
    """A real CPU profile of four seconds, some 30 KB: long enough to cut at 23000 bytes."""
    path = go_work / "cpu-long.pb.gz"
    with harness.Service(service_binary).start() as service:
        path.write_bytes(service.profile(seconds=4))
    assert path.stat().st_size > 23_000, path.stat().st_size
    return path


@pytest.fixture(scope="session")
def pprofref(go_work: Path) -> Path:
    return harness.build_pprofref(go_work)
