"""profiling.pprof.codec: what decode rejects (always one-line ProfileError), what it accepts, round trips.

Inputs are built with the protobuf bindings, so each bad case differs from a
valid profile in exactly one way. Where upstream behaviour matters, the
expectation is google/pprof's ``profile.ParseData`` + ``CheckValid``.
"""

from __future__ import annotations

import gzip
import random
import re
import struct
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from google.protobuf.message import DecodeError
from sample_profiles import cpu_profile, heap_profile
from wire_cases import HEADER_RAW, UNUSUAL_ENCODINGS, field_varint, submessage, tag

from profiling.errors import ProfileError, ProfileTooLargeError
from profiling.pprof import (
    DEFAULT_MAX_DECOMPRESSED,
    Function,
    Labels,
    Line,
    Location,
    Mapping,
    Profile,
    Sample,
    ValueType,
    certainly_valid,
    check_pgo_usable,
    decode,
    decode_tables,
    decompress,
    encode,
    encode_raw,
    validate,
)
from profiling.pprof.proto import profile_pb2 as pb

MiB = 1 << 20

STRINGS = [
    "",
    "samples",
    "count",
    "cpu",
    "nanoseconds",
    "main.main",
    "main.helper",
    "main.go",
    "/bin/app",
    "abc123",
    "region",
    "eu",
    "size",
    "bytes",
    "a comment",
    "runtime\\.",
    "^runtime\\.main$",
    "https://example.com/doc",
]
S = {s: i for i, s in enumerate(STRINGS)}
OOB = len(STRINGS)  # the first string index that is out of range


def valid_message() -> pb.Profile:
    """A small valid CPU profile that sets every string-indexed field at least once."""
    m = pb.Profile(string_table=STRINGS)
    m.sample_type.add(type=S["samples"], unit=S["count"])
    m.sample_type.add(type=S["cpu"], unit=S["nanoseconds"])
    m.mapping.add(
        id=1,
        memory_start=0x400000,
        memory_limit=0x500000,
        filename=S["/bin/app"],
        build_id=S["abc123"],
        has_functions=True,
    )
    m.function.add(id=1, name=S["main.main"], system_name=S["main.main"], filename=S["main.go"], start_line=10)
    m.function.add(id=2, name=S["main.helper"], system_name=S["main.helper"], filename=S["main.go"], start_line=20)
    # Location 1: main.helper inlined into main.main (innermost first).
    m.location.add(
        id=1, mapping_id=1, address=0x401000, line=[pb.Line(function_id=2, line=22), pb.Line(function_id=1, line=12)]
    )
    m.location.add(id=2, mapping_id=1, address=0x402000, line=[pb.Line(function_id=1, line=14)])
    m.sample.add(
        location_id=[1, 2],
        value=[3, 30_000_000],
        label=[pb.Label(key=S["region"], str=S["eu"]), pb.Label(key=S["size"], num=64, num_unit=S["bytes"])],
    )
    m.sample.add(location_id=[2], value=[1, 10_000_000])
    m.comment.append(S["a comment"])
    m.drop_frames = S["runtime\\."]
    m.keep_frames = S["^runtime\\.main$"]
    m.time_nanos = 1_700_000_000_000_000_000
    m.duration_nanos = 1_000_000_000
    m.period_type.type = S["cpu"]
    m.period_type.unit = S["nanoseconds"]
    m.period = 10_000_000
    m.default_sample_type = S["cpu"]
    m.doc_url = S["https://example.com/doc"]
    return m


VALID_RAW = valid_message().SerializeToString()
VALID_GZ = gzip.compress(VALID_RAW, mtime=0)


def mutated(mutate: Callable[[pb.Profile], object]) -> Callable[[], bytes]:
    """Bytes of the valid profile after ``mutate`` (built when the test runs)."""

    def build() -> bytes:
        m = valid_message()
        mutate(m)
        return m.SerializeToString()

    return build


def setting(get: Callable[[pb.Profile], object], field: str, value: int = OOB) -> Callable[[], bytes]:
    return mutated(lambda m: setattr(get(m), field, value))


