"""Reading and writing pprof profiles (gzip or raw protobuf), with google/pprof's validation.

``decode`` accepts exactly what google/pprof's ``profile.ParseData`` accepts for
protobuf input, and rejects the rest with a one-line ``ProfileError``: string
table index 0 must be empty and every string index in range, sample values must
match the sample types, ids must be non-zero and unique, samples and lines must
point at known locations and functions, and concatenated profiles are refused.
A location naming an unknown mapping loses the mapping, as upstream does.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable, Sequence
from operator import attrgetter

from google.protobuf.message import DecodeError

from .errors import ProfileError
from .model import (
    Function,
    Labels,
    Location,
    Mapping,
    Profile,
    Sample,
    ValueType,
    new_function,
    new_line,
    new_location,
    new_sample,
)
from .proto import profile_pb2 as pb
from .proto import scan_pb2

DEFAULT_MAX_DECOMPRESSED = 512 << 20
GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20

_function_fields = attrgetter("id", "name", "system_name", "filename", "start_line")
_location_fields = attrgetter("id", "mapping_id", "address", "line", "is_folded")
_line_fields = attrgetter("function_id", "line", "column")
_sample_fields = attrgetter("location_id", "value", "label")


def decompress(data: bytes, limit: int = DEFAULT_MAX_DECOMPRESSED) -> bytes:
    """Return ``data`` gunzipped (all members) if it is gzip, else as is.

    Stops with a ProfileError as soon as the output would exceed ``limit``
    bytes, so a gzip bomb is never allocated.
    """
    if not data.startswith(GZIP_MAGIC):
        if len(data) > limit:
            raise ProfileError(f"profile is larger than the limit of {limit} bytes")
        return data
    out = bytearray()
    rest = data
    try:
        while rest:
            inflater = zlib.decompressobj(wbits=31)
            chunk = inflater.decompress(rest, limit + 1 - len(out))
            out += chunk
            while inflater.unconsumed_tail and len(out) <= limit:
                out += inflater.decompress(inflater.unconsumed_tail, limit + 1 - len(out))
            if len(out) > limit:
                raise ProfileError(f"decompressed profile is larger than the limit of {limit} bytes")
            if not inflater.eof:
                raise ProfileError("decompressing profile: truncated gzip data")
            rest = inflater.unused_data
    except zlib.error as exc:
        raise ProfileError(f"decompressing profile: {exc}") from None
    return bytes(out)


def decode(data: bytes, *, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> Profile:
    """Decode and validate a pprof profile, gzip-compressed or raw."""
    raw = decompress(data, max_decompressed)
    if not raw:
        raise ProfileError("empty profile")
    try:
        msg = pb.Profile.FromString(raw)
        times = scan_pb2.TimeNanosScan.FromString(raw).time_nanos
    except DecodeError:
        raise ProfileError("not a pprof profile: invalid protobuf data") from None
    if any(times[:-1]):
        raise ProfileError("concatenated profiles detected")
    return _Decoder(msg).profile()


def encode(profile: Profile, *, compresslevel: int = 6) -> bytes:
    """Serialize ``profile`` to gzip-compressed protobuf, as ``go tool pprof`` writes it."""
    return gzip.compress(encode_raw(profile), compresslevel=compresslevel, mtime=0)


def encode_raw(profile: Profile) -> bytes:
    """Serialize ``profile`` to uncompressed protobuf."""
    return _to_message(profile).SerializeToString()


class _Decoder:
    """Turns one parsed protobuf message into a validated Profile."""

    def __init__(self, msg: pb.Profile) -> None:
        self.msg = msg
        self.strings: list[str] = list(msg.string_table)
        if not self.strings:
            raise ProfileError("malformed profile: empty string table")
        if self.strings[0] != "":
            raise ProfileError("malformed profile: string_table[0] must be ''")

    def string(self, index: int, what: str) -> str:
        if 0 <= index < len(self.strings):
            return self.strings[index]
        raise ProfileError(
            f"malformed profile: {what} refers to string {index}, "
            f"but the string table has {len(self.strings)} entries"
        )

    def strings_at(self, indices: Sequence[int], what: str) -> list[str]:
        strings = self.strings
        if indices and (min(indices) < 0 or max(indices) >= len(strings)):
            bad = next(i for i in indices if not 0 <= i < len(strings))
            self.string(bad, what)
        return [strings[i] for i in indices]

    def profile(self) -> Profile:
        msg = self.msg
        value_type = self.value_type
        sample_types = [value_type(vt, "sample type") for vt in msg.sample_type]
        mappings = self.mappings()
        functions = self.functions()
        locations = self.locations({m.id for m in mappings}, {f.id for f in functions})
        samples = self.samples(len(sample_types), {loc.id for loc in locations})
        return Profile(
            sample_types=sample_types,
            samples=samples,
            mappings=mappings,
            locations=locations,
            functions=functions,
            drop_frames=self.string(msg.drop_frames, "drop_frames"),
            keep_frames=self.string(msg.keep_frames, "keep_frames"),
            time_nanos=msg.time_nanos,
            duration_nanos=msg.duration_nanos,
            period_type=value_type(msg.period_type, "period type"),
            period=msg.period,
            comments=self.strings_at(list(msg.comment), "a comment"),
            default_sample_type=self.string(msg.default_sample_type, "default_sample_type"),
            doc_url=self.string(msg.doc_url, "doc_url"),
        )

    def value_type(self, vt: pb.ValueType, what: str) -> ValueType:
        return ValueType(self.string(vt.type, what), self.string(vt.unit, what))

    def mappings(self) -> list[Mapping]:
        out = []
        for m in self.msg.mapping:
            out.append(
                Mapping(
                    id=m.id,
                    start=m.memory_start,
                    limit=m.memory_limit,
                    offset=m.file_offset,
                    file=self.string(m.filename, f"mapping {m.id} filename"),
                    build_id=self.string(m.build_id, f"mapping {m.id} build_id"),
                    has_functions=m.has_functions,
                    has_filenames=m.has_filenames,
                    has_line_numbers=m.has_line_numbers,
                    has_inline_frames=m.has_inline_frames,
                )
            )
        _check_ids([m.id for m in out], "mapping")
        return out

    def functions(self) -> list[Function]:
        rows = list(map(_function_fields, self.msg.function))
        if not rows:
            return []
        ids, names, system_names, filenames, start_lines = zip(*rows)
        _check_ids(ids, "function")
        return list(
            map(
                new_function,
                zip(
                    ids,
                    self.strings_at(names, "a function name"),
                    self.strings_at(system_names, "a function system name"),
                    self.strings_at(filenames, "a function filename"),
                    start_lines,
                ),
            )
        )

    def locations(self, mapping_ids: set[int], function_ids: set[int]) -> list[Location]:
        rows = list(map(_location_fields, self.msg.location))
        if not rows:
            return []
        _check_ids([row[0] for row in rows], "location")
        out = []
        used_functions: set[int] = set()
        for loc_id, mapping_id, address, lines, is_folded in rows:
            line_rows = tuple(map(new_line, map(_line_fields, lines)))
            used_functions.update([ln[0] for ln in line_rows])
            if mapping_id and mapping_id not in mapping_ids:
                mapping_id = 0  # google/pprof drops a reference to an unknown mapping
            out.append(new_location((loc_id, mapping_id, address, line_rows, is_folded)))
        unknown = used_functions - function_ids
        if unknown:
            bad = min(unknown)
            loc = next(loc for loc in out if any(ln.function_id == bad for ln in loc.lines))
            if bad == 0:
                raise ProfileError(f"malformed profile: location {loc.id} has a line with no function")
            raise ProfileError(f"malformed profile: location {loc.id} has a line with unknown function {bad}")
        return out

    def samples(self, n_types: int, location_ids: set[int]) -> list[Sample]:
        rows = [
            (tuple(locs), tuple(values), labels or None)
            for locs, values, labels in map(_sample_fields, self.msg.sample)
        ]
        if not rows:
            return []
        if n_types == 0:
            raise ProfileError("malformed profile: missing sample type information")
        for _, values, _ in rows:
            if len(values) != n_types:
                raise ProfileError(
                    f"malformed profile: a sample has {len(values)} values for {n_types} sample types"
                )
        used: set[int] = set()
        for locs, _, _ in rows:
            used.update(locs)
        unknown = used - location_ids
        if unknown:
            raise ProfileError(f"malformed profile: a sample refers to unknown location {min(unknown)}")
        labelled = [i for i, row in enumerate(rows) if row[2] is not None]
        if labelled:
            for i in labelled:
                locs, values, labels = rows[i]
                rows[i] = (locs, values, self.labels(labels))
        return list(map(new_sample, rows))

    def labels(self, labels: Iterable[pb.Label]) -> Labels | None:
        """google/pprof's label decoding: str if set, else num if num or unit set, else dropped."""
        strings: dict[str, list[str]] = {}
        numbers: dict[str, list[int]] = {}
        units: dict[str, list[str]] = {}
        for label in labels:
            key = self.string(label.key, "a label key")
            if label.str:
                strings.setdefault(key, []).append(self.string(label.str, "a label value"))
            elif label.num or label.num_unit:
                values = numbers.setdefault(key, [])
                if label.num_unit:
                    key_units = units.setdefault(key, [])
                    key_units.extend([""] * (len(values) - len(key_units)))
                    key_units.append(self.string(label.num_unit, "a label unit"))
                values.append(label.num)
        if not strings and not numbers:
            return None
        for key, key_units in units.items():
            key_units.extend([""] * (len(numbers[key]) - len(key_units)))
        return Labels(
            tuple((k, tuple(strings[k])) for k in sorted(strings)),
            tuple((k, tuple(numbers[k]), tuple(units.get(k, ()))) for k in sorted(numbers)),
        )


