"""Merging profiles exactly as google/pprof's ``profile.Merge`` does.

The result holds the same samples, locations, functions and mappings, with the
same ids in the same first-use order, as ``go tool pprof -proto`` writes for the
same inputs. Every key is a tuple of integers and strings, and a source's ids
are translated through per-source dicts, so the per-sample work is a tuple
build and one dict lookup.

Upstream details kept on purpose:
- all-zero samples are skipped; if merged values cancel out to zero, the
  result is merged once more to drop them and renumber;
- the first mapping of the first source that has mappings is mapped first;
- mappings match on (rounded size, file offset, build id or else file name),
  and addresses are rebased onto the first matching mapping's start;
- a location key ignores the column of every line but the last, because
  upstream's key builder overwrites those slots.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import add

from .errors import ProfileError
from .model import (
    Location,
    Mapping,
    Profile,
    ValueType,
    new_function,
    new_line,
    new_location,
    new_sample,
)

_U64 = (1 << 64) - 1
_MAPSIZE_ROUNDING = 0x1000


@dataclass(frozen=True, slots=True)
class Header:
    """The fields of a profile that merging combines rather than unions."""

    sample_types: tuple[ValueType, ...]
    period_type: ValueType
    period: int
    time_nanos: int
    duration_nanos: int
    comments: tuple[str, ...]
    drop_frames: str
    keep_frames: str
    default_sample_type: str
    doc_url: str

    @classmethod
    def of(cls, p: Profile) -> Header:
        return cls(
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


def merge(profiles: Sequence[Profile]) -> Profile:
    """Merge ``profiles`` into a new profile (the inputs are not changed)."""
    if not profiles:
        raise ProfileError("no profiles to merge")
    merger = Merger()
    for p in profiles:
        merger.add(p)
    return merger.result()


def compact(profile: Profile) -> Profile:
    """Drop unreferenced entries and renumber ids, as upstream's ``Compact``."""
    return merge([profile])


@dataclass(slots=True)
class _HeaderFold:
    """Combines headers in source order with upstream's rules."""

    first: Header | None = None
    sources: list[Header] = field(default_factory=list)
    time_nanos: int = 0
    duration_nanos: int = 0
    period: int = 0
    comments: dict[str, None] = field(default_factory=dict)
    default_sample_type: str = ""
    doc_url: str = ""

    def add(self, h: Header, source: str) -> None:
        if self.first is None:
            self.first = h
        else:
            _check_compatible(self.first, h, source)
        self.sources.append(h)
        if self.time_nanos == 0 or h.time_nanos < self.time_nanos:
            self.time_nanos = h.time_nanos
        self.duration_nanos += h.duration_nanos
        if self.period == 0 or self.period < h.period:
            self.period = h.period
        for c in h.comments:
            self.comments.setdefault(c)
        if not self.default_sample_type:
            self.default_sample_type = h.default_sample_type
        if not self.doc_url:
            self.doc_url = h.doc_url


def _check_compatible(first: Header, h: Header, source: str) -> None:
    where = f" ({source})" if source else ""
    if first.period_type != h.period_type:
        raise ProfileError(
            f"incompatible period types {first.period_type} and {h.period_type}{where}"
        )
    if first.sample_types != h.sample_types:
        raise ProfileError(
            "incompatible sample types "
            f"[{' '.join(map(str, first.sample_types))}] and "
            f"[{' '.join(map(str, h.sample_types))}]{where}"
        )


