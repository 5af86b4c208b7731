"""Merge against google/pprof's own profile.Merge on synthetic profiles made to hit its corners.

Each case is written to files, merged by tests/pprofref (built from the toolchain's vendored
google/pprof) and by autopgo, and the two results must be equal, ids and order included.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from profiling.pprof import (
    Function,
    Labels,
    Line,
    Location,
    Mapping,
    Profile,
    Sample,
    ValueType,
    encode,
    merge,
    read_profile,
)

pytestmark = pytest.mark.slow

CPU = [ValueType("samples", "count"), ValueType("cpu", "nanoseconds")]


def upstream_merge(pprofref: Path, tmp_path: Path, profiles: list[Profile]) -> Profile:
    inputs = []
    for i, p in enumerate(profiles):
        path = tmp_path / f"in{i}.pb.gz"
        path.write_bytes(encode(p))
        inputs.append(path)
    out = tmp_path / "ref.pb.gz"
    subprocess.run([pprofref, "merge", out, *inputs], check=True, capture_output=True)
    return read_profile(out)


def ours(tmp_path: Path, profiles: list[Profile]) -> Profile:
    # Through the same bytes upstream reads.
    return merge([read_profile(tmp_path / f"in{i}.pb.gz") for i in range(len(profiles))])


def profile(**fields) -> Profile:
    fields.setdefault("sample_types", list(CPU))
    fields.setdefault("period_type", ValueType("cpu", "nanoseconds"))
    fields.setdefault("period", 10_000_000)
    return Profile(**fields)


def check(pprofref: Path, tmp_path: Path, profiles: list[Profile]) -> Profile:
    expected = upstream_merge(pprofref, tmp_path, profiles)
    assert ours(tmp_path, profiles) == expected
    return expected


FUNCS = [Function(1, "main.main", "main.main", "main.go", 10), Function(2, "main.work", "main.work", "main.go", 20)]


def test_same_binary_at_other_addresses_is_rebased(pprofref: Path, tmp_path: Path) -> None:
    def at(start: int) -> Profile:
        return profile(
            mappings=[Mapping(1, start, start + 0x5000, 0, "/bin/app", "abc", True)],
            functions=FUNCS,
            locations=[
                Location(1, 1, start + 0x100, (Line(2, 21),)),
                Location(2, 1, start + 0x200, (Line(1, 11),)),
            ],
            samples=[Sample((1, 2), (1, 10))],
        )

    merged = check(pprofref, tmp_path, [at(0x400000), at(0x7F0000), at(0x400000)])
    assert len(merged.locations) == 2 and merged.samples[0].values == (3, 30)


def test_fake_mappings_first_mapping_rule_and_unused_mappings(pprofref: Path, tmp_path: Path) -> None:
    no_mappings = profile(
        functions=FUNCS, locations=[Location(1, 0, 0x10, (Line(1, 11),))], samples=[Sample((1,), (1, 1))]
    )
    with_mappings = profile(
        mappings=[
            Mapping(1, 0x1000, 0x2000, 0, "", ""),  # fake: no file, no build id
            Mapping(2, 0x9000, 0xA000, 0, "/lib/libc.so.6", ""),  # never used
            Mapping(3, 0x3000, 0x4000, 0x1000, "/bin/app", ""),
        ],
        functions=FUNCS,
        locations=[Location(1, 3, 0x3100, (Line(2, 22),)), Location(2, 1, 0x1010, (Line(1, 12),))],
        samples=[Sample((1, 2), (2, 20))],
    )
    check(pprofref, tmp_path, [no_mappings, with_mappings, with_mappings])


def test_zero_samples_and_values_that_cancel_out(pprofref: Path, tmp_path: Path) -> None:
    locs = [Location(1, 0, 0x10, (Line(1, 11),)), Location(2, 0, 0x20, (Line(2, 21),))]
    a = profile(
        functions=FUNCS,
        locations=locs,
        samples=[Sample((1,), (0, 0)), Sample((2, 1), (5, 50)), Sample((1,), (3, 30))],
    )
    b = profile(functions=FUNCS, locations=locs, samples=[Sample((2, 1), (-5, -50)), Sample((2,), (1, 1))])
    merged = check(pprofref, tmp_path, [a, b])
    assert all(any(s.values) for s in merged.samples)


def test_location_key_ignores_inner_columns(pprofref: Path, tmp_path: Path) -> None:
    def with_columns(inner: int, outer: int) -> Profile:
        return profile(
            functions=FUNCS,
            locations=[Location(1, 0, 0x10, (Line(2, 21, inner), Line(1, 11, outer)))],
            samples=[Sample((1,), (1, 1))],
        )

    merged = check(pprofref, tmp_path, [with_columns(3, 4), with_columns(7, 4), with_columns(3, 5)])
    assert len(merged.locations) == 2


def test_labels_and_headers(pprofref: Path, tmp_path: Path) -> None:
    labels = Labels((("endpoint", ("hash",)), ("tier", ("a", "b"))), (("bytes", (10, 20), ("B", "")),))
    locs = [Location(1, 0, 0x10, (Line(1, 11),))]
    a = profile(
        functions=FUNCS,
        locations=locs,
        samples=[Sample((1,), (1, 1), labels), Sample((1,), (1, 1))],
        time_nanos=500,
        duration_nanos=7,
        comments=["x", "y"],
        drop_frames="^runtime\\.",
        doc_url="",
    )
    b = profile(
        functions=FUNCS,
        locations=locs,
        samples=[Sample((1,), (2, 2), labels), Sample((1,), (1, 1), Labels((("tier", ("b", "a")),)))],
        time_nanos=0,
        duration_nanos=5,
        period=20_000_000,
        comments=["y", "z"],
        keep_frames="main",
        default_sample_type="cpu",
        doc_url="https://example.invalid/doc",
    )
    c = profile(functions=FUNCS, locations=locs, samples=[Sample((1,), (1, 1))], time_nanos=300)
    check(pprofref, tmp_path, [a, b, c])
    check(pprofref, tmp_path, [c, b, a])


def random_profile(rng: random.Random, binaries: list[tuple[str, str]]) -> Profile:
    """A valid profile with random mappings, inlined frames, columns, labels and zero samples."""
    names = [f"pkg{i % 3}.f{i}" for i in range(12)]
    functions = [
        Function(i + 1, name, name if rng.random() < 0.8 else f"sys.{name}", f"f{i % 4}.go", rng.choice([0, 5, 9]))
        for i, name in enumerate(rng.sample(names, rng.randint(3, len(names))))
    ]
    mappings = []
    for i, (file, build_id) in enumerate(rng.sample(binaries, rng.randint(0, len(binaries)))):
        start = rng.choice([0x400000, 0x500000]) + 0x100000 * i
        mappings.append(Mapping(i + 1, start, start + rng.choice([0x8000, 0x8800]), 0, file, build_id, True))
    locations = []
    for lid in rng.sample(range(1, 60), rng.randint(4, 14)):
        mapping = rng.choice(mappings) if mappings and rng.random() < 0.8 else None
        base = mapping.start if mapping else 0
        lines = tuple(
            Line(rng.choice(functions).id, rng.randint(1, 4), rng.choice([0, 0, 1]))
            for _ in range(rng.choice([0, 1, 1, 1, 2, 3]))
        )
        locations.append(Location(lid, mapping.id if mapping else 0, base + rng.randint(0, 6) * 0x10, lines, rng.random() < 0.1))
    samples = []
    for _ in range(rng.randint(1, 12)):
        stack = tuple(rng.choice(locations).id for _ in range(rng.randint(0, 5)))
        values = (rng.choice([0, 1, 2, 3]), rng.choice([0, 10, 20, -10]))
        label = None
        if rng.random() < 0.3:
            label = Labels((("k", (rng.choice("ab"),)),), (("n", (rng.randint(1, 2),), rng.choice([(), ("ms",)])),))
        samples.append(Sample(stack, values, label))
    return profile(
        functions=functions,
        mappings=mappings,
        locations=locations,
        samples=samples,
        time_nanos=rng.choice([0, 100, 200]),
        duration_nanos=rng.randint(0, 9),
        period=rng.choice([10, 20]),
        comments=rng.sample(["a", "b", "c"], rng.randint(0, 2)),
    )


@pytest.mark.parametrize("seed", range(40))
def test_random_profiles_merge_as_upstream(pprofref: Path, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    binaries = [("/bin/app", "id1"), ("/lib/x.so", ""), ("", "")]
    check(pprofref, tmp_path, [random_profile(rng, binaries) for _ in range(rng.randint(2, 5))])
