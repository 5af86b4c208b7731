"""Hand-encoded protobuf for profiles that are valid protobuf but unusual, and whether
google/pprof accepts each.

The decisions are checked against the toolchain's vendored google/pprof by
tests/test_go_toolchain.py, and against our decoder by tests/test_codec.py.
"""

from __future__ import annotations

from profiling.pprof.proto import profile_pb2 as pb


def tag(field: int, wire_type: int) -> bytes:
    return bytes([(field << 3) | wire_type])


def submessage(field: int, body: bytes) -> bytes:
    assert len(body) < 128
    return tag(field, 2) + bytes([len(body)]) + body


def field_varint(field: int, value: int) -> bytes:
    """One varint-typed field, encoded even when ``value`` is 0 (proto3 would omit it)."""
    out = bytearray([field << 3])
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def packed(field: int, value: int) -> bytes:
    """A scalar field sent length-delimited, as a packed repeated field of one element."""
    return submessage(field, field_varint(0, value)[1:])


HEADER_RAW = pb.Profile(
    string_table=["", "samples", "count", "f", "g"], sample_type=[pb.ValueType(type=1, unit=2)]
).SerializeToString()
FUNCTION_7 = submessage(5, field_varint(1, 7) + field_varint(2, 3))
LOCATION_2 = submessage(4, field_varint(1, 2) + submessage(4, field_varint(1, 7)))
LINE_7_REPEATED = field_varint(1, 7) + field_varint(2, 10) + field_varint(2, 11)  # Line.line twice

# name -> (profile bytes, whether google/pprof's decoder accepts them)
UNUSUAL_ENCODINGS: dict[str, tuple[bytes, bool]] = {
    "truncated function row": (HEADER_RAW + submessage(5, b"\x08\x01\x08") + submessage(5, b"\x02"), False),
    "function without id next to a repeated id": (
        HEADER_RAW + submessage(5, field_varint(1, 1) + field_varint(1, 7)) + submessage(5, field_varint(2, 4)),
        False,
    ),
    "repeated scalar in a function": (
        HEADER_RAW + submessage(5, field_varint(1, 1) + field_varint(5, 5) + field_varint(5, 6)),
        True,
    ),
    "repeated scalar in a line": (
        HEADER_RAW
        + FUNCTION_7
        + submessage(4, field_varint(1, 1) + submessage(4, LINE_7_REPEATED)),
        True,
    ),
    "explicit zero fields": (HEADER_RAW + submessage(5, field_varint(1, 7) + field_varint(3, 0)), True),
    "time_nanos length-delimited": (HEADER_RAW + tag(9, 2) + b"\x01\x05", False),
    "function id packed": (HEADER_RAW + submessage(5, packed(1, 7) + field_varint(2, 3)), False),
    "function start_line packed": (HEADER_RAW + submessage(5, field_varint(1, 7) + packed(5, 9)), False),
    "location id packed": (HEADER_RAW + FUNCTION_7 + submessage(4, packed(1, 2)), False),
    "line function_id packed": (
        HEADER_RAW + FUNCTION_7 + submessage(4, field_varint(1, 2) + submessage(4, packed(1, 7))),
        False,
    ),
    "label key packed": (
        HEADER_RAW + FUNCTION_7 + LOCATION_2 + submessage(2, packed(1, 2) + packed(2, 5) + submessage(3, packed(1, 3))),
        False,
    ),
    "sample fields packed": (HEADER_RAW + FUNCTION_7 + LOCATION_2 + submessage(2, packed(1, 2) + packed(2, 5)), True),
    "sample fields unpacked": (
        HEADER_RAW + FUNCTION_7 + LOCATION_2 + submessage(2, field_varint(1, 2) + field_varint(2, 5)),
        True,
    ),
    "unknown field numbers": (
        HEADER_RAW + submessage(5, field_varint(1, 7) + field_varint(9, 1)),
        True,
    ),
}