class Merger:
    """Accumulates profiles one at a time; ``result`` gives the merged profile.

    ``add_partial`` takes the uncompacted result of another Merger together
    with the headers of the sources it merged: merging is associative in that
    form, which lets workers merge slices of the inputs in parallel.
    """

    def __init__(self) -> None:
        self.headers = _HeaderFold()
        self.mappings: list[Mapping] = []
        self.locations: list[Location] = []
        self.functions: list[tuple] = []
        self.sample_keys: list[tuple] = []
        self.sample_values: list[list[int]] = []
        self._mapping_index: dict[tuple, Mapping] = {}
        self._location_index: dict[tuple, int] = {}
        self._function_index: dict[tuple, int] = {}
        self._sample_index: dict[tuple, int] = {}

    # -- sources ---------------------------------------------------------

    def add(self, p: Profile, source: str = "") -> None:
        self.headers.add(Header.of(p), source)
        self._add_body(p)

    def add_partial(self, partial: Profile, headers: Iterable[Header], source: str = "") -> None:
        for h in headers:
            self.headers.add(h, source)
        self._add_body(partial)

    def _add_body(self, p: Profile) -> None:
        locs_by_id = p.locations_by_id()
        funcs_by_id = p.functions_by_id()
        maps_by_id = p.mappings_by_id()
        loc_ids: dict[int, int] = {}
        func_ids: dict[int, int] = {}
        map_info: dict[int, tuple[Mapping, int]] = {}

        if not self.mappings and p.mappings:
            self._map_mapping(p.mappings[0], map_info)

        sample_index = self._sample_index
        keys = self.sample_keys
        values_of = self.sample_values
        get_loc = loc_ids.__getitem__
        for s in p.samples:
            values = s.values
            if not any(values):
                continue
            try:
                locs = tuple(map(get_loc, s.location_ids))
            except KeyError:
                for lid in s.location_ids:
                    if lid not in loc_ids:
                        loc_ids[lid] = self._map_location(
                            locs_by_id[lid], maps_by_id, map_info, funcs_by_id, func_ids
                        )
                locs = tuple(map(get_loc, s.location_ids))
            key = locs if s.labels is None else (locs, s.labels)
            i = sample_index.get(key)
            if i is None:
                sample_index[key] = len(keys)
                keys.append(key)
                values_of.append(list(values))
            else:
                acc = values_of[i]
                acc[:] = map(add, acc, values)

    def _map_mapping(self, src: Mapping, map_info: dict[int, tuple[Mapping, int]]) -> tuple[Mapping, int]:
        info = map_info.get(src.id)
        if info is not None:
            return info
        size = (src.limit - src.start) & _U64
        size = (size + _MAPSIZE_ROUNDING - 1) & _U64
        size -= size % _MAPSIZE_ROUNDING
        key = (size, src.offset, src.build_id or src.file)
        m = self._mapping_index.get(key)
        if m is not None:
            info = (m, m.start - src.start)
        else:
            m = Mapping(
                id=len(self.mappings) + 1,
                start=src.start,
                limit=src.limit,
                offset=src.offset,
                file=src.file,
                build_id=src.build_id,
                has_functions=src.has_functions,
                has_filenames=src.has_filenames,
                has_line_numbers=src.has_line_numbers,
                has_inline_frames=src.has_inline_frames,
            )
            self.mappings.append(m)
            self._mapping_index[key] = m
            info = (m, 0)
        map_info[src.id] = info
        return info

    def _map_location(
        self,
        src: Location,
        maps_by_id: dict[int, Mapping],
        map_info: dict[int, tuple[Mapping, int]],
        funcs_by_id: dict,
        func_ids: dict[int, int],
    ) -> int:
        if src.mapping_id:
            mapping, offset = self._map_mapping(maps_by_id[src.mapping_id], map_info)
            mapping_id = mapping.id
            address = (src.address + offset) & _U64
            key_address = (address - mapping.start) & _U64
        else:
            mapping_id = 0
            address = key_address = src.address
        lines = []
        for fid, line, column in src.lines:
            gid = func_ids.get(fid)
            if gid is None:
                gid = func_ids[fid] = self._map_function(funcs_by_id[fid])
            lines.append((gid, line, column))
        line_key: tuple = tuple(lines)
        if len(lines) > 1 and any(ln[2] for ln in lines[:-1]):
            line_key = tuple((f, n, 0) for f, n, _ in lines[:-1]) + (lines[-1],)
        key = (mapping_id, key_address, src.is_folded, line_key)
        index = self._location_index
        lid = index.get(key)
        if lid is None:
            lid = index[key] = len(self.locations) + 1
            self.locations.append(
                new_location((lid, mapping_id, address, tuple(map(new_line, lines)), src.is_folded))
            )
        return lid

    def _map_function(self, src: tuple) -> int:
        _, name, system_name, filename, start_line = src
        key = (start_line, name, system_name, filename)
        index = self._function_index
        fid = index.get(key)
        if fid is None:
            fid = index[key] = len(self.functions) + 1
            self.functions.append((fid, name, system_name, filename, start_line))
        return fid

    # -- result ----------------------------------------------------------

    def result(self, *, compact: bool = True) -> Profile:
        """The merged profile. ``compact=False`` keeps samples whose values cancelled out."""
        h = self.headers
        if h.first is None:
            raise ProfileError("no profiles to merge")
        samples = [
            new_sample((key, tuple(values), None))
            if not key or type(key[0]) is int
            else new_sample((key[0], tuple(values), key[1]))
            for key, values in zip(self.sample_keys, self.sample_values)
        ]
        p = Profile(
            sample_types=list(h.first.sample_types),
            samples=samples,
            mappings=self.mappings,
            locations=self.locations,
            functions=list(map(new_function, self.functions)),
            drop_frames=h.first.drop_frames,
            keep_frames=h.first.keep_frames,
            time_nanos=h.time_nanos,
            duration_nanos=h.duration_nanos,
            period_type=h.first.period_type,
            period=h.period,
            comments=list(h.comments),
            default_sample_type=h.default_sample_type,
            doc_url=h.doc_url,
        )
        if compact and any(not any(s.values) for s in samples):
            return merge([p])
        return p


__all__ = ["Header", "Merger", "compact", "merge"]
