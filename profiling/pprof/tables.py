"""A profile as flat columns: the form the decoder produces and the merger consumes.

``Profile`` (model.py) holds one named tuple per location, line and function,
which reads well but costs a Python object per row. Merging dozens of
profiles only needs each table as a few parallel lists, so the decoder fills
those directly and the merger translates whole columns with C-level ``map``
and ``zip``. ``to_profile`` and ``from_profile`` convert between the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import accumulate, chain

from .model import Labels, Mapping, Profile, ValueType, new_function, new_line, new_location, new_sample


@dataclass(frozen=True, slots=True)
class Header:
    """The fields of a profile that merging combines rather than unions."""

    sample_types: tuple[ValueType, ...] = ()
    period_type: ValueType = ValueType("", "")
    period: int = 0
    time_nanos: int = 0
    duration_nanos: int = 0
    comments: tuple[str, ...] = ()
    drop_frames: str = ""
    keep_frames: str = ""
    default_sample_type: str = ""
    doc_url: str = ""


@dataclass(slots=True)
class ProfileTables:
    """Row i of a table is element i of each of its lists.

    Location i has the lines ``line_starts[i]:line_starts[i+1]``; a location's
    ``mapping_id`` is 0 when it has none.
    """

    header: Header = field(default_factory=Header)
    mappings: list[Mapping] = field(default_factory=list)
    function_ids: list[int] = field(default_factory=list)
    function_names: list[str] = field(default_factory=list)
    function_system_names: list[str] = field(default_factory=list)
    function_filenames: list[str] = field(default_factory=list)
    function_start_lines: list[int] = field(default_factory=list)
    location_ids: list[int] = field(default_factory=list)
    location_mapping_ids: list[int] = field(default_factory=list)
    location_addresses: list[int] = field(default_factory=list)
    location_folded: list[bool] = field(default_factory=list)
    line_starts: list[int] = field(default_factory=lambda: [0])
    line_function_ids: list[int] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)
    line_columns: list[int] = field(default_factory=list)
    sample_location_ids: list[tuple[int, ...]] = field(default_factory=list)
    sample_values: list[tuple[int, ...]] = field(default_factory=list)
    sample_labels: list[Labels | None] = field(default_factory=list)


def to_profile(t: ProfileTables) -> Profile:
    """The tables as a ``Profile``, a named tuple per row (its ``mappings`` is the tables' own list)."""
    h = t.header
    lines = list(map(new_line, zip(t.line_function_ids, t.line_numbers, t.line_columns)))
    starts = t.line_starts
    location_lines = [tuple(lines[a:b]) for a, b in zip(starts, starts[1:])]
    return Profile(
        sample_types=list(h.sample_types),
        samples=list(map(new_sample, zip(t.sample_location_ids, t.sample_values, t.sample_labels))),
        mappings=t.mappings,
        locations=list(
            map(
                new_location,
                zip(t.location_ids, t.location_mapping_ids, t.location_addresses, location_lines, t.location_folded),
            )
        ),
        functions=list(
            map(
                new_function,
                zip(
                    t.function_ids,
                    t.function_names,
                    t.function_system_names,
                    t.function_filenames,
                    t.function_start_lines,
                ),
            )
        ),
        drop_frames=h.drop_frames,
        keep_frames=h.keep_frames,
        time_nanos=h.time_nanos,
        duration_nanos=h.duration_nanos,
        period_type=h.period_type,
        period=h.period,
        comments=list(h.comments),
        default_sample_type=h.default_sample_type,
        doc_url=h.doc_url,
    )


def header_of(p: Profile) -> Header:
    """The fields of ``p`` that merging combines."""
    return Header(
        tuple(p.sample_types),
        p.period_type,
        p.period,
        p.time_nanos,
        p.duration_nanos,
        tuple(p.comments),
        p.drop_frames,
        p.keep_frames,
        p.default_sample_type,
        p.doc_url,
    )


def from_profile(p: Profile) -> ProfileTables:
    """``p`` as columns, its rows in the same order."""
    lines = list(chain.from_iterable(loc.lines for loc in p.locations))
    functions = p.functions
    locations = p.locations
    return ProfileTables(
        header=header_of(p),
        mappings=list(p.mappings),
        function_ids=[f.id for f in functions],
        function_names=[f.name for f in functions],
        function_system_names=[f.system_name for f in functions],
        function_filenames=[f.filename for f in functions],
        function_start_lines=[f.start_line for f in functions],
        location_ids=[loc.id for loc in locations],
        location_mapping_ids=[loc.mapping_id for loc in locations],
        location_addresses=[loc.address for loc in locations],
        location_folded=[loc.is_folded for loc in locations],
        line_starts=[0, *accumulate(len(loc.lines) for loc in locations)],
        line_function_ids=[ln.function_id for ln in lines],
        line_numbers=[ln.line for ln in lines],
        line_columns=[ln.column for ln in lines],
        sample_location_ids=[s.location_ids for s in p.samples],
        sample_values=[s.values for s in p.samples],
        sample_labels=[s.labels for s in p.samples],
    )