def const(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def without_time(m: pb.Profile) -> bytes:
    m.time_nanos = 0
    return m.SerializeToString()


def assert_profile_error(exc: BaseException, pattern: str) -> None:
    assert type(exc) in (ProfileError, ProfileTooLargeError), f"{type(exc).__name__}: {exc}"
    message = str(exc)
    assert message.strip(), "empty message"
    # Said of a size limit exactly when it is one.
    assert (type(exc) is ProfileTooLargeError) == ("larger than the limit" in message), f"{type(exc).__name__}: {exc}"
    assert "\n" not in message and "\r" not in message, repr(message)
    assert re.search(pattern, message), f"{message!r} does not match {pattern!r}"


def decode_error(data: bytes, **kwargs: int) -> BaseException:
    with pytest.raises(Exception) as info:
        decode(data, **kwargs)
    return info.value


# ----------------------------------------------------------------------------------------------
# Bad inputs: (bytes factory, decode kwargs, regex the one-line message must match)

AFTER_THE_STREAM = r"corrupt gzip data \(bytes after the gzip stream are not another gzip member\)$"

BAD_INPUTS = [
    # Not a profile at all.
    pytest.param(const(b""), {}, r"empty", id="empty-bytes"),
    pytest.param(const(gzip.compress(b"", mtime=0)), {}, r"empty", id="gzip-of-nothing"),
    pytest.param(const(b"\x00\xffgarbage" * 8), {}, r"not a pprof profile|invalid", id="garbage"),
    pytest.param(
        const(b"\x1f\x8b" + b"garbage" * 8), {}, r"corrupt gzip data \(bad gzip header", id="garbage-after-gzip-magic"
    ),
    # Damaged gzip.
    pytest.param(lambda: VALID_GZ[: len(VALID_GZ) // 2], {}, r"truncated|decompress", id="truncated-gzip"),
    pytest.param(lambda: VALID_GZ[:-4], {}, r"truncated|decompress", id="gzip-missing-length-trailer"),
    pytest.param(
        lambda: VALID_GZ[:-8] + bytes(b ^ 0xFF for b in VALID_GZ[-8:-4]) + VALID_GZ[-4:],
        {},
        r"corrupt gzip data \(CRC-32 checksum mismatch\)$",
        id="gzip-bad-crc",
    ),
    pytest.param(lambda: VALID_GZ + b"trailing garbage", {}, AFTER_THE_STREAM, id="gzip-trailing-garbage"),
    pytest.param(lambda: VALID_GZ + bytes(8), {}, AFTER_THE_STREAM, id="gzip-trailing-zero-padding"),
    # Size limits.
    pytest.param(
        lambda: VALID_RAW, {"max_decompressed": len(VALID_RAW) - 1}, r"larger than the limit", id="raw-over-limit"
    ),
    pytest.param(
        lambda: VALID_GZ, {"max_decompressed": len(VALID_RAW) - 1}, r"larger than the limit", id="gzip-over-limit"
    ),
    # String table.
    pytest.param(mutated(lambda m: m.ClearField("string_table")), {}, r"empty string table", id="string-table-empty"),
    pytest.param(
        mutated(lambda m: m.string_table.__setitem__(0, "x")), {}, r"string_table\[0\]", id="string-table-0-not-empty"
    ),
    # A string index out of range, field by field.
    pytest.param(setting(lambda m: m.function[1], "name"), {}, rf"function name.*string {OOB}", id="oob-function-name"),
    pytest.param(
        setting(lambda m: m.function[1], "system_name"),
        {},
        rf"function system name.*string {OOB}",
        id="oob-function-system-name",
    ),
    pytest.param(
        setting(lambda m: m.function[0], "filename"), {}, rf"function filename.*string {OOB}", id="oob-function-filename"
    ),
    pytest.param(
        setting(lambda m: m.mapping[0], "filename"), {}, rf"mapping.*filename.*string {OOB}", id="oob-mapping-filename"
    ),
    pytest.param(
        setting(lambda m: m.mapping[0], "build_id"), {}, rf"mapping.*build_id.*string {OOB}", id="oob-mapping-build-id"
    ),
    pytest.param(
        setting(lambda m: m.sample_type[1], "type"), {}, rf"sample type.*string {OOB}", id="oob-sample-type-type"
    ),
    pytest.param(
        setting(lambda m: m.sample_type[0], "unit"), {}, rf"sample type.*string {OOB}", id="oob-sample-type-unit"
    ),
    pytest.param(setting(lambda m: m.period_type, "type"), {}, rf"period type.*string {OOB}", id="oob-period-type"),
    pytest.param(setting(lambda m: m.period_type, "unit"), {}, rf"period type.*string {OOB}", id="oob-period-unit"),
    pytest.param(
        setting(lambda m: m.sample[0].label[0], "key"), {}, rf"label key.*string {OOB}", id="oob-label-key"
    ),
    pytest.param(
        setting(lambda m: m.sample[0].label[0], "str"), {}, rf"label (value|str).*string {OOB}", id="oob-label-str"
    ),
    pytest.param(
        setting(lambda m: m.sample[0].label[1], "num_unit"),
        {},
        rf"label (unit|num_unit).*string {OOB}",
        id="oob-label-num-unit",
    ),
    pytest.param(mutated(lambda m: m.comment.append(OOB)), {}, rf"comment.*string {OOB}", id="oob-comment"),
    pytest.param(setting(lambda m: m, "drop_frames"), {}, rf"drop_frames.*string {OOB}", id="oob-drop-frames"),
    pytest.param(setting(lambda m: m, "keep_frames"), {}, rf"keep_frames.*string {OOB}", id="oob-keep-frames"),
    pytest.param(
        setting(lambda m: m, "default_sample_type"),
        {},
        rf"default_sample_type.*string {OOB}",
        id="oob-default-sample-type",
    ),
    pytest.param(setting(lambda m: m, "doc_url"), {}, rf"doc_url.*string {OOB}", id="oob-doc-url"),
    pytest.param(
        setting(lambda m: m.function[0], "name", -1), {}, r"function name.*string -1\b", id="negative-string-index"
    ),
    pytest.param(
        setting(lambda m: m.sample[1].label.add(), "key", -5), {}, r"label key.*string -5\b", id="negative-label-key"
    ),
    # Samples.
    pytest.param(
        mutated(lambda m: m.sample[1].value.append(7)), {}, r"3 values.*2 sample types", id="sample-too-many-values"
    ),
    pytest.param(
        mutated(lambda m: m.sample[0].value.pop()), {}, r"1 values.*2 sample types", id="sample-too-few-values"
    ),
    pytest.param(mutated(lambda m: m.ClearField("sample_type")), {}, r"sample type", id="samples-without-sample-types"),
    pytest.param(
        mutated(lambda m: m.sample[1].location_id.append(99)), {}, r"unknown location 99", id="sample-unknown-location"
    ),
    pytest.param(
        mutated(lambda m: m.sample[1].location_id.append(0)), {}, r"unknown location 0\b", id="sample-location-id-0"
    ),
    # Ids of locations, functions and mappings.
    pytest.param(
        mutated(lambda m: m.location.add(id=2, address=0x403000, line=[pb.Line(function_id=1, line=15)])),
        {},
        r"multiple locations.*\b2\b",
        id="duplicate-location-id",
    ),
    pytest.param(
        mutated(lambda m: m.location.add(id=0, address=0x403000, line=[pb.Line(function_id=1, line=15)])),
        {},
        r"(?i)location.*reserved id",
        id="location-id-0",
    ),
    pytest.param(
        mutated(lambda m: m.function.add(id=2, name=S["main.main"])),
        {},
        r"multiple functions.*\b2\b",
        id="duplicate-function-id",
    ),
    pytest.param(
        mutated(lambda m: m.function.add(id=0, name=S["main.main"])),
        {},
        r"(?i)function.*reserved id",
        id="function-id-0",
    ),
    pytest.param(
        mutated(lambda m: m.mapping.add(id=1, filename=S["/bin/app"])),
        {},
        r"multiple mappings.*\b1\b",
        id="duplicate-mapping-id",
    ),
    pytest.param(
        mutated(lambda m: m.mapping.add(id=0, filename=S["/bin/app"])), {}, r"(?i)mapping.*reserved id", id="mapping-id-0"
    ),
    # Lines.
    pytest.param(
        setting(lambda m: m.location[1].line[0], "function_id", 99), {}, r"unknown function 99", id="line-unknown-function"
    ),
    pytest.param(
        setting(lambda m: m.location[0].line[1], "function_id", 0),
        {},
        r"no function|function 0\b",
        id="line-function-id-0",
    ),
    # Concatenated profiles: a time_nanos after a non-zero one.
    pytest.param(lambda: VALID_RAW + VALID_RAW, {}, r"concatenated", id="concatenated-profiles"),
    pytest.param(
        lambda: gzip.compress(VALID_RAW + VALID_RAW, mtime=0), {}, r"concatenated", id="concatenated-profiles-gzip"
    ),
    pytest.param(
        lambda: without_time(valid_message()) + field_varint(9, 5) + field_varint(9, 0),
        {},
        r"concatenated",
        id="time-nanos-5-then-0",
    ),
]


@pytest.mark.parametrize(("make", "kwargs", "pattern"), BAD_INPUTS)
def test_bad_input_raises_one_line_profile_error(make: Callable[[], bytes], kwargs: dict, pattern: str) -> None:
    assert_profile_error(decode_error(make(), **kwargs), pattern)


def test_bad_input_table_mutates_a_valid_profile() -> None:
    """Guard against vacuous bad cases: the profile they are derived from does decode."""
    p = decode(VALID_RAW)
    assert len(p.samples) == 2 and len(p.locations) == 2 and len(p.functions) == 2
    assert decode(VALID_GZ) == p


# ----------------------------------------------------------------------------------------------
# Truncated gzip: a cut file ends in whatever four bytes were there, which its
# gzip trailer's size field then seems to state; it is truncated, not too large.

TRUNCATED = "decompressing profile: unexpected end of gzip data (truncated)"
# Where the tests cut a real profile: a few bytes in, in the middle, the last bytes
# (the trailer's CRC and size), from the start counting up or from the end counting back.
CUTS = [3, 10, 11, 17, 18, 100, 1000, 10000, 20000, 23000, -1, -4, -5, -8, -9, -100]


def cut_at(data: bytes, cut: int) -> bytes:
    assert 0 < abs(cut) < len(data), f"the profile has only {len(data)} bytes"
    return data[:cut]


def sweep_cuts(data: bytes) -> list[int]:
    """Cut points across the whole of ``data`` (every 97th byte, and each of the last 20)."""
    return sorted({*range(2, len(data), 97), *range(len(data) - 20, len(data))})


@pytest.mark.parametrize("cut", CUTS)
def test_truncated_real_profile_is_called_truncated(long_cpu_profile: Path, cut: int) -> None:
    data = cut_at(long_cpu_profile.read_bytes(), cut)
    assert_profile_error(decode_error(data), re.escape(TRUNCATED) + "$")
    assert decision(lambda: validate(data)) == f"ProfileError: {TRUNCATED}"


def test_truncated_real_profiles_at_every_cut_are_called_truncated(
    cpu_profiles: list[Path], long_cpu_profile: Path
) -> None:
    for path in [long_cpu_profile, *cpu_profiles]:
        data = path.read_bytes()
        decisions = {cut: decision(lambda: decompress(data[:cut])) for cut in sweep_cuts(data)}
        wrong = {cut: d for cut, d in decisions.items() if d != f"ProfileError: {TRUNCATED}"}
        assert not wrong, f"{path.name}: {wrong}"
        # Most of these cuts end in bytes that, read as the trailer's size, exceed the limit.
        lying = [cut for cut in decisions if int.from_bytes(data[cut - 4 : cut], "little") > DEFAULT_MAX_DECOMPRESSED]
        assert len(lying) > len(decisions) // 2


def test_overrun_is_profile_too_large_error(cpu_profiles: list[Path]) -> None:
    data = cpu_profiles[0].read_bytes()
    raw = gzip.decompress(data)
    cases = [
        (data, raw, "decompressed profile"),
        (raw, raw, "profile"),
        (data + data, raw + raw, "decompressed profile"),  # two gzip members
    ]
    for given, inflated, what in cases:
        limit = len(inflated) - 1
        message = f"{what} is larger than the limit of {limit} bytes"
        assert decision(lambda: decompress(given, limit)) == f"ProfileTooLargeError: {message}"
        assert decision(lambda: validate(given, max_decompressed=limit)) == f"ProfileTooLargeError: {message}"
        assert decompress(given, limit + 1) == inflated
    # Cut, but what came before the cut is already more than the limit: too large.
    with pytest.raises(ProfileTooLargeError):
        decompress(data[:-100], len(raw) // 2)


def damaged(data: bytes, at: int, value: bytes) -> bytes:
    """``data`` with ``value`` written over its bytes from ``at`` (negative: from the end)."""
    out = bytearray(data)
    at %= len(out)
    out[at : at + len(value)] = value
    return bytes(out)


# A whole real profile damaged in one place: (damage, what the message says after "corrupt gzip data").
CORRUPT_GZIP = {
    "crc": (lambda d: damaged(d, -8, bytes(b ^ 0xFF for b in d[-8:-4])), "(CRC-32 checksum mismatch)"),
    # A size field that claims more than the limit, as a truncated file's last bytes may, yet the
    # file is whole: its size field is wrong, not the data too large.
    "size-over-limit": (lambda d: damaged(d, -4, b"\xff\xff\xff\xff"), "(the gzip trailer's size field does not match the data)"),
    "size-off-by-one": (
        lambda d: damaged(d, -4, (int.from_bytes(d[-4:], "little") + 1).to_bytes(4, "little")),
        "(the gzip trailer's size field does not match the data)",
    ),
    "block-type": (lambda d: damaged(d, 10, b"\xff"), "(bad deflate data: invalid block type)"),
    "method": (lambda d: damaged(d, 2, b"\x07"), "(bad gzip header: unknown compression method)"),
    "flags": (lambda d: damaged(d, 3, b"\xe0"), "(bad gzip header: unknown header flags set)"),
    "trailing-garbage": (lambda d: d + b"\x00" * 16, "(bytes after the gzip stream are not another gzip member)"),
}


@pytest.mark.parametrize("case", list(CORRUPT_GZIP))
def test_corrupt_real_profile_has_its_own_message(long_cpu_profile: Path, case: str) -> None:
    damage, says = CORRUPT_GZIP[case]
    data = damage(long_cpu_profile.read_bytes())
    message = f"decompressing profile: corrupt gzip data {says}"
    assert_profile_error(decode_error(data), re.escape(message) + "$")
    assert decision(lambda: validate(data)) == f"ProfileError: {message}"
    assert decision(lambda: decompress(data)) == f"ProfileError: {message}"


# ----------------------------------------------------------------------------------------------
# Gzip bombs


def gzip_of_zeros(size: int) -> bytes:
    """A gzip member holding ``size`` zero bytes (a multiple of 1 MiB), built cheaply.

    One MiB of zeros is deflated once and ended with a full flush, which makes
    the block independent of what precedes it; the stream repeats that block,
    so neither building nor holding the bomb takes more than about a MiB.
    """
    assert size % MiB == 0
    zero = bytes(MiB)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflater.compress(zero) + deflater.flush(zlib.Z_FULL_FLUSH)
    end = deflater.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(size // MiB):
        crc = zlib.crc32(zero, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return header + block * (size // MiB) + end + struct.pack("<II", crc, size & 0xFFFFFFFF)


def test_gzip_of_zeros_is_a_valid_small_gzip() -> None:
    data = gzip_of_zeros(3 * MiB)
    assert len(data) < 20_000
    assert gzip.decompress(data) == bytes(3 * MiB)


# case id -> (decompressed size, max_decompressed or None for the default)
BOMBS = {
    "600MiB-default-limit": (600 * MiB, None),
    "2MiB-1MiB-limit": (2 * MiB, 1 * MiB),
    "600MiB-1MiB-limit": (600 * MiB, 1 * MiB),
}
_bomb_results: dict[str, tuple[BaseException | None, int]] = {}


def decode_bomb(case: str) -> tuple[BaseException | None, int]:
    """Decode a bomb once per case; returns (exception raised, tracemalloc peak in bytes)."""
    if case not in _bomb_results:
        size, limit = BOMBS[case]
        data = gzip_of_zeros(size)
        kwargs = {} if limit is None else {"max_decompressed": limit}
        error: BaseException | None = None
        tracemalloc.start()
        try:
            try:
                decode(data, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the test checks the type
                error = exc
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        _bomb_results[case] = (error, peak)
    return _bomb_results[case]


@pytest.mark.parametrize("case", list(BOMBS))
def test_gzip_bomb_is_refused(case: str) -> None:
    size, limit = BOMBS[case]
    error, _ = decode_bomb(case)
    assert error is not None, "a gzip bomb decoded"
    assert_profile_error(error, rf"larger than the limit of {limit or DEFAULT_MAX_DECOMPRESSED} bytes")


@pytest.mark.parametrize(
    ("case", "max_peak"),
    [
        # Far below the 600 MiB the bomb inflates to.
        pytest.param("600MiB-1MiB-limit", 8 * MiB, id="600MiB-1MiB-limit"),
        # Under 3/4 of the 2 MiB the bomb inflates to: little more than the 1 MiB limit.
        pytest.param(
            "2MiB-1MiB-limit",
            3 * MiB // 2,
            id="2MiB-1MiB-limit",
        ),
        # Never more than the bomb itself.
        pytest.param(
            "600MiB-default-limit",
            600 * MiB,
            id="600MiB-default-limit",
        ),
    ],
)
def test_gzip_bomb_peak_memory(case: str, max_peak: int) -> None:
    _, peak = decode_bomb(case)
    assert peak < max_peak, f"tracemalloc peak {peak / MiB:.1f} MiB, expected under {max_peak / MiB:.1f} MiB"


# ----------------------------------------------------------------------------------------------
# Valid inputs


def test_minimal_profile_decodes() -> None:
    raw = pb.Profile(string_table=[""]).SerializeToString()
    assert raw == b"\x32\x00"
    assert decode(raw) == Profile()
    assert decode(gzip.compress(raw)) == Profile()


def test_minimal_cpu_profile_decodes() -> None:
    m = pb.Profile(string_table=["", "samples", "count", "f"])
    m.sample_type.add(type=1, unit=2)
    m.function.add(id=1, name=3)
    m.location.add(id=1, line=[pb.Line(function_id=1, line=1)])
    m.sample.add(location_id=[1], value=[5])
    assert decode(m.SerializeToString()) == Profile(
        sample_types=[ValueType("samples", "count")],
        samples=[Sample((1,), (5,))],
        locations=[Location(1, 0, 0, (Line(1, 1),))],
        functions=[Function(1, "f", "", "", 0)],
    )


def test_valid_profile_decodes_every_field() -> None:
    p = decode(VALID_GZ)
    assert p == Profile(
        sample_types=[ValueType("samples", "count"), ValueType("cpu", "nanoseconds")],
        samples=[
            Sample((1, 2), (3, 30_000_000), Labels(strings=(("region", ("eu",)),), numbers=(("size", (64,), ("bytes",)),))),
            Sample((2,), (1, 10_000_000)),
        ],
        mappings=[Mapping(1, 0x400000, 0x500000, 0, "/bin/app", "abc123", has_functions=True)],
        locations=[
            Location(1, 1, 0x401000, (Line(2, 22), Line(1, 12))),
            Location(2, 1, 0x402000, (Line(1, 14),)),
        ],
        functions=[
            Function(1, "main.main", "main.main", "main.go", 10),
            Function(2, "main.helper", "main.helper", "main.go", 20),
        ],
        drop_frames="runtime\\.",
        keep_frames="^runtime\\.main$",
        time_nanos=1_700_000_000_000_000_000,
        duration_nanos=1_000_000_000,
        period_type=ValueType("cpu", "nanoseconds"),
        period=10_000_000,
        comments=["a comment"],
        default_sample_type="cpu",
        doc_url="https://example.com/doc",
    )


def test_unknown_mapping_is_dropped_from_the_location() -> None:
    m = valid_message()
    m.location[0].mapping_id = 42
    p = decode(m.SerializeToString())
    assert [(loc.id, loc.mapping_id) for loc in p.locations] == [(1, 0), (2, 1)]
    assert [mp.id for mp in p.mappings] == [1]


@pytest.mark.parametrize(
    ("times", "expected"),
    [([0, 5], 5), ([0, 0, 5], 5), ([5], 5), ([0], 0), ([0, 0], 0)],
    ids=["0-5", "0-0-5", "5", "0", "0-0"],
)
def test_repeated_time_nanos_after_zero_is_not_concatenation(times: list[int], expected: int) -> None:
    raw = without_time(valid_message()) + b"".join(field_varint(9, t) for t in times)
    assert decode(raw).time_nanos == expected


def test_concatenation_of_a_profile_without_time_is_accepted() -> None:
    """Upstream only refuses a time_nanos that follows a non-zero one."""
    first = field_varint(9, 0) + field_varint(12, 7)  # time_nanos 0, period 7
    assert decode(first + VALID_RAW) == decode(VALID_RAW)
    assert decode(first + without_time(valid_message())).period == 10_000_000


def test_raw_protobuf_decodes_like_gzip() -> None:
    assert not VALID_RAW.startswith(b"\x1f\x8b")
    assert decode(VALID_RAW) == decode(VALID_GZ)


def test_multi_member_gzip_decodes() -> None:
    cut = len(VALID_RAW) // 3
    members = [VALID_RAW[:cut], VALID_RAW[cut : 2 * cut], VALID_RAW[2 * cut :]]
    data = b"".join(gzip.compress(part, mtime=0) for part in members)
    assert decode(data) == decode(VALID_RAW)
    assert decompress(data) == VALID_RAW


def test_limit_is_inclusive() -> None:
    assert decode(VALID_RAW, max_decompressed=len(VALID_RAW)) == decode(VALID_RAW)
    assert decode(VALID_GZ, max_decompressed=len(VALID_RAW)) == decode(VALID_RAW)


def hand_built_profile() -> Profile:
    """Labels of both kinds (units mixed, missing and absent), inlined frames, every header."""
    return Profile(
        sample_types=[ValueType("alloc_objects", "count"), ValueType("alloc_space", "bytes")],
        samples=[
            Sample(
                (1, 2),
                (2, 2048),
                Labels(
                    strings=(("handler", ("/api", "/v2")), ("region", ("eu",))),
                    numbers=(
                        ("latency", (5, 9), ("", "ms")),
                        ("n", (7,), ()),
                        ("size", (512, -1024), ("bytes", "kilobytes")),
                    ),
                ),
            ),
            Sample((2,), (1, 64)),
            Sample((3, 1, 2), (4, 4096), Labels(strings=(("region", ("us",)),))),
        ],
        mappings=[
            Mapping(1, 0x400000, 0x800000, 0x1000, "/bin/svc", "deadbeef", True, True, True, True),
            Mapping(2, 0x7F0000000000, 0x7F0000100000, 0, "/lib/libc.so.6", ""),
        ],
        locations=[
            Location(1, 1, 0x401234, (Line(3, 31, 5), Line(4, 44, 2), Line(1, 12))),
            Location(2, 1, 0x402000, (Line(1, 7),)),
            Location(3, 2, 0x7F0000000100, (Line(2, 0),), True),
        ],
        functions=[
            Function(1, "main.main", "main.main", "main.go", 10),
            Function(2, "memcpy", "__memcpy_avx_unaligned", "", 0),
            Function(3, "main.(*T).helper", "main.(*T).helper", "t.go", 30),
            Function(4, "main.inlined", "main.inlined", "t.go", 40),
        ],
        drop_frames="^runtime\\.",
        keep_frames="",
        time_nanos=1_700_000_000_123_456_789,
        duration_nanos=30_000_000_000,
        period_type=ValueType("space", "bytes"),
        period=524288,
        comments=["first comment", "second comment", "first comment"],
        default_sample_type="alloc_space",
        doc_url="https://example.com/heap",
    )


def random_profile(seed: int, n: int = 200) -> Profile:
    """Many rows whose fields are randomly zero or not, so columns of different lengths meet."""
    rng = random.Random(seed)

    def maybe(value: int) -> int:
        return value if rng.random() < 0.6 else 0

    functions = [
        Function(i, f"pkg.f{i}" if rng.random() < 0.9 else "", f"sys{i}" if rng.random() < 0.5 else "",
                 rng.choice(["", "a.go", "b.go"]), maybe(rng.randrange(1, 5000)))
        for i in range(1, n + 1)
    ]
    locations = []
    for i in range(1, n + 1):
        lines = tuple(
            Line(rng.randrange(1, n + 1), maybe(rng.randrange(1, 9000)), maybe(rng.randrange(1, 120)))
            for _ in range(rng.choice([0, 1, 1, 1, 2, 3]))
        )
        locations.append(Location(i, rng.choice([0, 1, 2]), maybe(rng.randrange(1, 1 << 40)), lines, rng.random() < 0.1))
    samples = [
        Sample(tuple(rng.randrange(1, n + 1) for _ in range(rng.randrange(1, 8))), (rng.randrange(1, 100), maybe(10**7)))
        for _ in range(n)
    ]
    return Profile(
        sample_types=[ValueType("samples", "count"), ValueType("cpu", "nanoseconds")],
        samples=samples,
        mappings=[Mapping(1, 0x1000, 0x2000, 0, "/bin/x"), Mapping(2, 0x3000, 0x4000, 0, "/lib/y", "id")],
        locations=locations,
        functions=functions,
        period_type=ValueType("cpu", "nanoseconds"),
        period=10_000_000,
    )


@pytest.mark.parametrize(
    "make",
    [hand_built_profile, lambda: random_profile(1), lambda: random_profile(2), lambda: random_profile(3)],
    ids=["hand-built", "random-1", "random-2", "random-3"],
)
def test_round_trip(make: Callable[[], Profile]) -> None:
    p = make()
    assert decode(encode(p)) == p
    assert decode(encode_raw(p)) == p
    assert encode(p)[:2] == b"\x1f\x8b" and gzip.decompress(encode(p)) == encode_raw(p)


def test_round_trip_keeps_labels_and_inlined_lines() -> None:
    """The same as test_round_trip[hand-built], spelled out on the parts most easily lost."""
    q = decode(encode(hand_built_profile()))
    assert q.samples[0].labels is not None
    assert dict(q.samples[0].labels.strings)["handler"] == ("/api", "/v2")
    assert [(k, v, u) for k, v, u in q.samples[0].labels.numbers if k == "latency"] == [("latency", (5, 9), ("", "ms"))]
    assert q.samples[1].labels is None
    assert q.locations_by_id()[1].lines == (Line(3, 31, 5), Line(4, 44, 2), Line(1, 12, 0))
    assert q.locations_by_id()[3].is_folded is True


# ----------------------------------------------------------------------------------------------
# Robustness: damaged bytes of a valid profile raise ProfileError and nothing else.


def damaged_inputs(count: int = 3000, seed: int = 20240601) -> Iterator[bytes]:
    """Valid profiles (raw and gzip) cut short, overwritten at random bytes, or with bytes inserted."""
    rng = random.Random(seed)
    sources = [VALID_RAW, VALID_GZ, encode_raw(hand_built_profile())]
    for i in range(count):
        data = bytearray(rng.choice(sources))
        kind = i % 3
        if kind == 0:
            del data[rng.randrange(len(data)) :]
        elif kind == 1:
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        else:
            at = rng.randrange(len(data) + 1)
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
        yield bytes(data)


def test_damaged_inputs_raise_only_profile_error() -> None:
    outcomes = {"ok": 0, "error": 0}
    for data in damaged_inputs():
        try:
            decode(data)
        except ProfileError as exc:
            assert type(exc) is ProfileError
            assert str(exc).strip() and "\n" not in str(exc), repr(str(exc))
            outcomes["error"] += 1
        else:
            outcomes["ok"] += 1
    assert outcomes["error"] > 500 and outcomes["ok"] > 0, outcomes


# ----------------------------------------------------------------------------------------------
# Non-canonical and unusual encodings that google/pprof handles in its own way (checked
# with the toolchain's vendored google/pprof profile package, see tests/pprofref).


def test_truncated_function_message_is_refused() -> None:
    data = HEADER_RAW + submessage(5, b"\x08\x01\x08") + submessage(5, b"\x02")
    with pytest.raises(DecodeError):
        pb.Function.FromString(b"\x08\x01\x08")  # the bindings agree the row is truncated
    assert_profile_error(decode_error(data), r"invalid|malformed|truncated")


def test_function_without_id_is_refused_even_next_to_a_repeated_id() -> None:
    f1 = pb.Function(id=1, name=3).SerializeToString() + field_varint(1, 7)
    f2 = pb.Function(name=4).SerializeToString()
    assert_profile_error(decode_error(HEADER_RAW + submessage(5, f1) + submessage(5, f2)), r"(?i)reserved id")


def test_repeated_scalar_field_in_a_function_keeps_the_last_value() -> None:
    f1 = pb.Function(id=1, name=3, start_line=5).SerializeToString() + field_varint(5, 6)
    f2 = pb.Function(id=2, name=4).SerializeToString()
    p = decode(HEADER_RAW + submessage(5, f1) + submessage(5, f2))
    assert [(f.id, f.start_line) for f in p.functions] == [(1, 6), (2, 0)]


def test_repeated_scalar_field_in_a_line_keeps_the_last_value() -> None:
    ln1 = pb.Line(function_id=1, line=10).SerializeToString() + field_varint(2, 11)
    ln2 = pb.Line(function_id=1).SerializeToString()
    loc = pb.Location(id=1).SerializeToString() + submessage(4, ln1) + submessage(4, ln2)
    fn = submessage(5, pb.Function(id=1, name=3).SerializeToString())
    p = decode(HEADER_RAW + fn + submessage(4, loc))
    assert p.locations[0].lines == (Line(1, 11), Line(1, 0))


def test_wrong_wire_type_is_refused() -> None:
    assert_profile_error(decode_error(HEADER_RAW + tag(9, 2) + b"\x01\x05"), r"invalid|malformed")


@pytest.mark.parametrize("case", list(UNUSUAL_ENCODINGS))
def test_unusual_encodings_are_decided_as_google_pprof_does(case: str) -> None:
    data, accepted = UNUSUAL_ENCODINGS[case]
    if accepted:
        decode(data)
    else:
        assert_profile_error(decode_error(data), r"invalid|malformed|truncated|reserved id")


def test_packed_scalar_in_a_row_names_the_field() -> None:
    for case, field in [
        ("function id packed", "Function.id"),
        ("function start_line packed", "Function.start_line"),
        ("location id packed", "Location.id"),
        ("line function_id packed", "Line.function_id"),
        ("label key packed", "Label.key"),
    ]:
        assert_profile_error(decode_error(UNUSUAL_ENCODINGS[case][0]), rf"field {field} has the wrong wire type")


def test_non_utf8_string_is_accepted() -> None:
    raw = pb.Profile(string_table=["", "f"]).SerializeToString().replace(b"f", b"\xff")
    decode(raw)


# ----------------------------------------------------------------------------------------------
# validate: the quick check for uploads decides exactly as the decoder (and the PGO check) do.


def decision(check: Callable[[], object]) -> str | None:
    """None if ``check`` passes, else its ProfileError's type and message."""
    try:
        check()
    except ProfileError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def full_decision(data: bytes, require_pgo: bool, **kwargs: int) -> str | None:
    def check() -> None:
        tables = decode_tables(data, **kwargs)
        if require_pgo:
            check_pgo_usable(tables)

    return decision(check)


def assert_validate_agrees(data: bytes, require_pgo: bool = False, **kwargs: int) -> str | None:
    expected = full_decision(data, require_pgo, **kwargs)
    assert decision(lambda: validate(data, require_pgo=require_pgo, **kwargs)) == expected
    return expected


@pytest.mark.parametrize(("make", "kwargs", "pattern"), BAD_INPUTS)
def test_validate_refuses_bad_input_as_decode(make: Callable[[], bytes], kwargs: dict, pattern: str) -> None:
    assert assert_validate_agrees(make(), **kwargs) is not None


@pytest.mark.parametrize("case", list(UNUSUAL_ENCODINGS))
def test_validate_decides_unusual_encodings_as_decode(case: str) -> None:
    data, accepted = UNUSUAL_ENCODINGS[case]
    assert (assert_validate_agrees(data) is None) == accepted


def test_validate_decides_damaged_inputs_as_decode() -> None:
    refused = sum(assert_validate_agrees(data) is not None for data in damaged_inputs())
    assert refused > 500


@pytest.mark.parametrize(
    "profile",
    [
        cpu_profile(),
        cpu_profile(start_line=0),
        heap_profile(),
        Profile(sample_types=[ValueType("samples", "count")]),
        Profile(
            sample_types=[ValueType("samples", "count")],
            samples=[Sample((1,), (-1,))],
            locations=[Location(1, 0, 0, (Line(1, 3),))],
            functions=[Function(1, "f", "f", "f.go", 1)],
        ),
        Profile(
            sample_types=[ValueType("samples", "count")],
            samples=[Sample((), (2,)), Sample((1,), (0,))],
            locations=[Location(1, 0, 0, (Line(1, 3),))],
            functions=[Function(1, "f", "f", "f.go", 0)],
        ),
        hand_built_profile(),
    ],
    ids=["cpu", "no start_line", "heap", "no samples", "negative weight", "no weighed location", "hand-built"],
)
def test_validate_checks_pgo_use_as_check_pgo_usable(profile: Profile) -> None:
    for data in (encode(profile), encode_raw(profile)):
        assert_validate_agrees(data, require_pgo=True)
        assert_validate_agrees(data, require_pgo=False)


def test_validate_takes_the_quick_path_for_well_formed_profiles() -> None:
    # (real Go profiles: tests/test_go_toolchain.py)
    assert certainly_valid(encode_raw(hand_built_profile()), require_pgo=False)
    assert certainly_valid(encode_raw(cpu_profile()), require_pgo=True)
    assert not certainly_valid(encode_raw(cpu_profile(start_line=0)), require_pgo=True)
