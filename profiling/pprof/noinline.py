"""Keeping Go's PGO from inlining functions known to misbehave when inlined.

The compiler reads a CPU profile as weighted call edges ``caller -> callee``
(see ``trim.py``) and inlines the callees of hot edges. It finds a callee by
its full function name, so a profile can keep a function from being inlined
by naming it differently: ``guard_never_inline`` gives every
frame where a guarded function is the callee of such an edge a function of its
own, named with ``NOINLINE_SUFFIX`` (a ``-`` cannot occur in a Go symbol, so
the compiler can never match it). Samples are not dropped, so every weight,
and the total the compiler measures hotness against, stays as it was.

Only the frames the compiler reads are renamed: those of a sample's leaf
location and its caller. Within a sample the renaming is by graph node (a
frame's function, address, start line and line), so the compiler's edges of
the renamed profile are those of the original with the guarded callee's name
changed. A guarded function that calls others from a frame that is also a
callee (another function was inlined into it, or it was inlined into its
caller, in the profiled binary) is the caller of those edges under its new
name too: one frame has one name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from ..errors import PgoUnusableError
from .merging import compact
from .model import Function, Location, Profile, Sample, new_function, new_line, new_location, new_sample
from .trim import pgo_value_index

NOINLINE_SUFFIX = ".autopgo-noinline"

# Functions that PGO's inlining is known to make misbehave, matched on the full Go name.
BUILTIN_NEVER_INLINE: tuple[re.Pattern[str], ...] = (
    # golang/go#65532: inlined into its caller, it grows gRPC's goroutine stacks by up to 35%.
    re.compile(r"^google\.golang\.org/grpc/internal/transport\.\(\*loopyWriter\)\.processData$"),
    # golang/go#74045: inlined, it can deadlock the runtime.
    re.compile(r"^runtime\.gopark$"),
)

# A node of the compiler's call graph: (function name, address, start line, line).
_Node = tuple[str, int, int, int]


def is_guarded(name: str, patterns: Sequence[re.Pattern[str]]) -> bool:
    """Whether ``name`` is searched by one of ``patterns`` and not renamed already."""
    return not name.endswith(NOINLINE_SUFFIX) and any(rx.search(name) for rx in patterns)


def guard_never_inline(p: Profile, patterns: Sequence[re.Pattern[str]]) -> Profile:
    """``p`` with every frame where a function matching ``patterns`` is the callee of a call edge
    of Go's PGO given a renamed copy of that function; ``p`` itself when there is none.

    Guarding a guarded profile changes nothing (renamed functions are not matched again).
    """
    if not patterns:
        return p
    try:
        index = pgo_value_index(p.sample_types)
    except PgoUnusableError:
        return p  # the compiler reads no edges from it
    guarded = {fn.id for fn in p.functions if is_guarded(fn.name, patterns)}
    if not guarded:
        return p
    renamer = _Renamer(p, guarded)
    samples = [renamer.sample(s) if s.values[index] else s for s in p.samples]
    if not renamer.new_locations:
        return p
    functions = [*p.functions, *renamer.new_functions.values()]
    return compact(replace(p, samples=samples, locations=[*p.locations, *renamer.new_locations], functions=functions))


class _Renamer:
    """Rewrites samples, sharing one renamed function per guarded one and one location per variant."""

    def __init__(self, p: Profile, guarded: set[int]) -> None:
        self.guarded = guarded
        self.functions = p.functions_by_id()
        self.locations = p.locations_by_id()
        self.next_function_id = max(self.functions, default=0) + 1
        self.next_location_id = max(self.locations, default=0) + 1
        self.new_functions: dict[int, Function] = {}  # guarded function id -> its renamed copy
        self.new_locations: list[Location] = []
        self.variants: dict[tuple[int, frozenset[int]], int] = {}  # (location, renamed lines) -> location

    def sample(self, s: Sample) -> Sample:
        """``s`` with the guarded callee frames of its leaf location and caller renamed."""
        ids = s.location_ids
        frames = self._frames(ids)
        renamed: set[_Node] = set()
        for (_, _, parent, _), (_, _, node, function_id) in zip(frames, frames[1:]):
            if node != parent and function_id in self.guarded:
                renamed.add(node)
        if not renamed:
            return s
        nodes = {node for _, _, node, _ in frames}
        if any((name + NOINLINE_SUFFIX, *rest) in nodes for name, *rest in renamed):
            return s  # a renamed node would merge with one already there and change the edges
        lines: dict[int, set[int]] = {}
        for pos, i, node, _ in frames:
            if node in renamed:  # every frame of a renamed node, so that no edge but its own changes
                lines.setdefault(pos, set()).add(i)
        new_ids = list(ids)
        for pos, indexes in lines.items():
            new_ids[pos] = self._variant(ids[pos], frozenset(indexes))
        return new_sample((tuple(new_ids), s.values, s.labels))

    def _frames(self, ids: tuple[int, ...]) -> list[tuple[int, int, _Node, int]]:
        """The frames the compiler reads, root first (the caller's, then the leaf's, each outermost
        first), as (position in ``ids``, line index, graph node, function id or 0)."""
        frames = []
        for pos in range(min(1, len(ids) - 1), -1, -1):
            loc = self.locations[ids[pos]]
            if not loc.lines:
                frames.append((pos, 0, ("", loc.address, 0, 0), 0))
            for i in range(len(loc.lines) - 1, -1, -1):
                line = loc.lines[i]
                fn = self.functions[line.function_id]
                frames.append((pos, i, (fn.name, loc.address, fn.start_line, line.line), fn.id))
        return frames

    def _variant(self, location_id: int, indexes: frozenset[int]) -> int:
        """The id of a copy of the location whose lines at ``indexes`` call the renamed functions."""
        key = (location_id, indexes)
        variant = self.variants.get(key)
        if variant is None:
            loc = self.locations[location_id]
            lines = tuple(
                new_line((self._renamed(line.function_id).id, line.line, line.column)) if i in indexes else line
                for i, line in enumerate(loc.lines)
            )
            variant = self.variants[key] = self.next_location_id
            self.next_location_id += 1
            self.new_locations.append(new_location((variant, loc.mapping_id, loc.address, lines, loc.is_folded)))
        return variant

    def _renamed(self, function_id: int) -> Function:
        fn = self.new_functions.get(function_id)
        if fn is None:
            old = self.functions[function_id]
            system_name = old.system_name + NOINLINE_SUFFIX if old.system_name else ""
            fn = new_function((self.next_function_id, old.name + NOINLINE_SUFFIX, system_name, old.filename, old.start_line))
            self.new_functions[function_id] = fn
            self.next_function_id += 1
        return fn
