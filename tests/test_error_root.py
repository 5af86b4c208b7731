"""Every error type autopgo defines is an AutopgoError, so one except clause handles whatever it raises."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest

from profiling.errors import AutopgoError

PACKAGES = ("profiling", "api", "flows", "cli")


def error_types() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in PACKAGES:
        root = importlib.import_module(package)
        for module in pkgutil.walk_packages(root.__path__, f"{package}."):
            if ".proto." in module.name:
                continue
            for name, value in vars(importlib.import_module(module.name)).items():
                if (
                    inspect.isclass(value)
                    and issubclass(value, BaseException)
                    and value.__module__ == module.name
                    and not name.startswith("_")
                ):
                    found[f"{module.name}.{name}"] = value
    return [found[name] for name in sorted(found)]


def test_the_packages_define_the_error_types_we_know() -> None:
    names = {t.__name__ for t in error_types()}
    assert {"ProfileError", "ConfigError", "BlobNotFoundError", "ClientError", "DiscoveryError", "ApiError"} <= names


@pytest.mark.parametrize("error", error_types(), ids=lambda t: f"{t.__module__}.{t.__name__}")
def test_each_error_type_is_an_autopgo_error(error: type[BaseException]) -> None:
    assert issubclass(error, AutopgoError)


def test_an_error_keeps_its_standard_base_too() -> None:
    from profiling.errors import BlobNotFoundError, ConfigError, ProfileError

    assert issubclass(ProfileError, ValueError) and issubclass(ConfigError, ValueError)
    assert issubclass(BlobNotFoundError, LookupError)


def test_the_cli_reports_any_autopgo_error_as_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "clean", "--blob-store", "gs://bucket/x", "--older-than", "1h"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("autopgo clean: ") and "gs://" in done.stderr
