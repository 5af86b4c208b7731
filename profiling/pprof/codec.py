"""Reading and writing pprof profiles (gzip or raw protobuf), with google/pprof's validation.

``decode`` accepts exactly what google/pprof's ``profile.ParseData`` accepts for
protobuf input, and rejects the rest with a one-line ``ProfileError``: string
table index 0 must be empty and every string index in range, sample values must
match the sample types, ids must be non-zero and unique, samples and lines must
point at known locations and functions, and concatenated profiles are refused.
A location naming an unknown mapping loses the mapping, as upstream does.

``precheck.py`` checks an upload against the same rules without building the
tables. The rules it needs are stated once, here: it uses this module's wire-type
checks (``check_wire_types``, ``packed_scalars``) and predicates
(``indices_in_range``, ``ids_distinct``), and anything its quick check is unsure
of comes back to ``decode_raw_tables``, so the two cannot disagree.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate, chain, count, repeat
from operator import attrgetter

from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from ..errors import ProfileError, ProfileTooLargeError
from .model import Labels, Mapping, Profile, ValueType
from .proto import columns_pb2 as cols
from .proto import profile_pb2 as pb
from .tables import Header, ProfileTables, from_profile, to_profile

DEFAULT_MAX_DECOMPRESSED = 512 << 20
# Merged profiles are rewritten on every merge; level 1 deflates about three
# times faster than the usual 6 for some 10% more bytes.
DEFAULT_COMPRESSLEVEL = 1
_INFLATE_STEP = 256 << 10
GZIP_MAGIC = b"\x1f\x8b"

_function_fields = attrgetter("id", "name", "system_name", "filename", "start_line")
_location_fields = attrgetter("id", "mapping_id", "address", "line", "is_folded")
_line_fields = attrgetter("function_id", "line", "column")
_sample_fields = attrgetter("location_id", "value", "label")


def decompress(data: bytes, limit: int = DEFAULT_MAX_DECOMPRESSED) -> bytes | bytearray:
    """Return ``data`` gunzipped (all members) if it is gzip, else as is.

    Raises ProfileTooLargeError as soon as inflating has produced more than
    ``limit`` bytes, so a gzip bomb costs at most about ``limit`` bytes of
    memory, and ProfileError for gzip data that is cut short (``unexpected end
    of gzip data (truncated)``) or corrupt (``corrupt gzip data (...)``, saying
    what: checksum, size field, header, deflate data or trailing bytes).
    """
    if not data.startswith(GZIP_MAGIC):
        if len(data) > limit:
            raise ProfileTooLargeError(f"profile is larger than the limit of {limit} bytes")
        return data
    # The trailer's size field is only true of a whole stream: a truncated file
    # ends in whatever four bytes were cut there. When it claims more than the
    # limit, the input can only be refused (zlib checks the field of a whole
    # stream), so it is first inflated without keeping the output, to learn at
    # no cost in memory whether it is too large, truncated or corrupt.
    if len(data) >= 18 and int.from_bytes(data[-4:], "little") > limit:
        _inflate(data, limit, keep=False)
    return _inflate(data, limit, keep=True)


def _inflate(data: bytes, limit: int, *, keep: bool) -> bytearray:
    """Inflate every gzip member of ``data``, up to ``limit`` bytes; without ``keep``,
    only count the output (and return nothing).

    Input is fed and output taken in steps of ``_INFLATE_STEP``, so that besides
    the output itself this holds a few steps of memory, and the part of the input
    zlib has not taken yet (which it copies on every call) stays small.
    """
    out = bytearray()
    size = 0
    fed = 0  # bytes of data handed to zlib so far
    first_member = True
    inflater = zlib.decompressobj(wbits=31)
    pending = b""  # input handed over but not yet taken, because the output step was full
    try:
        while True:
            if not pending:
                pending = data[fed : fed + _INFLATE_STEP]
                fed += len(pending)
            piece = inflater.decompress(pending, _INFLATE_STEP)
            progressed = bool(piece) or len(inflater.unconsumed_tail) < len(pending)
            pending = inflater.unconsumed_tail
            size += len(piece)
            if size > limit:
                raise ProfileTooLargeError(f"decompressed profile is larger than the limit of {limit} bytes")
            if keep:
                out += piece
            if inflater.eof:
                fed -= len(inflater.unused_data)  # the next member starts there
                if fed == len(data):
                    return out
                inflater = zlib.decompressobj(wbits=31)
                pending = b""
                first_member = False
            elif not progressed:
                raise ProfileError("decompressing profile: unexpected end of gzip data (truncated)")
    except zlib.error as exc:
        raise ProfileError(f"decompressing profile: corrupt gzip data ({_corruption(exc, first_member)})") from None


_GZIP_HEADER_PROBLEMS = frozenset(
    {"incorrect header check", "unknown compression method", "unknown header flags set", "header crc mismatch"}
)


def _corruption(exc: zlib.error, first_member: bool) -> str:
    """What is wrong with gzip data, said of the gzip format rather than in zlib's words.

    zlib's message ends in its reason, e.g. ``Error -3 while decompressing data:
    incorrect data check``; the trailer's two checks get names a user knows.
    """
    reason = str(exc).rpartition(": ")[2]
    if reason == "incorrect data check":
        return "CRC-32 checksum mismatch"
    if reason == "incorrect length check":
        return "the gzip trailer's size field does not match the data"
    if reason in _GZIP_HEADER_PROBLEMS:
        if not first_member:
            return "bytes after the gzip stream are not another gzip member"
        return f"bad gzip header: {reason}"
    return f"bad deflate data: {reason}"


def decode(data: bytes, *, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> Profile:
    """Decode and validate a pprof profile, gzip-compressed or raw."""
    return to_profile(decode_tables(data, max_decompressed=max_decompressed))


def decode_tables(data: bytes, *, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> ProfileTables:
    """Decode and validate a pprof profile into columns (see tables.py)."""
    return decode_raw_tables(decompress(data, max_decompressed))


def decode_raw_tables(raw: bytes | bytearray) -> ProfileTables:
    """``decode_tables`` for uncompressed protobuf (``decompress``'s output)."""
    if not raw:
        raise ProfileError("empty profile")
    try:
        typed = cols.ByteStringProfile.FromString(raw)
        rows = cols.ProfileRows.FromString(raw)
    except DecodeError:
        raise ProfileError("not a pprof profile: invalid protobuf data") from None
    if any(rows.time_nanos[:-1]):
        raise ProfileError("concatenated profiles detected")
    # A row's bytes are never shorter than its re-serialization and are exactly as
    # long only when canonical (up to the order of its fields, which does not
    # matter to columns). The two messages differ only in functions and
    # locations being typed or bytes, so equal sizes mean every row is canonical.
    canonical = typed.ByteSize() == rows.ByteSize()
    return _Decoder(typed, rows, canonical).tables()


def comments_of(data: bytes, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED) -> list[str]:
    """A profile's comments, read without decoding the rest (merged profiles carry their labels there)."""
    try:
        msg = cols.ByteStringProfile.FromString(decompress(data, max_decompressed))
    except DecodeError:
        raise ProfileError("not a pprof profile: invalid protobuf data") from None
    strings = msg.string_table
    return [strings[i].decode("utf-8", "replace") for i in msg.comment if 0 <= i < len(strings)]


def encode(profile: Profile | ProfileTables, *, compresslevel: int = DEFAULT_COMPRESSLEVEL) -> bytes:
    """Serialize a profile to gzip-compressed protobuf, as ``go tool pprof`` writes it."""
    return compress(encode_raw(profile), compresslevel=compresslevel)


def compress(raw: bytes, *, compresslevel: int = DEFAULT_COMPRESSLEVEL) -> bytes:
    """``raw`` as one gzip member (what ``decompress`` reads back)."""
    deflate = zlib.compressobj(compresslevel, zlib.DEFLATED, 31)  # 31: gzip framing
    return deflate.compress(raw) + deflate.flush()


def encode_raw(profile: Profile | ProfileTables) -> bytes:
    """Serialize a profile to uncompressed protobuf."""
    tables = profile if isinstance(profile, ProfileTables) else from_profile(profile)
    return _to_message(tables).SerializeToString()


class _Decoder:
    """Turns one parsed message into validated ProfileTables.

    Functions and locations are read as columns: all rows of a table are
    concatenated and parsed as one message whose repeated fields collect each
    field of every row. That is exact when every row is canonical (each field
    at most once, zeros left out, shortest encodings, as Go writes them) and a
    column lines up with the rows: every row set that field, or none did.
    Otherwise the table is read row by row, which gives the same result more
    slowly.
    """

    def __init__(self, typed: cols.ByteStringProfile, rows: cols.ProfileRows, canonical: bool) -> None:
        self.msg = typed
        self.rows = rows
        self.canonical = canonical
        # google/pprof takes strings as bytes; keep any that are not UTF-8 as they are.
        self.strings: list[str] = list(map(bytes.decode, typed.string_table, _UTF8, _SURROGATES))
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
        if not indices_in_range(indices, len(strings)):
            bad = next(i for i in indices if not 0 <= i < len(strings))
            self.string(bad, what)
        return list(map(strings.__getitem__, indices))

    def tables(self) -> ProfileTables:
        msg = self.msg
        check_wire_types(chain([msg, msg.period_type], msg.sample_type, msg.mapping))
        t = ProfileTables()
        sample_types = tuple(self.value_type(vt, "sample type") for vt in msg.sample_type)
        t.header = Header(
            sample_types=sample_types,
            period_type=self.value_type(msg.period_type, "period type"),
            period=msg.period,
            time_nanos=msg.time_nanos,
            duration_nanos=msg.duration_nanos,
            comments=tuple(self.strings_at(list(msg.comment), "a comment")),
            drop_frames=self.string(msg.drop_frames, "drop_frames"),
            keep_frames=self.string(msg.keep_frames, "keep_frames"),
            default_sample_type=self.string(msg.default_sample_type, "default_sample_type"),
            doc_url=self.string(msg.doc_url, "doc_url"),
        )
        t.mappings = self.mappings()
        self.functions(t)
        self.locations(t)
        self.samples(t, len(sample_types))
        return t

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

    def functions(self, t: ProfileTables) -> None:
        raws = self.rows.function
        n = len(raws)
        if not n:
            return
        columns = None
        if self.canonical:
            joined = b"".join(raws)
            if not packed_scalars(cols.ScalarsAsBytes, joined):
                table = cols.FunctionColumns.FromString(joined)
                check_wire_types([table])
                columns = _columns(n, table.id, table.name, table.system_name, table.filename, table.start_line)
        if columns is None:
            check_wire_types(self.msg.function)
            columns = [list(c) for c in zip(*map(_function_fields, self.msg.function))]
        ids, names, system_names, filenames, start_lines = columns
        _check_ids(ids, "function")
        t.function_ids = ids
        t.function_names = self.strings_at(names, "a function name")
        t.function_system_names = self.strings_at(system_names, "a function system name")
        t.function_filenames = self.strings_at(filenames, "a function filename")
        t.function_start_lines = start_lines

    def locations(self, t: ProfileTables) -> None:
        raws = self.rows.location
        if not raws:
            return
        if not (self.canonical and self._location_columns(t, raws)):
            self._location_rows(t, self.msg.location)
        _check_ids(t.location_ids, "location")
        mapping_ids = {m.id for m in t.mappings}
        if not mapping_ids.issuperset(t.location_mapping_ids):
            # google/pprof drops a reference to an unknown mapping
            t.location_mapping_ids = [m if m in mapping_ids else 0 for m in t.location_mapping_ids]
        unknown = set(t.line_function_ids).difference(t.function_ids)
        if unknown:
            bad = min(unknown)
            line = t.line_function_ids.index(bad)
            loc = next(i for i, end in enumerate(t.line_starts[1:]) if line < end)
            loc_id = t.location_ids[loc]
            if bad == 0:
                raise ProfileError(f"malformed profile: location {loc_id} has a line with no function")
            raise ProfileError(f"malformed profile: location {loc_id} has a line with unknown function {bad}")

    @staticmethod
    def _location_columns(t: ProfileTables, raws: Sequence[bytes]) -> bool:
        n = len(raws)
        # An empty Line (field 4, length 0) after each location marks where its
        # lines end; a real Line is never empty, as its function id is non-zero.
        joined = _LINE_END.join(raws)
        if packed_scalars(cols.LocationScalarsAsBytes, joined):
            return False
        table = cols.LocationColumns.FromString(joined)
        check_wire_types([table])
        columns = _columns(n, table.id, table.mapping_id, table.address)
        entries = list(table.line)
        ends = [i for i, entry in enumerate(entries) if not entry]
        if columns is None or len(ends) != n - 1 or len(table.is_folded) not in (0, n):
            return False
        line_raws = [entry for entry in entries if entry]
        m = len(line_raws)
        joined_lines = b"".join(line_raws)
        if packed_scalars(cols.ScalarsAsBytes, joined_lines):
            return False
        lines = cols.LineColumns.FromString(joined_lines)
        check_wire_types([lines])
        line_columns = _columns(m, lines.function_id, lines.line, lines.column)
        if line_columns is None or (m and not all(line_columns[0])):
            return False
        t.location_ids, t.location_mapping_ids, t.location_addresses = columns
        t.location_folded = list(table.is_folded) or [False] * n
        ends.append(len(entries))
        t.line_starts = [0, *(end - k for k, end in enumerate(ends))]
        t.line_function_ids, t.line_numbers, t.line_columns = line_columns
        return True

    @staticmethod
    def _location_rows(t: ProfileTables, locations: Sequence[pb.Location]) -> None:
        check_wire_types(chain(locations, chain.from_iterable(loc.line for loc in locations)))
        rows = list(map(_location_fields, locations))
        ids, mapping_ids, addresses, line_msgs, folded = map(list, zip(*rows))
        t.location_ids, t.location_mapping_ids, t.location_addresses, t.location_folded = (
            ids,
            mapping_ids,
            addresses,
            folded,
        )
        lines = list(map(_line_fields, chain.from_iterable(line_msgs)))
        t.line_starts = [0, *accumulate(map(len, line_msgs))]
        t.line_function_ids = [ln[0] for ln in lines]
        t.line_numbers = [ln[1] for ln in lines]
        t.line_columns = [ln[2] for ln in lines]

    def samples(self, t: ProfileTables, n_types: int) -> None:
        rows = list(map(_sample_fields, self.msg.sample))
        if not rows:
            return
        check_wire_types(self.msg.sample)
        if n_types == 0:
            raise ProfileError("malformed profile: missing sample type information")
        t.sample_location_ids = [tuple(locs) for locs, _, _ in rows]
        t.sample_values = values = [tuple(v) for _, v, _ in rows]
        if any(len(v) != n_types for v in values):
            bad = next(len(v) for v in values if len(v) != n_types)
            raise ProfileError(f"malformed profile: a sample has {bad} values for {n_types} sample types")
        unknown = set(chain.from_iterable(t.sample_location_ids)).difference(t.location_ids)
        if unknown:
            raise ProfileError(f"malformed profile: a sample refers to unknown location {min(unknown)}")
        labelled = [labels for _, _, labels in rows if labels]
        if labelled:
            check_wire_types(chain.from_iterable(labelled))
        t.sample_labels = [self.labels(labels) if labels else None for _, _, labels in rows]

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


_LINE_END = b"\x22\x00"
_UTF8 = repeat("utf-8")
_SURROGATES = repeat("surrogateescape")


def check_wire_types(messages: Iterable[Message]) -> None:
    """Refuse a known field sent with the wrong wire type, as google/pprof's decoder does.

    Protobuf keeps such a field among the unknown fields of its message.
    """
    for msg in messages:
        unknown = UnknownFieldSet(msg)
        if len(unknown):
            known = msg.DESCRIPTOR.fields_by_number
            for field in unknown:
                if field.field_number in known:
                    name = f"{msg.DESCRIPTOR.name}.{known[field.field_number].name}"
                    raise ProfileError(f"malformed profile: field {name} has the wrong wire type")


def packed_scalars(probe: type[Message], rows: bytes) -> bool:
    """Whether ``rows`` (concatenated messages) send a scalar field packed, which
    google/pprof refuses; ``probe`` declares those fields as bytes (see columns.proto).
    """
    return bool(probe.FromString(rows).ListFields())


def _columns(n: int, *fields: Sequence[int]) -> list[list[int]] | None:
    """The fields as columns of ``n`` rows, or None if one does not line up."""
    out = []
    for f in fields:
        if len(f) == n:
            out.append(list(f))
        elif not f:
            out.append([0] * n)
        else:
            return None
    return out


def indices_in_range(indices: Sequence[int], size: int) -> bool:
    """Whether every index points into a table of ``size`` entries (google/pprof's bounds check)."""
    return not indices or (min(indices) >= 0 and max(indices) < size)


def ids_distinct(ids: Sequence[int]) -> bool:
    """Whether ``ids`` are non-zero and unique, as google/pprof requires of mapping, function and location ids."""
    return 0 not in ids and len(set(ids)) == len(ids)


def _check_ids(ids: Sequence[int], what: str) -> None:
    if ids_distinct(ids):
        return
    if 0 in ids:
        raise ProfileError(f"malformed profile: found {what} with reserved id 0")
    if len(set(ids)) != len(ids):
        seen: set[int] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise ProfileError(f"malformed profile: multiple {what}s with id {dup}")


def _to_message(t: ProfileTables) -> cols.ByteStringProfile:
    """Build the protobuf message; strings are numbered in order of first use."""
    strings: defaultdict[str, int] = defaultdict(count().__next__)
    strings[""]  # index 0
    intern = strings.__getitem__
    h = t.header
    msg = cols.ByteStringProfile()
    for st in h.sample_types:
        msg.sample_type.add(type=intern(st.type), unit=intern(st.unit))
    add_sample = msg.sample.add
    for ids, values, labels in zip(t.sample_location_ids, t.sample_values, t.sample_labels):
        if labels is None:
            add_sample(location_id=ids, value=values)
        else:
            add_sample(location_id=ids, value=values, label=_encode_labels(labels, intern))
    for m in t.mappings:
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
    new_line = pb.Line
    lines = [
        new_line(function_id=f, line=n, column=c)
        for f, n, c in zip(t.line_function_ids, t.line_numbers, t.line_columns)
    ]
    starts = t.line_starts
    add_location = msg.location.add
    for loc_id, mapping_id, address, folded, a, b in zip(
        t.location_ids, t.location_mapping_ids, t.location_addresses, t.location_folded, starts, starts[1:]
    ):
        add_location(id=loc_id, mapping_id=mapping_id, address=address, line=lines[a:b], is_folded=folded)
    add_function = msg.function.add
    for row in zip(
        t.function_ids,
        map(intern, t.function_names),
        map(intern, t.function_system_names),
        map(intern, t.function_filenames),
        t.function_start_lines,
    ):
        fid, name, system_name, filename, start_line = row
        add_function(id=fid, name=name, system_name=system_name, filename=filename, start_line=start_line)
    msg.comment.extend(map(intern, h.comments))
    msg.drop_frames = intern(h.drop_frames)
    msg.keep_frames = intern(h.keep_frames)
    msg.time_nanos = h.time_nanos
    msg.duration_nanos = h.duration_nanos
    msg.period_type.type = intern(h.period_type.type)
    msg.period_type.unit = intern(h.period_type.unit)
    msg.period = h.period
    msg.default_sample_type = intern(h.default_sample_type)
    msg.doc_url = intern(h.doc_url)
    msg.string_table.extend([s.encode("utf-8", "surrogateescape") for s in strings])
    return msg


def _encode_labels(labels: Labels, intern: Callable[[str], int]) -> list[pb.Label]:
    out: list[pb.Label] = []
    for key, texts in labels.strings:
        k = intern(key)
        out.extend(pb.Label(key=k, str=intern(v)) for v in texts)
    for key, numbers, units in labels.numbers:
        k = intern(key)
        if units:
            out.extend(pb.Label(key=k, num=v, num_unit=intern(u)) for v, u in zip(numbers, units))
        else:
            out.extend(pb.Label(key=k, num=v) for v in numbers)
    return out
