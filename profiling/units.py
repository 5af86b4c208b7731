"""Reading sizes and durations, the same way everywhere a user writes one.

Durations use Go's ``time.ParseDuration`` syntax, since the people who run
autopgo write Go: a sequence of decimal numbers, each with an optional
fraction and a unit (``ns``, ``us``, ``µs``, ``μs``, ``ms``, ``s``, ``m``,
``h``), such as ``90s``, ``1.5h`` or ``1h30m``; plus ``d`` for 24 hours.
Every duration here must be positive. A bare number is refused, since
``sweep_every: 60`` could mean seconds or minutes, except where a setting is
documented as seconds (``bare_seconds=True``).

Sizes are a whole number of bytes, or a number with a unit: ``B``, and
``K``/``KB``/``KiB``, ``M``/``MB``/``MiB``, ``G``/``GB``/``GiB``,
``T``/``TB``/``TiB`` in any case. Every multiple is binary (K = 1024), as
pprof prints sizes; ``64MB`` has always meant 64 MiB here.

Both raise ``UnitError``, a ValueError whose message names the setting.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

from .errors import AutopgoError

_NS_PER_UNIT = {
    "ns": 1,
    "us": 10**3,
    "µs": 10**3,  # U+00B5 micro sign
    "μs": 10**3,  # U+03BC Greek small letter mu
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
    "d": 24 * 3600 * 10**9,
}
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
# Longer units first, so that "ms" is not read as "m" followed by junk.
_UNIT = "|".join(sorted(map(re.escape, _NS_PER_UNIT), key=len, reverse=True))
_PART = re.compile(rf"({_NUMBER})({_UNIT})")
_DURATION = re.compile(rf"([-+]?)((?:{_NUMBER}(?:{_UNIT}))+)")
_BARE_NUMBER = re.compile(rf"[-+]?{_NUMBER}")
# Go's time.Duration is an int64 of nanoseconds: nothing longer can be written in Go.
_MAX_NS = 2**63 - 1
_DURATION_EXAMPLES = "90s, 5m or 1h30m"

_SIZE = re.compile(rf"({_NUMBER})\s*([kmgt]?)(i?b)?", re.IGNORECASE)
_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}
_SIZE_EXAMPLES = "1048576, 64MiB or 1G"


class UnitError(AutopgoError, ValueError):
    """A size or duration that cannot be used: ``setting`` names it, ``problem`` says why."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(setting, problem)
        self.setting = setting
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.setting}: {self.problem}"


def parse_duration(value: object, setting: str, *, bare_seconds: bool = False) -> timedelta:
    """A positive duration written in Go's syntax (or ``d``), such as ``1h30m``.

    ``value`` is text, or a number as a YAML file gives it. A number without a
    unit is seconds when ``bare_seconds`` (for settings documented as seconds),
    else refused. Durations are kept to the microsecond, as ``timedelta`` is.
    """
    text = _as_text(value)
    if text is None:
        raise UnitError(setting, f"expected a duration such as {_DURATION_EXAMPLES}, not {value!r}")
    text = text.strip()
    if _BARE_NUMBER.fullmatch(text):
        if not bare_seconds and Fraction(text) > 0:
            raise UnitError(setting, f"{text} has no unit: write {text}s, 1m or 1h30m")
        text += "s"
    match = _DURATION.fullmatch(text)
    if not match:
        raise UnitError(setting, f"expected a duration such as {_DURATION_EXAMPLES}, not {value!r}")
    sign, parts = match.groups()
    ns = sum((Fraction(number) * _NS_PER_UNIT[unit] for number, unit in _PART.findall(parts)), Fraction(0))
    if sign == "-" or ns == 0:
        raise UnitError(setting, f"must be positive, not {value!r}")
    if ns > _MAX_NS:
        raise UnitError(setting, f"{value!r} is too long: at most 2562047h, as in Go")
    microseconds = math.floor(ns / 1000)
    if microseconds == 0:
        raise UnitError(setting, f"{value!r} is too short: at least 1us")
    return timedelta(microseconds=microseconds)


def parse_size(value: object, setting: str, *, allow_zero: bool = True) -> int:
    """A number of bytes: ``50000000``, ``512k``, ``64MiB``, ``1.5G`` (multiples of 1024).

    A fraction is fine when it makes whole bytes (``1.5K``); negative sizes,
    and zero unless ``allow_zero``, are refused.
    """
    text = _as_text(value)
    match = _SIZE.fullmatch(text.strip()) if text is not None else None
    if text is None or match is None:
        if text is not None and text.strip().startswith("-"):
            raise UnitError(setting, f"must not be negative, not {value!r}")
        raise UnitError(setting, f"expected a size such as {_SIZE_EXAMPLES}, not {value!r}")
    number, prefix, suffix = match.groups()
    if suffix and suffix.lower() == "ib" and not prefix:
        raise UnitError(setting, f"expected a size such as {_SIZE_EXAMPLES}, not {value!r}")
    size = Fraction(number) * (1 << _SHIFT[prefix.lower()])
    if size.denominator != 1:
        raise UnitError(setting, f"{text.strip()} is not a whole number of bytes")
    if size == 0 and not allow_zero:
        raise UnitError(setting, f"must be more than 0 bytes, not {value!r}")
    return int(size)


def _as_text(value: object) -> str | None:
    """``value`` as text to parse: strings as they are, numbers (not booleans) as written."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return format(Decimal(repr(value)), "f")  # 1e-06 as 0.000001
    return None
