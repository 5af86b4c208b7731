"""Merging profiles exactly as google/pprof's ``profile.Merge`` does.

The result holds the same samples, locations, functions and mappings, with the
same ids in the same first-use order, as ``go tool pprof -proto`` writes for the
same inputs.

How: each source is taken as columns (tables.py). Its functions and locations
are interned by content into integer ids a whole table at a time, with C-level
``map``/``zip`` over the columns, so a sample's key is a tuple of those ids and
costs one dict lookup. Interning every row of a source, used or not, does not
change the result, because output ids are assigned only at the end, in the
order in which the merged samples first use each location (and the locations
each function and mapping), which is the order in which upstream creates them.
What upstream takes from the first *use* of a location (its mapping's start
address and its lines' columns) is recorded when a new sample first uses it.

Upstream details kept on purpose:
- all-zero samples are skipped; if merged values cancel out to zero, the
  result is merged once more to drop them and renumber;
- the first mapping of the first source that has mappings is created first;
- mappings match on (size rounded up to 4 KiB, file offset, build id or else
  file name), and addresses are rebased onto the first matching mapping's start;
- a location key ignores the column of every line but the last, because
  upstream's key builder overwrites those slots.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from itertools import chain, count, repeat
from operator import add, and_, sub

from ..errors import ProfileError
from .model import Labels, Mapping, Profile
from .tables import Header, ProfileTables, from_profile, to_profile

_U64 = (1 << 64) - 1
_MAPSIZE_ROUNDING = 0x1000

# A line as interned: (internal function id, line, column).
_Line = tuple[int, int, int]


def merge(profiles: Sequence[Profile]) -> Profile:
    """Merge ``profiles`` into a new profile (the inputs are not changed)."""
    if not profiles:
        raise ProfileError("no profiles to merge")
    merger = Merger()
    for p in profiles:
        merger.add(from_profile(p))
    return to_profile(merger.result())


def compact(profile: Profile) -> Profile:
    """Drop unreferenced entries and renumber ids, as upstream's ``Compact``."""
    return merge([profile])


def mapping_key(m: Mapping) -> tuple[int, int, str]:
    """What mappings match on, as upstream: size rounded up to 4 KiB, file offset, and build id or else file name."""
    size = (m.limit - m.start) & _U64
    size = (size + _MAPSIZE_ROUNDING - 1) & _U64
    size -= size % _MAPSIZE_ROUNDING
    return (size, m.offset, m.build_id or m.file)


class _HeaderFold:
    """Combines headers in source order with upstream's rules."""

    def __init__(self) -> None:
        self.first: Header | None = None
        self.time_nanos = 0
        self.duration_nanos = 0
        self.period = 0
        self.comments: dict[str, None] = {}
        self.default_sample_type = ""
        self.doc_url = ""

    def add(self, h: Header, source: str) -> None:
        if self.first is None:
            self.first = h
        else:
            check_compatible(self.first, h, source)
        if self.time_nanos == 0 or h.time_nanos < self.time_nanos:
            self.time_nanos = h.time_nanos
        self.duration_nanos += h.duration_nanos
        if self.period == 0 or self.period < h.period:
            self.period = h.period
        self.comments.update(dict.fromkeys(h.comments))
        if not self.default_sample_type:
            self.default_sample_type = h.default_sample_type
        if not self.doc_url:
            self.doc_url = h.doc_url

    def header(self) -> Header:
        first = self.first
        assert first is not None
        return Header(
            sample_types=first.sample_types,
            period_type=first.period_type,
            period=self.period,
            time_nanos=self.time_nanos,
            duration_nanos=self.duration_nanos,
            comments=tuple(self.comments),
            drop_frames=first.drop_frames,
            keep_frames=first.keep_frames,
            default_sample_type=self.default_sample_type,
            doc_url=self.doc_url,
        )


def check_compatible(first: Header, h: Header, source: str) -> None:
    """ProfileError unless ``h`` can be merged with ``first`` (same period and sample types), as upstream."""
    where = f" ({source})" if source else ""
    if first.period_type != h.period_type:
        raise ProfileError(f"incompatible period types {first.period_type} and {h.period_type}{where}")
    if first.sample_types != h.sample_types:
        raise ProfileError(
            "incompatible sample types "
            f"[{' '.join(map(str, first.sample_types))}] and "
            f"[{' '.join(map(str, h.sample_types))}]{where}"
        )


