"""Trimming a profile to what Go's profile-guided optimization reads.

The Go compiler (``cmd/internal/pgo``) turns a CPU profile into weighted call
edges ``(caller, call-site line offset from the caller's start_line, callee)``.
It looks only at the leaf location of each sample and its caller, expanding
inlined frames, weights each sample by the first ``samples/count`` or
``cpu/nanoseconds`` value, and counts an edge once per sample. Nothing else in
the profile reaches the compiler.

``trim_for_pgo`` computes that edge map exactly as the compiler does, then
writes the smallest profile with the same map: one sample per distinct edge,
each with two one-line locations (callee, caller), one function per name, and
no labels, addresses, mappings or file names. ``go tool preprofile`` prints the
same bytes for both profiles.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import PgoUnusableError
from .model import Function, Line, Location, Profile, Sample, ValueType
from .tables import ProfileTables

PGO_SAMPLE_TYPES = (("samples", "count"), ("cpu", "nanoseconds"))

# A graph node as the compiler keys it: (function name, address, start line, line).
_Node = tuple[str, int, int, int]


@dataclass(frozen=True, slots=True)
class Edge:
    """A call edge as the compiler keys it: caller, call-site line offset, callee."""

    caller: str
    offset: int  # call-site line minus the caller's start_line
    callee: str


@dataclass(slots=True)
class EdgeMap:
    """The compiler's view of a profile."""

    weights: dict[Edge, int]
    value_index: int
    start_lines: dict[str, int]  # a non-zero start_line per function name, where one exists
    witness: tuple[str, int, int] | None  # (name, start_line, weight) of a node with a start_line

    @property
    def total_weight(self) -> int:
        """The weight of all edges together."""
        return sum(self.weights.values())


def pgo_value_index(sample_types: Sequence[ValueType]) -> int:
    """Index of the sample type the compiler weighs samples by; PgoUnusableError if none."""
    index = next((i for i, st in enumerate(sample_types) if (st.type, st.unit) in PGO_SAMPLE_TYPES), None)
    if index is None:
        types = ", ".join(map(str, sample_types)) or "none"
        raise PgoUnusableError(
            f"not a CPU profile: Go's PGO needs a samples/count or cpu/nanoseconds sample type (has {types})"
        )
    return index


def pgo_edges(p: Profile) -> EdgeMap:
    """Compute the weighted call edges as ``cmd/internal/pgo`` does.

    Raises PgoUnusableError where the compiler would refuse the profile.
    """
    index = pgo_value_index(p.sample_types)
    locations = p.locations_by_id()
    functions = p.functions_by_id()

    node_cache: dict[int, tuple[_Node, ...]] = {}

    def nodes_of(location_id: int) -> tuple[_Node, ...]:
        nodes = node_cache.get(location_id)
        if nodes is None:
            loc = locations[location_id]
            if loc.lines:
                nodes = tuple(
                    (fn.name, loc.address, fn.start_line, line.line)
                    for line in reversed(loc.lines)
                    for fn in (functions[line.function_id],)
                )
            else:
                nodes = (("", loc.address, 0, 0),)
            node_cache[location_id] = nodes
        return nodes

    cum: dict[_Node, int] = defaultdict(int)
    flat: dict[_Node, int] = defaultdict(int)
    edges: dict[tuple[_Node, _Node], int] = defaultdict(int)
    for s in p.samples:
        w = s.values[index]
        if w == 0:
            continue
        if w < 0:
            raise PgoUnusableError("cannot trim a profile with negative sample values for PGO")
        seen_nodes: set[_Node] = set()
        seen_edges: set[tuple[_Node, _Node]] = set()
        parent: _Node | None = None
        ids = s.location_ids
        for i in range(min(1, len(ids) - 1), -1, -1):
            for n in nodes_of(ids[i]):
                saw = n in seen_nodes
                if not saw:
                    seen_nodes.add(n)
                    cum[n] += w
                if parent is not None and n != parent and (not saw or (n, parent) not in seen_edges):
                    seen_edges.add((n, parent))
                    edges[parent, n] += w
                parent = n
        if parent is not None:
            flat[parent] += w

    live = {n for n, v in cum.items() if v} | {n for n, v in flat.items() if v}
    witness = next(((n[0], n[2], cum[n] or flat[n]) for n in live if n[2]), None)
    if live and witness is None:
        raise PgoUnusableError(
            "profile has no Function.start_line data, which Go's PGO needs "
            "(was the program built with Go older than 1.20?)"
        )
    weights: dict[Edge, int] = defaultdict(int)
    start_lines: dict[str, int] = {}
    for (src, dst), w in edges.items():
        if src in live:
            weights[Edge(src[0], src[3] - src[2], dst[0])] += w
            for node in (src, dst):
                if node[2]:
                    start_lines.setdefault(node[0], node[2])
    return EdgeMap(dict(weights), index, start_lines, witness)


