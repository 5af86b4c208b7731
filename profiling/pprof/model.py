"""The pprof data model: a decoded, validated profile with its strings resolved.

It mirrors google/pprof's ``profile`` package, but keeps references as integer
ids (a sample lists location ids, a line names a function id) instead of
pointers, and stores rows as named tuples, so that decoding and merging touch
as few Python objects as possible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple


class ValueType(NamedTuple):
    """What a sample value measures, e.g. ``cpu``/``nanoseconds``."""

    type: str
    unit: str

    def __str__(self) -> str:
        return f"{self.type}/{self.unit}"


class Line(NamedTuple):
    """One frame of a location; ``function_id`` names a function of the profile."""

    function_id: int
    line: int
    column: int = 0


class Location(NamedTuple):
    """A program counter and the frames (innermost inlined call first) at it."""

    id: int
    mapping_id: int  # 0 when the location has no (known) mapping
    address: int
    lines: tuple[Line, ...]
    is_folded: bool = False


class Function(NamedTuple):
    """A function a line names: its name, its system (linker) name, its source file and the line it starts at."""

    id: int
    name: str
    system_name: str
    filename: str
    start_line: int


class Labels(NamedTuple):
    """A sample's labels in canonical form, hashable so that it can key a merge.

    ``strings`` holds ``(key, values)`` and ``numbers`` holds ``(key, values,
    units)``, both sorted by key; ``units`` is empty or as long as ``values``.
    This is the same information as google/pprof's Label, NumLabel and NumUnit
    maps, and two samples have equal labels exactly when those maps are equal.
    """

    strings: tuple[tuple[str, tuple[str, ...]], ...] = ()
    numbers: tuple[tuple[str, tuple[int, ...], tuple[str, ...]], ...] = ()


class Sample(NamedTuple):
    """Values measured at a stack; ``location_ids[0]`` is the leaf."""

    location_ids: tuple[int, ...]
    values: tuple[int, ...]
    labels: Labels | None = None


@dataclass(slots=True)
class Mapping:
    """A binary or library mapped into the profiled process."""

    id: int
    start: int = 0
    limit: int = 0
    offset: int = 0
    file: str = ""
    build_id: str = ""
    has_functions: bool = False
    has_filenames: bool = False
    has_line_numbers: bool = False
    has_inline_frames: bool = False


@dataclass(slots=True)
class Profile:
    """A whole profile. Ids of mappings, locations and functions are unique and non-zero."""

    sample_types: list[ValueType] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    mappings: list[Mapping] = field(default_factory=list)
    locations: list[Location] = field(default_factory=list)
    functions: list[Function] = field(default_factory=list)
    drop_frames: str = ""
    keep_frames: str = ""
    time_nanos: int = 0
    duration_nanos: int = 0
    period_type: ValueType = ValueType("", "")
    period: int = 0
    comments: list[str] = field(default_factory=list)
    default_sample_type: str = ""
    doc_url: str = ""

    def locations_by_id(self) -> dict[int, Location]:
        """The profile's locations, each under its id."""
        return dict(zip([loc.id for loc in self.locations], self.locations))

    def functions_by_id(self) -> dict[int, Function]:
        """The profile's functions, each under its id."""
        return dict(zip([fn.id for fn in self.functions], self.functions))


# Builders that make rows straight from tuples without a Python-level __new__
# call per row; the decoder and the merger make tens of thousands of them.
new_line = partial(tuple.__new__, Line)
new_location = partial(tuple.__new__, Location)
new_function = partial(tuple.__new__, Function)
new_sample = partial(tuple.__new__, Sample)
