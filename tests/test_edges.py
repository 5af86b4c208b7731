"""The hottest call edges in the merge artifact are the edges `go tool preprofile` gives the compiler."""

from __future__ import annotations

from pathlib import Path

import harness

from profiling.pipeline import MergeReport, merge_markdown
from profiling.pprof import encode, hot_edges, merge, percentage, read_profile

HEADER = "GO PREPROFILE V1\n"


def preprofile_edges(path: Path) -> list[tuple[str, str, int, int]]:
    """(caller, callee, offset, weight) as `go tool preprofile` prints them, in its order."""
    text = harness.preprofile(path).decode()
    assert text.startswith(HEADER)
    lines = text[len(HEADER) :].splitlines()
    return [(lines[i], lines[i + 1], *map(int, lines[i + 2].split())) for i in range(0, len(lines), 3)]


def test_hot_edges_are_preprofiles_heaviest_edges(cpu_profiles: list[Path], tmp_path: Path) -> None:
    merged = merge([read_profile(p) for p in cpu_profiles])
    path = tmp_path / "merged.pb.gz"
    path.write_bytes(encode(merged))
    expected = preprofile_edges(path)
    total = sum(weight for *_, weight in expected)
    edges = hot_edges(merged, top=10)
    assert len(expected) > 10 and edges.edges == len(expected)
    assert [(e.caller, e.callee, e.offset, e.weight) for e in edges.top] == expected[:10]
    assert [e.share for e in edges.top] == [percentage(w, total) for *_, w in expected[:10]]
    assert edges.total_weight == total
    assert edges.covered == percentage(sum(w for *_, w in expected[:10]), total)


def test_merge_artifact_shows_edges_inputs_and_both_sizes(cpu_profiles: list[Path]) -> None:
    profile = read_profile(cpu_profiles[0])
    report = MergeReport("shop", batches=1, merged=["k1", "k2"], rejected=[("k3", "not a pprof profile")],
                         size_before=0, size_after=12_345, profile=profile)
    text = merge_markdown(report)
    top = hot_edges(profile).top[0]
    assert text.startswith("# Merge of `shop`\n")
    assert "| 2 | 1 | 1 | " in text and "| 12.06kB |" in text
    assert "- rejected `k3`: not a pprof profile" in text
    assert f"| {top.share} | {top.weight} | `{top.caller} -> {top.callee} (line +{top.offset})` |" in text
    assert "of the edge weight Go's PGO reads" in text and "## Top functions by flat" in text