def check_pgo_usable(t: ProfileTables) -> None:
    """Raise PgoUnusableError where ``pgo_edges`` would: Go's PGO cannot use this profile.

    Works on the decoded columns, without the row objects and the edge map
    that ``pgo_edges`` builds, for checking uploads cheaply.

    The compiler weighs each sample by its first ``samples/count`` or
    ``cpu/nanoseconds`` value, refuses negative weights, and looks at the leaf
    location and its caller of every sample with a non-zero weight; at least
    one function among those must have a ``start_line``.
    """
    index = pgo_value_index(t.header.sample_types)
    started = {f for f, start_line in zip(t.function_ids, t.function_start_lines) if start_line}
    starts, line_functions = t.line_starts, t.line_function_ids
    row_of = dict(zip(t.location_ids, range(len(t.location_ids))))

    def has_start_line(location_id: int) -> bool:
        row = row_of[location_id]
        return not started.isdisjoint(line_functions[starts[row] : starts[row + 1]])

    live = witnessed = False
    for ids, values in zip(t.sample_location_ids, t.sample_values):
        weight = values[index]
        if weight <= 0 or not ids:
            if weight < 0:
                raise PgoUnusableError("cannot trim a profile with negative sample values for PGO")
            continue
        live = True
        witnessed = witnessed or any(map(has_start_line, ids[:2]))
    if live and not witnessed:
        raise PgoUnusableError(
            "profile has no Function.start_line data, which Go's PGO needs "
            "(was the program built with Go older than 1.20?)"
        )


def trim_for_pgo(p: Profile) -> Profile:
    """The smallest profile that gives Go's PGO the same call edges as ``p``."""
    edge_map = pgo_edges(p)
    builder = _TrimBuilder(edge_map.start_lines)
    ordered = sorted(
        edge_map.weights.items(), key=lambda kv: (-kv[1], kv[0].caller, kv[0].callee, kv[0].offset)
    )
    for edge, weight in ordered:
        caller = builder.function(edge.caller)
        callee = builder.function(edge.callee)
        call_site = caller.start_line + edge.offset
        callee_line = callee.start_line if (callee is not caller or edge.offset != 0) else callee.start_line + 1
        builder.sample([builder.location(callee, callee_line), builder.location(caller, call_site)], weight)
    if edge_map.weights and not any(fn.start_line for fn in builder.functions.values()):
        # Every edge is between functions without start lines; the compiler also
        # wants to see one, so keep the node that had it, on a sample of its own.
        name, start_line, weight = edge_map.witness  # type: ignore[misc]
        fn = builder.new_function(name, start_line)
        builder.sample([builder.location(fn, start_line)], weight)
    return Profile(
        sample_types=[ValueType(*p.sample_types[edge_map.value_index])],
        samples=builder.samples,
        locations=list(builder.locations.values()),
        functions=builder.all_functions,
    )


class _TrimBuilder:
    def __init__(self, start_lines: dict[str, int]) -> None:
        self.start_lines = start_lines
        self.functions: dict[str, Function] = {}
        self.all_functions: list[Function] = []
        self.locations: dict[tuple[int, int], Location] = {}
        self.samples: list[Sample] = []

    def function(self, name: str) -> Function:
        """The one function that stands for every function called ``name``."""
        fn = self.functions.get(name)
        if fn is None:
            fn = self.functions[name] = self.new_function(name, self.start_lines.get(name, 0))
        return fn

    def new_function(self, name: str, start_line: int) -> Function:
        fn = Function(len(self.all_functions) + 1, name, "", "", start_line)
        self.all_functions.append(fn)
        return fn

    def location(self, fn: Function, line: int) -> int:
        key = (fn.id, line)
        loc = self.locations.get(key)
        if loc is None:
            loc = self.locations[key] = Location(len(self.locations) + 1, 0, 0, (Line(fn.id, line),))
        return loc.id

    def sample(self, location_ids: list[int], weight: int) -> None:
        self.samples.append(Sample(tuple(location_ids), (weight,)))