class Merger:
    """Accumulates profiles one at a time; ``result`` gives the merged profile."""

    def __init__(self) -> None:
        self.headers = _HeaderFold()
        # Content-interned ids; insertion order is id order.
        self._functions: defaultdict[tuple, int] = defaultdict(count().__next__)
        self._locations: defaultdict[tuple, int] = defaultdict(count().__next__)
        self._mappings: dict[tuple, int] = {}  # mapping key -> internal id (from 1; 0 is "none")
        # What upstream keeps from the first use of each location:
        # internal location id -> (lines, source mapping or None, address relative to it).
        self._first_use: dict[int, tuple[tuple[_Line, ...], Mapping | None, int]] = {}
        self._first_mapping: Mapping | None = None
        self._has_mapping = False
        self._sample_index: dict[tuple, int] = {}
        self._sample_locations: list[tuple[int, ...]] = []
        self._sample_labels: list[Labels | None] = []
        self._sample_values: list[list[int]] = []

    def add(self, t: ProfileTables, source: str = "") -> None:
        """Merge in ``t``; ProfileError, naming ``source``, if it cannot be merged with the first profile added."""
        self.headers.add(t.header, source)
        self._add_body(t)

    def _intern_mapping(self, m: Mapping) -> int:
        return self._mappings.setdefault(mapping_key(m), len(self._mappings) + 1)

    def _add_body(self, t: ProfileTables) -> None:
        if not self._has_mapping and t.mappings:
            self._first_mapping = t.mappings[0]
            self._intern_mapping(t.mappings[0])
            self._has_mapping = True

        functions = map(
            self._functions.__getitem__,
            zip(t.function_start_lines, t.function_names, t.function_system_names, t.function_filenames),
        )
        function_ids = dict(zip(t.function_ids, functions))
        line_functions = map(function_ids.__getitem__, t.line_function_ids)
        lines: list[_Line] = list(zip(line_functions, t.line_numbers, t.line_columns))
        n = len(t.location_ids)
        starts = t.line_starts
        location_lines: list[tuple[_Line, ...]]
        if starts == list(range(n + 1)):  # one line each, the common case
            location_lines = list(zip(lines))
        else:
            location_lines = [tuple(lines[a:b]) for a, b in zip(starts, starts[1:])]
        key_lines = location_lines
        if any(t.line_columns):
            key_lines = list(map(_key_lines, location_lines))

        addresses = t.location_addresses
        source_mappings: dict[int, Mapping | None] = {0: None}
        if any(t.location_mapping_ids):
            by_id = {m.id: m for m in t.mappings}
            internal = {0: 0}
            starts_of = {0: 0}
            for mid in set(t.location_mapping_ids).difference(internal):
                m = source_mappings[mid] = by_id[mid]
                internal[mid] = self._intern_mapping(m)
                starts_of[mid] = m.start
            mapping_column = list(map(internal.__getitem__, t.location_mapping_ids))
            relative = map(sub, addresses, map(starts_of.__getitem__, t.location_mapping_ids))
            addresses = list(map(and_, relative, repeat(_U64)))
        else:
            mapping_column = t.location_mapping_ids
        keys = zip(mapping_column, addresses, t.location_folded, key_lines)
        location_ids = dict(zip(t.location_ids, map(self._locations.__getitem__, keys)))
        self._add_samples(t, location_ids, location_lines, source_mappings, addresses)

    def _add_samples(
        self,
        t: ProfileTables,
        location_ids: dict[int, int],
        location_lines: list[tuple[_Line, ...]],
        source_mappings: dict[int, Mapping | None],
        addresses: list[int],
    ) -> None:
        index = self._sample_index
        totals = self._sample_values
        translate = location_ids.__getitem__
        row_of: dict[int, int] | None = None
        for locs, values, labels in zip(t.sample_location_ids, t.sample_values, t.sample_labels):
            if not any(values):
                continue
            ids = tuple(map(translate, locs))
            key = ids if labels is None else (ids, labels)
            i = index.get(key)
            if i is not None:
                acc = totals[i]
                acc[:] = map(add, acc, values)
                continue
            index[key] = len(totals)
            totals.append(list(values))
            self._sample_locations.append(ids)
            self._sample_labels.append(labels)
            first_use = self._first_use
            if first_use.keys() >= set(ids):
                continue
            if row_of is None:
                row_of = dict(zip(t.location_ids, range(len(t.location_ids))))
            for local, internal in zip(locs, ids):
                if internal in first_use:
                    continue
                row = row_of[local]
                mapping = source_mappings[t.location_mapping_ids[row]]
                first_use[internal] = (location_lines[row], mapping, addresses[row])
                if mapping is not None:
                    self._has_mapping = True

    def result(self) -> ProfileTables:
        """The merged profile, as tables (``tables.to_profile`` makes a Profile of it)."""
        tables = self.result_tables()
        if any(not any(v) for v in tables.sample_values):
            # Values cancelled out: upstream merges its result again to drop them.
            merger = Merger()
            merger.add(tables)
            return merger.result()
        return tables

    def result_tables(self) -> ProfileTables:
        """The merged profile as tables, before dropping samples whose values cancelled out."""
        if self.headers.first is None:
            raise ProfileError("no profiles to merge")
        t = ProfileTables(header=self.headers.header())

        order = list(dict.fromkeys(chain.from_iterable(self._sample_locations)))
        out_location = dict(zip(order, range(1, len(order) + 1)))
        first_use = [self._first_use[i] for i in order]

        # Mappings in creation order: upstream's "first mapping" rule, then by first use.
        out_mapping: dict[tuple, int] = {}
        if self._first_mapping is not None:
            out_mapping[mapping_key(self._first_mapping)] = 1
            t.mappings.append(_copy_mapping(self._first_mapping, 1))
        out_id_of: dict[int, int] = {}  # id() of a source mapping -> output mapping id
        location_mappings = []
        addresses = []
        for _, mapping, address in first_use:
            if mapping is None:
                location_mappings.append(0)
                addresses.append(address)
                continue
            mid = out_id_of.get(id(mapping))
            if mid is None:
                key = mapping_key(mapping)
                mid = out_mapping.get(key)
                if mid is None:
                    mid = out_mapping[key] = len(t.mappings) + 1
                    t.mappings.append(_copy_mapping(mapping, mid))
                out_id_of[id(mapping)] = mid
            location_mappings.append(mid)
            addresses.append((t.mappings[mid - 1].start + address) & _U64)

        function_keys = list(self._functions)
        line_rows = list(chain.from_iterable(lines for lines, _, _ in first_use))
        function_order = list(dict.fromkeys(ln[0] for ln in line_rows))
        out_function = dict(zip(function_order, range(1, len(function_order) + 1)))
        t.function_ids = list(range(1, len(function_order) + 1))
        for internal in function_order:
            start_line, name, system_name, filename = function_keys[internal]
            t.function_names.append(name)
            t.function_system_names.append(system_name)
            t.function_filenames.append(filename)
            t.function_start_lines.append(start_line)

        location_keys = list(self._locations)
        t.location_ids = list(range(1, len(order) + 1))
        t.location_mapping_ids = location_mappings
        t.location_addresses = addresses
        t.location_folded = [location_keys[i][2] for i in order]
        t.line_starts = [0]
        total = 0
        for lines, _, _ in first_use:
            total += len(lines)
            t.line_starts.append(total)
        t.line_function_ids = [out_function[ln[0]] for ln in line_rows]
        t.line_numbers = [ln[1] for ln in line_rows]
        t.line_columns = [ln[2] for ln in line_rows]

        translate = out_location.__getitem__
        t.sample_location_ids = [tuple(map(translate, ids)) for ids in self._sample_locations]
        t.sample_values = list(map(tuple, self._sample_values))
        t.sample_labels = list(self._sample_labels)
        return t


def _key_lines(lines: tuple[_Line, ...]) -> tuple[_Line, ...]:
    if len(lines) < 2 or not any(ln[2] for ln in lines[:-1]):
        return lines
    return tuple((f, n, 0) for f, n, _ in lines[:-1]) + (lines[-1],)


def _copy_mapping(m: Mapping, new_id: int) -> Mapping:
    return Mapping(
        id=new_id,
        start=m.start,
        limit=m.limit,
        offset=m.offset,
        file=m.file,
        build_id=m.build_id,
        has_functions=m.has_functions,
        has_filenames=m.has_filenames,
        has_line_numbers=m.has_line_numbers,
        has_inline_frames=m.has_inline_frames,
    )


__all__ = ["Merger", "check_compatible", "compact", "mapping_key", "merge"]
