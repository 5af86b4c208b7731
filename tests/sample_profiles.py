"""Small hand-built profiles shared by the unit tests of the CLI and the API."""

from __future__ import annotations

from profiling.pprof import Function, Line, Location, Mapping, Profile, Sample, ValueType


def cpu_profile(*, start_line: int = 10, scale: int = 1) -> Profile:
    """Two stacks: main.leaf (inlined in main.work) <- main.main, and runtime.mallocgc <- main.main."""
    return Profile(
        sample_types=[ValueType("samples", "count"), ValueType("cpu", "nanoseconds")],
        samples=[
            Sample((1, 2), (3 * scale, 30_000_000 * scale)),  # leaf <- work <- main
            Sample((3, 2), (1 * scale, 10_000_000 * scale)),  # mallocgc <- main
        ],
        mappings=[Mapping(1, 0x400000, 0x800000, 0, "/bin/svc", "b1", True, True, True, True)],
        locations=[
            Location(1, 1, 0x401000, (Line(4, start_line + 31), Line(2, start_line + 21))),  # leaf inlined in work
            Location(2, 1, 0x402000, (Line(1, start_line + 2),)),
            Location(3, 1, 0x403000, (Line(3, start_line + 5),)),
        ],
        functions=[
            Function(1, "main.main", "main.main", "main.go", start_line),
            Function(2, "main.work", "main.work", "main.go", start_line + 20 if start_line else 0),
            Function(3, "runtime.mallocgc", "runtime.mallocgc", "malloc.go", start_line + 1 if start_line else 0),
            Function(4, "main.leaf", "main.leaf", "main.go", start_line + 30 if start_line else 0),
        ],
        time_nanos=1_700_000_000_000_000_000,
        duration_nanos=10_000_000_000,
        period_type=ValueType("cpu", "nanoseconds"),
        period=10_000_000,
    )


def heap_profile() -> Profile:
    p = cpu_profile()
    p.sample_types = [ValueType("alloc_space", "bytes")]
    p.samples = [Sample(s.location_ids, (s.values[0] * 1024,)) for s in p.samples]
    p.period_type = ValueType("space", "bytes")
    p.period = 524288
    return p
