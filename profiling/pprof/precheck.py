"""Checking a profile without decoding it: what an upload endpoint needs.

``validate`` accepts exactly what ``codec.decode_tables`` accepts (and, when
asked, what ``trim.check_pgo_usable`` accepts too), and raises the same
``ProfileError`` for the rest, in about 60% of the time: it never builds the
tables. Every check is a C-level pass over a whole column (min, max, a set),
read with the same column messages the decoder uses; one Python step per
sample remains, to count its values.

The quick check only ever says "certainly valid". Anything it is unsure of (a
row that is not canonically encoded, an unknown field, or a real problem) goes
to the full decoder, which then accepts it or gives its usual message, so the
two never disagree. The rules both apply are stated once, in ``codec.py``
(its wire-type checks, ``indices_in_range`` and ``ids_distinct``); what is
here is only how to apply them to whole columns at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import chain

from google.protobuf.message import DecodeError, Message

from ..errors import PgoUnusableError, ProfileError
from .codec import (
    DEFAULT_MAX_DECOMPRESSED,
    check_wire_types,
    decode_raw_tables,
    decompress,
    ids_distinct,
    indices_in_range,
    packed_scalars,
)
from .model import ValueType
from .proto import columns_pb2 as cols
from .trim import check_pgo_usable, pgo_value_index


def validate(data: bytes, *, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED, require_pgo: bool = False) -> None:
    """Raise ProfileError if ``data`` (gzip or raw) is not a valid profile.

    With ``require_pgo``, raise PgoUnusableError (a ProfileError) if it is valid
    but Go's PGO cannot use it, as ``trim.check_pgo_usable`` does.
    """
    raw = decompress(data, max_decompressed)
    if raw and certainly_valid(raw, require_pgo):
        return
    tables = decode_raw_tables(raw)
    if require_pgo:
        check_pgo_usable(tables)


def certainly_valid(raw: bytes | bytearray, require_pgo: bool) -> bool:
    """True only if the full decoder (and the PGO check) would accept ``raw``."""
    try:
        typed = cols.ByteStringProfile.FromString(raw)
        rows = cols.ProfileRows.FromString(raw)
    except DecodeError:
        return False
    # Equal sizes: every location and function row is canonical, so each field
    # appears at most once per row and is absent exactly when zero (see
    # codec.decode_raw_tables).
    if len(rows.time_nanos) > 1 or typed.ByteSize() != rows.ByteSize():
        return False
    if not _wire_types_ok(chain([typed, typed.period_type], typed.sample_type, typed.mapping)):
        return False

    n_strings = len(typed.string_table)
    if not n_strings or typed.string_table[0]:
        return False
    sample_types = typed.sample_type
    header_strings = [typed.drop_frames, typed.keep_frames, typed.default_sample_type, typed.doc_url]
    header_strings += typed.comment
    for vt in (*sample_types, typed.period_type):
        header_strings += (vt.type, vt.unit)
    for m in typed.mapping:
        header_strings += (m.filename, m.build_id)
    if not indices_in_range(header_strings, n_strings) or not ids_distinct([m.id for m in typed.mapping]):
        return False

    joined = b"".join(rows.function)
    functions = cols.FunctionColumns.FromString(joined)
    if packed_scalars(cols.ScalarsAsBytes, joined) or not _wire_types_ok([functions]):
        return False
    function_ids = functions.id
    if (
        len(function_ids) != len(rows.function)  # a function without an id (0)
        or not ids_distinct(function_ids)
        or not all(indices_in_range(c, n_strings) for c in (functions.name, functions.system_name, functions.filename))
    ):
        return False

    joined = b"".join(rows.location)
    locations = cols.LocationColumns.FromString(joined)
    joined_lines = b"".join(locations.line)
    lines = cols.LineColumns.FromString(joined_lines)
    if (
        packed_scalars(cols.LocationScalarsAsBytes, joined)
        or packed_scalars(cols.ScalarsAsBytes, joined_lines)
        or not _wire_types_ok([locations, lines])
    ):
        return False
    location_ids = locations.id
    if (
        len(location_ids) != len(rows.location)
        or not ids_distinct(location_ids)
        or len(lines.function_id) != len(locations.line)  # a line without a function (0)
        or not set(function_ids).issuperset(lines.function_id)
    ):
        return False

    samples = cols.SampleColumns.FromString(b"".join(cols.SampleRows.FromString(raw).sample))
    joined_labels = b"".join(samples.label)
    labels = cols.LabelColumns.FromString(joined_labels)
    if packed_scalars(cols.ScalarsAsBytes, joined_labels) or not _wire_types_ok([samples, labels]):
        return False
    n_types = len(sample_types)
    if (
        (rows.sample and not n_types)
        or any(len(s.value) != n_types for s in typed.sample)
        or not set(location_ids).issuperset(samples.location_id)
        or not all(indices_in_range(c, n_strings) for c in (labels.key, labels.str, labels.num_unit))
    ):
        return False
    return not require_pgo or _pgo_usable(typed, functions, location_ids, samples)


def _pgo_usable(
    typed: cols.ByteStringProfile,
    functions: cols.FunctionColumns,
    location_ids: Sequence[int],
    samples: cols.SampleColumns,
) -> bool:
    """``check_pgo_usable`` on a profile ``certainly_valid`` has checked so far: no negative
    weight, and a start line among the leaf and caller locations of the samples that weigh something.
    """
    strings = typed.string_table
    value_types = [ValueType(_text(strings[vt.type]), _text(strings[vt.unit])) for vt in typed.sample_type]
    try:
        index = pgo_value_index(value_types)
    except PgoUnusableError:
        return False
    weights = samples.value[index :: len(value_types)]  # every sample has one value per type
    if weights and min(weights) < 0:
        return False
    if not any(weights):
        return True  # nothing the compiler would weigh
    if len(functions.start_line) == len(functions.id):  # canonical rows: set means non-zero
        started = set(functions.id)
    else:
        started = {f.id for f in typed.function if f.start_line}
    row_of = dict(zip(location_ids, range(len(location_ids))))
    for sample, weight in zip(typed.sample, weights):
        if weight > 0:
            for location_id in sample.location_id[:2]:
                if not started.isdisjoint(line.function_id for line in typed.location[row_of[location_id]].line):
                    return True
    return False


def _wire_types_ok(messages: Iterable[Message]) -> bool:
    try:
        check_wire_types(messages)
    except ProfileError:
        return False
    return True


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")
