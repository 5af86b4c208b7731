"""Pruning frames, exactly as google/pprof's ``Profile.Prune`` does.

A frame is pruned when its function matches ``drop`` and not ``keep``. Each
sample is scanned from the root towards the leaf: the leading run of pruned
frames at the root side is left alone (so a sample is never emptied), and at the
first pruned frame after it the sample loses that frame and everything it calls.
When only an inlined frame of a location matches, the location keeps its outer
frames and stays as the new leaf.

Function names are matched after upstream's simplification, which cuts the
argument list at the first ``(`` that is not part of ``(anonymous namespace)``
or ``operator()``, so ``main.(*T).M`` is matched as ``main.``. Patterns are
searched, not anchored, as Go's ``MatchString`` does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace

from .model import Location, Profile, new_location, new_sample

_RESERVED = ("(anonymous namespace)", "operator()")
_BRACKET = re.compile("|".join(re.escape(name) for name in (*_RESERVED, "(")))


def simplify_name(name: str) -> str:
    """Upstream's ``simplifyFunc``: drop a leading '.' and the argument list."""
    if name.startswith("."):
        name = name[1:]
    for match in _BRACKET.finditer(name):
        if match.group() not in _RESERVED:
            return name[: match.start()]
    return name


def prune(p: Profile, drop: re.Pattern[str], keep: re.Pattern[str] | None = None) -> Profile:
    """Return ``p`` with frames pruned as upstream's ``Prune(drop, keep)``.

    Ids stay as they are; locations that no sample uses any more are kept, as
    upstream keeps them (``merge.compact`` drops them).
    """
    matches = _matcher(drop, keep)
    functions = p.functions_by_id()

    prune_whole: set[int] = set()  # the location's outermost frame matches
    prune_beneath: set[int] = set()  # some frame of the location matches
    locations: list[Location] = []
    for loc in p.locations:
        lines = loc.lines
        i = len(lines) - 1
        while i >= 0:
            name = functions[lines[i].function_id].name
            if name and matches(name):
                break
            i -= 1
        if i >= 0:
            prune_beneath.add(loc.id)
            if i == len(lines) - 1:
                prune_whole.add(loc.id)
            else:
                loc = new_location((loc.id, loc.mapping_id, loc.address, lines[i + 1 :], loc.is_folded))
        locations.append(loc)

    samples = []
    for s in p.samples:
        ids = s.location_ids
        found_user = False
        for i in range(len(ids) - 1, -1, -1):
            lid = ids[i]
            if lid not in prune_whole and lid not in prune_beneath:
                found_user = True
                continue
            if not found_user:
                continue
            if lid in prune_whole:
                s = new_sample((ids[i + 1 :], s.values, s.labels))
            else:
                s = new_sample((ids[i:], s.values, s.labels))
            break
        samples.append(s)

    return replace(p, locations=locations, samples=samples)


def _matcher(drop: re.Pattern[str], keep: re.Pattern[str] | None) -> Callable[[str], bool]:
    cache: dict[str, bool] = {}

    def matches(name: str) -> bool:
        hit = cache.get(name)
        if hit is None:
            simple = simplify_name(name)
            hit = cache[name] = bool(drop.search(simple)) and not (keep is not None and keep.search(simple))
        return hit

    return matches


