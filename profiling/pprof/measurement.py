"""A profile's values as a person reads them, exactly as ``go tool pprof -top`` prints them.

A port of google/pprof's ``internal/measurement`` (``Scale``, ``ScaledLabel``,
``Percentage`` and its unit tables) and of its report's choice of one unit for a
whole table (``selectOutputUnit``): durations scale to ``ns``, ``us``, ``ms``,
``s`` or ``hrs`` (pprof has no minutes: 90 s is ``90s``), sizes to ``B``,
``kB``, ``MB``, ... in multiples of 1024, and a value in a unit pprof does not
know (``count``) is printed as the number it is. Every place that shows a
profile's values to a person formats them here, so ``autopgo inspect``, the
merge artifact and log lines agree with each other and with pprof.

These are pure functions of numbers and unit names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Unit:
    """A unit pprof knows: the name it prints, the names it reads, and its size in its kind's base unit."""

    name: str  # as printed: "ms", "kB"
    aliases: tuple[str, ...]  # lower case, a trailing "s" removed from names longer than two letters
    factor: float  # size of the unit in the base unit of its kind (nanoseconds, bytes)


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind of unit that pprof scales values between (sizes, durations): its units and its fallback."""

    units: tuple[Unit, ...]
    default: Unit  # the unit of a value too small for any of ``units``, or asked in an unknown unit


_BYTES = (
    Unit("B", ("b", "byte"), 1.0),
    Unit("kB", ("kb", "kbyte", "kilobyte"), float(1 << 10)),
    Unit("MB", ("mb", "mbyte", "megabyte"), float(1 << 20)),
    Unit("GB", ("gb", "gbyte", "gigabyte"), float(1 << 30)),
    Unit("TB", ("tb", "tbyte", "terabyte"), float(1 << 40)),
    Unit("PB", ("pb", "pbyte", "petabyte"), float(1 << 50)),
)
_TIME = (
    Unit("ns", ("ns", "nanosecond"), 1.0),
    Unit("us", ("μs", "us", "microsecond"), 1e3),
    Unit("ms", ("ms", "millisecond"), 1e6),
    Unit("s", ("s", "sec", "second"), 1e9),
    Unit("hrs", ("hour", "hr"), 3600e9),
)
# pprof's UnitTypes, but for its GCU kind, which no Go profile uses.
_KINDS = (Kind(_BYTES, _BYTES[0]), Kind(_TIME, Unit("s", (), 1e9)))
_PLAIN = ("count", "sample", "unit", "minimum", "auto")  # units that are not printed
_AUTO = ("minimum", "auto")
NODE_FRACTION = 0.005  # pprof -top leaves out functions whose cum is below this share of the total


def _sniff(kind: Kind, name: str) -> Unit | None:
    name = name.lower()
    if len(name) > 2:
        name = name.removesuffix("s")
    return next((u for u in kind.units if name in u.aliases), None)


def _auto_scale(kind: Kind, value: float) -> tuple[float, str] | None:
    """``value`` (in the kind's base unit) in the largest unit that keeps it at least 1."""
    factor, name = 0.0, ""
    for u in kind.units:
        if u.factor >= factor and value / u.factor >= 1.0:
            factor, name = u.factor, u.name
    return (value / factor, name) if factor else None


def scale(value: int, from_unit: str, to_unit: str = "auto") -> tuple[float, str]:
    """``value`` in ``from_unit`` converted to ``to_unit`` (``auto``: the unit that fits), with its unit name.

    The unit name is empty for units pprof does not print (``count``).
    """
    if value < 0 and -value > 0:
        number, unit = scale(-value, from_unit, to_unit)
        return -number, unit
    for kind in _KINDS:
        source = _sniff(kind, from_unit)
        if source is None:
            continue
        base = float(value) * source.factor
        if to_unit in _AUTO:
            return _auto_scale(kind, base) or (base / kind.default.factor, kind.default.name)
        target = _sniff(kind, to_unit) or kind.default
        return base / target.factor, target.name
    return float(value), "" if to_unit in _PLAIN else to_unit


def scaled_label(value: int, from_unit: str, to_unit: str = "auto") -> str:
    """``value`` as pprof prints it: ``5.60s``, ``120ms``, ``512.50kB``, ``0`` (two decimals, ``.00`` dropped)."""
    number, unit = scale(value, from_unit, to_unit)
    text = f"{number:.2f}".removesuffix(".00")
    if text in ("0", "-0"):
        return "0"
    return text + unit


def percentage(value: int, total: int) -> str:
    """``value`` as a share of ``total``, as pprof prints it: ``5.19%``, ``100%``, ``0.57%``, ``0.0031%``.

    Two decimals from 1% up, two significant digits below; ``100%`` within 0.05 of it.
    Unlike pprof's, the text is not padded to five characters.
    """
    ratio = abs(float(value) / float(total)) * 100 if total else 0.0
    if 99.95 <= ratio <= 100.05:
        return "100%"
    if ratio >= 1.0:
        return f"{ratio:.2f}%"
    return f"{ratio:.2g}%"


def duration_label(nanoseconds: int) -> str:
    """A duration in nanoseconds, as pprof prints a profile's duration: ``30s``, ``1.01s``, ``2hrs``."""
    return scaled_label(nanoseconds, "nanoseconds")


def size_label(size: int) -> str:
    """A number of bytes as pprof prints sizes: ``317B``, ``24.41kB``, ``1.50MB`` (multiples of 1024)."""
    return scaled_label(size, "bytes")


def report_unit(costs: Iterable[tuple[int, int]], total: int, sample_unit: str) -> str:
    """The one unit pprof's ``-top`` prints every value of a table in (its ``selectOutputUnit``).

    ``costs`` are (flat, cum) of every function in the table; ``total`` the profile's total.
    pprof takes the unit that fits the smallest value shown, or, when that is under a
    hundredth of the total and would fit differently, the unit that fits 100 times it, so
    that the smallest value reads as 0.01 or more and the largest stays short.
    """
    smallest = 0
    for flat, cum in costs:
        value = abs(flat) or abs(cum)
        if value and (smallest == 0 or value < smallest):
            smallest = value
    largest = total
    if smallest == 0:
        smallest = largest
    _, low = scale(smallest, sample_unit, "minimum")
    _, high = scale(largest, sample_unit, "minimum")
    unit = low
    if low != high and smallest * 100 < largest:
        _, unit = scale(100 * smallest, sample_unit, "minimum")
    return unit or sample_unit


def shown(costs: Iterable[tuple[str, int, int]], flat_total: int) -> list[tuple[str, int, int]]:
    """The (name, flat, cum) rows that ``-top`` lists: cum at least ``NODE_FRACTION`` of the flat total."""
    cutoff = abs(math.trunc(flat_total * NODE_FRACTION))
    return [row for row in costs if abs(row[2]) >= cutoff]