def _check_ids(ids: Sequence[int], what: str) -> None:
    if 0 in ids:
        raise ProfileError(f"malformed profile: found {what} with reserved id 0")
    if len(set(ids)) != len(ids):
        seen: set[int] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise ProfileError(f"malformed profile: multiple {what}s with id {dup}")


class _StringTable:
    """Interns strings for encoding; index 0 is the empty string."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {"": 0}

    def __call__(self, s: str) -> int:
        index = self.index
        i = index.get(s)
        if i is None:
            i = index[s] = len(index)
        return i


def _to_message(p: Profile) -> pb.Profile:
    """Build the protobuf message, interning strings in google/pprof's order."""
    intern = _StringTable()
    msg = pb.Profile()
    for st in p.sample_types:
        msg.sample_type.add(type=intern(st.type), unit=intern(st.unit))
    add_sample = msg.sample.add
    for s in p.samples:
        if s.labels is None:
            add_sample(location_id=s.location_ids, value=s.values)
        else:
            add_sample(location_id=s.location_ids, value=s.values, label=_encode_labels(s.labels, intern))
    for m in p.mappings:
        msg.mapping.add(
            id=m.id,
            memory_start=m.start,
            memory_limit=m.limit,
            file_offset=m.offset,
            filename=intern(m.file),
            build_id=intern(m.build_id),
            has_functions=m.has_functions,
            has_filenames=m.has_filenames,
            has_line_numbers=m.has_line_numbers,
            has_inline_frames=m.has_inline_frames,
        )
    Line_ = pb.Line
    add_location = msg.location.add
    for loc in p.locations:
        add_location(
            id=loc.id,
            mapping_id=loc.mapping_id,
            address=loc.address,
            line=[Line_(function_id=f, line=n, column=c) for f, n, c in loc.lines],
            is_folded=loc.is_folded,
        )
    add_function = msg.function.add
    for fn in p.functions:
        add_function(
            id=fn.id,
            name=intern(fn.name),
            system_name=intern(fn.system_name),
            filename=intern(fn.filename),
            start_line=fn.start_line,
        )
    msg.comment.extend([intern(c) for c in p.comments])
    msg.drop_frames = intern(p.drop_frames)
    msg.keep_frames = intern(p.keep_frames)
    msg.time_nanos = p.time_nanos
    msg.duration_nanos = p.duration_nanos
    msg.period_type.type = intern(p.period_type.type)
    msg.period_type.unit = intern(p.period_type.unit)
    msg.period = p.period
    msg.default_sample_type = intern(p.default_sample_type)
    msg.doc_url = intern(p.doc_url)
    msg.string_table.extend(intern.index)
    return msg


def _encode_labels(labels: Labels, intern: _StringTable) -> list[pb.Label]:
    out = []
    for key, values in labels.strings:
        k = intern(key)
        out.extend(pb.Label(key=k, str=intern(v)) for v in values)
    for key, values, units in labels.numbers:
        k = intern(key)
        if units:
            out.extend(pb.Label(key=k, num=v, num_unit=intern(u)) for v, u in zip(values, units))
        else:
            out.extend(pb.Label(key=k, num=v) for v in values)
    return out
