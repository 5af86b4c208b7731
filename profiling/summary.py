"""What a profile holds, in numbers: its headers and its hottest functions."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from .model import Profile


@dataclass(frozen=True, slots=True)
class FunctionCost:
    name: str
    flat: int  # value in samples whose leaf frame is this function
    cum: int  # value in samples with this function anywhere on the stack


@dataclass(frozen=True, slots=True)
class Summary:
    sample_types: list[str]
    value_type: str  # the sample type that flat and cum measure
    period: str
    duration_seconds: float
    samples: int
    locations: int
    functions: int
    mappings: int
    total: int
    top: list[FunctionCost]


def value_index(p: Profile) -> int:
    """The sample type pprof shows by default: default_sample_type, else the last one."""
    for i, st in enumerate(p.sample_types):
        if st.type == p.default_sample_type:
            return i
    return len(p.sample_types) - 1


def summarize(p: Profile, top: int = 10) -> Summary:
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
        total += v
        stack = [name for lid in s.location_ids for name in names_at[lid]]
        if stack:
            flat[stack[0]] += v
        for name in set(stack):
            cum[name] += v
    costs = [FunctionCost(name, flat.get(name, 0), c) for name, c in cum.items()]
    costs.sort(key=lambda fc: (-fc.flat, -fc.cum, fc.name))
    st = p.sample_types[index] if index >= 0 else None
    return Summary(
        sample_types=[str(t) for t in p.sample_types],
        value_type=str(st) if st else "",
        period=f"{p.period} {p.period_type.type}/{p.period_type.unit}".strip(),
        duration_seconds=p.duration_nanos / 1e9,
        samples=len(p.samples),
        locations=len(p.locations),
        functions=len(p.functions),
        mappings=len(p.mappings),
        total=total,
        top=costs[:top],
    )
