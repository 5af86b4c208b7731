"""profiling.units: the one size parser and the one duration parser."""

from __future__ import annotations

from datetime import timedelta

import pytest

from profiling.units import UnitError, parse_duration, parse_size

KIB, MIB, GIB, TIB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1048576", MIB), ("0", 0), ("7B", 7), ("7b", 7),
        ("4K", 4 * KIB), ("4k", 4 * KIB), ("4KB", 4 * KIB), ("4kb", 4 * KIB), ("4KiB", 4 * KIB), ("4kib", 4 * KIB),
        ("64M", 64 * MIB), ("64MB", 64 * MIB), ("64MiB", 64 * MIB), ("64mib", 64 * MIB),
        ("2G", 2 * GIB), ("2GB", 2 * GIB), ("2GiB", 2 * GIB),
        ("1T", TIB), ("1TB", TIB), ("1TiB", TIB),
        ("1.5K", 1536), ("0.5MiB", 512 * KIB), (".5G", GIB // 2), ("64 MiB", 64 * MIB), (" 512k ", 512 * KIB),
        (50000000, 50000000), (4096.0, 4096),
    ],
)  # fmt: skip
def test_sizes(text: object, expected: int) -> None:
    assert parse_size(text, "x") == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("-1", "must not be negative, not '-1'"),
        ("-5MiB", "must not be negative, not '-5MiB'"),
        (-1, "must not be negative, not -1"),
        ("1.5", "1.5 is not a whole number of bytes"),
        ("0.3K", "0.3K is not a whole number of bytes"),
        (2.5, "2.5 is not a whole number of bytes"),
        ("lots", "expected a size such as 1048576, 64MiB or 1G, not 'lots'"),
        ("3x", "expected a size such as 1048576, 64MiB or 1G, not '3x'"),
        ("5iB", "expected a size such as 1048576, 64MiB or 1G, not '5iB'"),
        ("1P", "expected a size such as 1048576, 64MiB or 1G, not '1P'"),
        ("", "expected a size such as 1048576, 64MiB or 1G, not ''"),
        (True, "expected a size such as 1048576, 64MiB or 1G, not True"),
        (None, "expected a size such as 1048576, 64MiB or 1G, not None"),
        (float("inf"), "expected a size such as 1048576, 64MiB or 1G, not inf"),
    ],
)
def test_bad_sizes_name_the_setting(text: object, problem: str) -> None:
    with pytest.raises(UnitError) as info:
        parse_size(text, "--max-body")
    assert isinstance(info.value, ValueError)
    assert (info.value.setting, info.value.problem) == ("--max-body", problem)
    assert str(info.value) == f"--max-body: {problem}"


def test_zero_size_only_where_allowed() -> None:
    assert parse_size("0", "clean.larger_than") == 0
    with pytest.raises(UnitError, match=r"^--max-body: must be more than 0 bytes, not '0B'$"):
        parse_size("0B", "--max-body", allow_zero=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("300ms", timedelta(milliseconds=300)), ("90s", timedelta(seconds=90)), ("1.5h", timedelta(minutes=90)),
        ("1h30m", timedelta(minutes=90)), ("1d", timedelta(days=1)), ("7d12h", timedelta(days=7.5)),
        ("1h1m1s1ms1us", timedelta(hours=1, minutes=1, seconds=1, milliseconds=1, microseconds=1)),
        ("2000ns", timedelta(microseconds=2)), ("5.s", timedelta(seconds=5)), ("2562047h", timedelta(hours=2562047)),
    ],
)  # fmt: skip
def test_go_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text, "x") == expected


@pytest.mark.parametrize(("value", "expected"), [("30", 30.0), ("0.5", 0.5), (10, 10.0), (0.25, 0.25), ("1m", 60.0)])
def test_bare_seconds_where_documented(value: object, expected: float) -> None:
    assert parse_duration(value, "--timeout", bare_seconds=True).total_seconds() == expected


@pytest.mark.parametrize("value", ["0", 0, "-3", "soon", "inf", "nan", "3 s"])
def test_bare_seconds_must_still_be_a_positive_number(value: object) -> None:
    with pytest.raises(UnitError, match="^--timeout: "):
        parse_duration(value, "--timeout", bare_seconds=True)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (60, "60 has no unit: write 60s, 1m or 1h30m"),
        ("60", "60 has no unit: write 60s, 1m or 1h30m"),
        ("1.5", "1.5 has no unit: write 1.5s, 1m or 1h30m"),
        ("0", "must be positive, not '0'"),
        ("-1m", "must be positive, not '-1m'"),
        ("1ns", "'1ns' is too short: at least 1us"),
        ("2562048h", "'2562048h' is too long: at most 2562047h, as in Go"),
        ("1 h", "expected a duration such as 90s, 5m or 1h30m, not '1 h'"),
        ("1H", "expected a duration such as 90s, 5m or 1h30m, not '1H'"),
        ("1w", "expected a duration such as 90s, 5m or 1h30m, not '1w'"),
        ("h", "expected a duration such as 90s, 5m or 1h30m, not 'h'"),
    ],
)
def test_bad_durations_name_the_setting(value: object, problem: str) -> None:
    with pytest.raises(UnitError) as info:
        parse_duration(value, "sweep_every")
    assert str(info.value) == f"sweep_every: {problem}"
