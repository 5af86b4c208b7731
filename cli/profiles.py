"""Local profile commands: ``merge`` and ``inspect``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from .output import DASH, check_stdout, write_stdout


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``merge`` (inputs, ``-o``, ``--drop``, ``--keep``, ``--prune-config``, ``--app``, ``--trim``, ``-j``) and
    ``inspect`` (a file, ``-n``); both take ``--max-decompressed``."""
    merge = commands.add_parser(
        "merge",
        help="merge pprof profiles into one, as go tool pprof -proto does",
        description="Merge pprof profiles (gzip or raw) into one gzip profile, optionally pruned "
        "and trimmed for Go's PGO.",
    )
    merge.add_argument("inputs", nargs="+", metavar="INPUT", help="profile files ('-' for stdin)")
    merge.add_argument(
        "-o", "--output", required=True, help="where to write the merged profile ('-' for stdout)"
    )
    merge.add_argument("--drop", help="prune frames whose function matches this regex")
    merge.add_argument("--keep", help="with --drop: keep frames that match this regex")
    merge.add_argument("--prune-config", metavar="FILE", help="YAML or JSON prune rules per app")
    merge.add_argument("--app", help="with --prune-config: the app whose rules apply")
    merge.add_argument("--trim", action="store_true", help="keep only what Go's PGO reads")
    merge.add_argument(
        "-j",
        "--jobs",
        type=_at_least(1),
        default=_usable_cpus(),
        help="processes that decode inputs (default: the CPUs this process may use)",
    )
    _add_limit(merge)
    merge.set_defaults(run=run_merge)

    inspect = commands.add_parser(
        "inspect",
        help="show a profile's sample types, sizes and hottest functions",
        description="Show a profile's sample types, period, duration, sizes and top functions.",
    )
    inspect.add_argument("input", metavar="FILE", help="profile file ('-' for stdin)")
    inspect.add_argument(
        "-n", "--top", type=_at_least(0), default=10, help="how many functions to list (default 10)"
    )
    _add_limit(inspect)
    inspect.set_defaults(run=run_inspect)


def _add_limit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-decompressed",
        default="512MiB",
        metavar="SIZE",
        help="refuse a profile larger than this once decompressed: bytes, or e.g. 64MiB "
        "(K, M, G, T are multiples of 1024; default %(default)s)",
    )


def _at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than ``low``."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected a whole number of at least {low}, not {text!r}")
        return value

    return convert


def _max_decompressed(args: argparse.Namespace) -> int:
    from profiling.units import parse_size

    return parse_size(args.max_decompressed, "--max-decompressed", allow_zero=False)


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def run_merge(args: argparse.Namespace) -> int:
    """Run ``autopgo merge``: merge the inputs into one gzip profile, pruned and trimmed if asked, and write it to
    ``--output`` (a file, or standard output for ``-``); 0."""
    from profiling.atomicfile import atomic_write
    from profiling.pprof import encode, merge_files

    if args.keep and not args.drop:
        raise ValueError("--keep needs --drop")
    if bool(args.prune_config) != bool(args.app):
        raise ValueError("--prune-config and --app go together")
    if args.inputs.count(DASH) > 1:
        raise ValueError("standard input can be read only once")
    if args.output == DASH:
        check_stdout()
    limit = _max_decompressed(args)
    rules = _prune_rules(args)

    merged = merge_files(args.inputs, jobs=args.jobs, max_decompressed=limit)
    if rules or args.trim:
        from profiling.pipeline import apply_rules
        from profiling.pprof import to_profile, trim_for_pgo

        profile = apply_rules(to_profile(merged), rules)
        data = encode(trim_for_pgo(profile) if args.trim else profile)
    else:
        data = encode(merged)
    if args.output == DASH:
        write_stdout(data)
    else:
        atomic_write(args.output, data)
    return 0


def _prune_rules(args: argparse.Namespace) -> list:
    if not (args.drop or args.prune_config):
        return []
    from profiling.pipeline import PruneRule, load_prune_config

    rules = [PruneRule.of(args.drop, args.keep)] if args.drop else []
    if args.prune_config:
        per_app = load_prune_config(args.prune_config)
        if args.app not in per_app:
            known = ", ".join(sorted(per_app))
            raise ValueError(f"{args.prune_config} has no rules for app {args.app!r} (it has: {known})")
        rules.extend(per_app[args.app])
    return rules


def run_inspect(args: argparse.Namespace) -> int:
    """Run ``autopgo inspect``: print the profile's sample types, period, duration, sizes and top functions; 0."""
    from profiling.pprof import read_profile, summarize

    s = summarize(read_profile(args.input, max_decompressed=_max_decompressed(args)), top=args.top)
    out = sys.stdout
    out.write(f"Sample types: {', '.join(s.sample_types) or 'none'}\n")
    out.write(f"Period:       {s.period}\n")
    out.write(f"Duration:     {s.duration}\n")
    out.write(
        f"Samples:      {s.samples}   Locations: {s.locations}   "
        f"Functions: {s.functions}   Mappings: {s.mappings}\n"
    )
    if not s.top:
        return 0
    out.write(f"Top functions by flat {s.value_type} (total {s.total_label}):\n")
    rows = [("flat", "flat%", "sum%", "cum", "cum%", "function")]
    rows += [(fc.flat_label, fc.flat_percent, fc.sum_percent, fc.cum_label, fc.cum_percent, fc.name) for fc in s.top]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        out.write("  ".join(c.rjust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] + "\n")
    return 0
