"""The hottest call edges of a profile: what Go's profile-guided optimization acts on.

The compiler does not read a profile's functions by flat CPU; it reads weighted
call edges, ``caller -> callee`` at a call-site line offset from the caller's
first line (``profiling.pprof.trim.pgo_edges`` computes them exactly as it does), and
inlines and devirtualizes the hottest call sites, those that together make up
most of the total edge weight. So a person checking what a profile will change
wants those edges, each with its share of the total, and how much of the total
the top few cover. The order is ``go tool preprofile``'s: heaviest first, then by
caller, callee and offset.
"""

from __future__ import annotations

from dataclasses import dataclass

from .measurement import percentage
from .model import Profile
from .trim import pgo_edges

__all__ = ["HotEdge", "HotEdges", "hot_edges"]


@dataclass(frozen=True, slots=True)
class HotEdge:
    """One call edge as Go's PGO weighs it, with its share of the total edge weight."""

    caller: str
    callee: str
    offset: int  # call-site line minus the caller's start_line
    weight: int  # samples through this edge, as the compiler counts them
    share: str  # of the total edge weight, as pprof prints a percentage: "12.34%"

    def __str__(self) -> str:
        return f"{self.caller} -> {self.callee} (line +{self.offset})"


@dataclass(frozen=True, slots=True)
class HotEdges:
    """A profile's heaviest call edges, how many edges it has, and what share of the weight the heaviest carry."""

    top: list[HotEdge]
    edges: int  # how many distinct edges the profile has
    total_weight: int
    covered: str  # share of the total weight the ``top`` edges carry: "62.10%"


def hot_edges(profile: Profile, top: int = 10) -> HotEdges:
    """The ``top`` heaviest call edges of ``profile``; PgoUnusableError where Go's PGO would refuse it."""
    weights = pgo_edges(profile).weights
    total = sum(weights.values())
    ordered = sorted(weights.items(), key=lambda item: (-item[1], item[0].caller, item[0].callee, item[0].offset))
    shown = [HotEdge(e.caller, e.callee, e.offset, w, percentage(w, total)) for e, w in ordered[:top]]
    return HotEdges(shown, len(weights), total, percentage(sum(e.weight for e in shown), total))
