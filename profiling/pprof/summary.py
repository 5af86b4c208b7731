"""What a profile holds, for a person to read: its headers and its hottest functions.

The numbers are kept as they are in the profile (``flat``, ``cum``, ``total``) for
programs, and formatted as ``go tool pprof -top`` prints them (``*_label``,
``*_percent``: every value of the table in one unit, percentages of the total)
for people; ``profiling.pprof.measurement`` does the formatting.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from .measurement import duration_label, percentage, report_unit, scaled_label, shown
from .model import Profile


@dataclass(frozen=True, slots=True)
class FunctionCost:
    """One function's row of ``go tool pprof -top``: its flat and cum values, as numbers and as pprof prints them."""

    name: str
    flat: int  # value in samples whose leaf frame is this function
    cum: int  # value in samples with this function anywhere on the stack
    flat_label: str = ""  # flat in the table's unit, as pprof prints it: "1.20s"
    cum_label: str = ""
    flat_percent: str = ""  # flat as a share of the total: "5.19%"
    sum_percent: str = ""  # flat of this row and every row above it, as a share of the total
    cum_percent: str = ""


@dataclass(frozen=True, slots=True)
class Summary:
    """What ``summarize`` says of a profile: its headers, how many rows of each table, and its hottest functions."""

    sample_types: list[str]
    value_type: str  # the sample type that flat and cum measure
    period: str  # "10ms (cpu/nanoseconds)"
    duration_seconds: float
    samples: int
    locations: int
    functions: int
    mappings: int
    total: int
    top: list[FunctionCost]
    duration: str = ""  # as pprof prints it: "30s", "1.01s"
    total_label: str = ""  # total in the unit of the table's labels, as pprof prints it


def value_index(p: Profile) -> int:
    """The sample type pprof shows by default: default_sample_type, else the last one."""
    for i, st in enumerate(p.sample_types):
        if st.type == p.default_sample_type:
            return i
    return len(p.sample_types) - 1


def summarize(p: Profile, top: int = 10) -> Summary:
    """The profile's headers, and its ``top`` functions by flat value as ``go tool pprof -top`` lists them."""
    index = value_index(p)
    functions = p.functions_by_id()
    locations = p.locations_by_id()
    names_at: dict[int, list[str]] = {
        lid: [functions[ln.function_id].name for ln in loc.lines] for lid, loc in locations.items()
    }
    flat: dict[str, int] = defaultdict(int)
    cum: dict[str, int] = defaultdict(int)
    total = 0
    for s in p.samples:
        if index < 0:
            break
        v = s.values[index]
        total += abs(v)
        if v == 0:  # pprof leaves out functions seen only in samples of no value
            continue
        stack = [name for lid in s.location_ids for name in names_at[lid]]
        if stack:
            flat[stack[0]] += v
        for name in set(stack):
            cum[name] += v
    costs = sorted(((name, flat.get(name, 0), c) for name, c in cum.items()), key=lambda t: (-abs(t[1]), t[0]))
    st = p.sample_types[index] if index >= 0 else None
    sample_unit = st.unit.lower() if st else ""
    costs = shown(costs, sum(f for _, f, _ in costs))
    unit = report_unit([(f, c) for _, f, c in costs], total, sample_unit)
    rows: list[FunctionCost] = []
    running = 0
    for name, f, c in costs[:top]:
        running += f
        rows.append(
            FunctionCost(
                name,
                f,
                c,
                flat_label=scaled_label(f, sample_unit, unit),
                cum_label=scaled_label(c, sample_unit, unit),
                flat_percent=percentage(f, total),
                sum_percent=percentage(running, total),
                cum_percent=percentage(c, total),
            )
        )
    period_type = f"{p.period_type.type}/{p.period_type.unit}".strip("/")
    period = scaled_label(p.period, p.period_type.unit)
    return Summary(
        sample_types=[str(t) for t in p.sample_types],
        value_type=str(st) if st else "",
        period=f"{period} ({period_type})" if period_type else period,
        duration_seconds=p.duration_nanos / 1e9,
        samples=len(p.samples),
        locations=len(p.locations),
        functions=len(p.functions),
        mappings=len(p.mappings),
        total=total,
        top=rows,
        duration=duration_label(p.duration_nanos),
        total_label=scaled_label(total, sample_unit, unit),
    )
