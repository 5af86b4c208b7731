"""What a merge did, as the markdown a person reads in the Prefect UI (the ``merge-<app>`` artifact).

It leads with what Go's PGO will act on, the hottest call edges and the share of
the total the top ones cover, then the inputs merged and rejected, the
profile's size in full and trimmed to what the compiler reads (what
``?trim=pgo`` serves), and the top functions by flat value as ``go tool pprof
-top`` lists them. Values are formatted as pprof prints them
(``profiling.pprof.measurement``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from ..errors import PgoUnusableError
from ..pprof import encode, hot_edges, percentage, size_label, summarize, trim_for_pgo
from .batches import MergeReport

__all__ = ["merge_markdown", "merge_failure_markdown"]

TOP = 10


def merge_markdown(report: MergeReport) -> str:
    """The artifact of a merge that merged or rejected something."""
    lines = [f"# Merge of `{report.app}`", ""]
    profile = report.profile
    trimmed = "-"
    edges_part: list[str] = []
    if profile is not None and profile.samples:
        try:
            edges = hot_edges(profile, TOP)
            trimmed = size_label(len(encode(trim_for_pgo(profile))))
        except PgoUnusableError as exc:
            edges_part = [f"Go's PGO cannot use this profile: {exc}", ""]
        else:
            edges_part = [
                f"The top {len(edges.top)} of {edges.edges} call edges carry {edges.covered} of the edge weight "
                "Go's PGO reads.",
                "",
                "| share | samples | call edge |",
                "| ---: | ---: | --- |",
                *(f"| {e.share} | {e.weight} | `{e}` |" for e in edges.top),
                "",
            ]
    lines += [
        "| inputs merged | rejected | batches | samples | size | trimmed for PGO | size before |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {len(report.merged)} | {len(report.rejected)} | {report.batches} | {report.samples} "
        f"| {size_label(report.size_after)} | {trimmed} | {size_label(report.size_before)} |",
        "",
    ]
    lines += [f"- rejected `{key}`: {reason}" for key, reason in report.rejected]
    if report.rejected:
        lines.append("")
    lines += _parts_lines(report)
    if edges_part:
        lines += ["## Hottest call edges", "", *edges_part]
    if profile is not None and profile.samples:
        summary = summarize(profile, top=TOP)
        lines += [
            f"## Top functions by flat {summary.value_type}",
            "",
            "| flat | flat% | cum | cum% | function |",
            "| ---: | ---: | ---: | ---: | --- |",
            *(
                f"| {f.flat_label} | {f.flat_percent} | {f.cum_label} | {f.cum_percent} | `{f.name}` |"
                for f in summary.top
            ),
        ]
    return "\n".join(lines).rstrip() + "\n"


def _parts_lines(report: MergeReport) -> list[str]:
    """For an app with a window, builds or workloads: what was merged into nothing, the time
    span and the builds the served profile holds, with each build's share of its CPU."""
    derived = report.derived
    lines = []
    if report.expired:
        lines.append(f"- {len(report.expired)} uploads were older than the window: merged into nothing")
    if report.superseded:
        lines.append(f"- {len(report.superseded)} uploads were of builds older than the newest kept: merged into nothing")
    if derived is not None and derived.tables is not None:
        lines.append(
            f"- served: {derived.parts} parts, collected from {_when(derived.oldest)} to {_when(derived.newest)}"
        )
    elif derived is not None:
        lines.append("- served: nothing is left in the window (an empty profile)")
    if lines:
        lines.append("")
    if derived is not None and derived.builds:
        total = sum(cpu for _, cpu in derived.builds)
        lines += [
            "## CPU by build",
            "",
            "| build | share |",
            "| --- | ---: |",
            *(f"| `{build or '(none)'}` | {percentage(cpu, total)} |" for build, cpu in derived.builds),
            "",
        ]
    if derived is not None and derived.ratios:
        lines += [
            "## Workloads scaled",
            "",
            "| workload | ratio |",
            "| --- | ---: |",
            *(f"| `{workload}` | {ratio:.4g} |" for workload, ratio in sorted(derived.ratios.items())),
            "",
        ]
    return lines


def _when(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def merge_failure_markdown(app: str, reason: str) -> str:
    """The artifact of a merge that failed: why, in one line."""
    return f"# Merge of `{app}` failed\n\n{reason}\n"
