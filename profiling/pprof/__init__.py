"""The pprof engine: google/pprof's profile format, merge, prune and the PGO trim, in Python.

A profile is read into columns (``ProfileTables``, ``tables.py``) or a model
(``Profile``, ``model.py``) by ``codec.py``, merged (``merging.py``, ``parallel.py``)
and pruned (``pruning.py``) exactly as google/pprof does, trimmed to what Go's
compiler reads (``trim.py``, ``noinline.py``), checked without decoding
(``precheck.py``) and described for people (``summary.py``, ``measurement.py``,
``edges.py``). Nothing here knows about blob stores, HTTP or Prefect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import surface

if TYPE_CHECKING:  # each name is imported from its module when first used (see profiling/lazy.py)
    from .codec import (
        DEFAULT_MAX_DECOMPRESSED,
        GZIP_MAGIC,
        comments_of,
        compress,
        decode,
        decode_tables,
        decompress,
        encode,
        encode_raw,
    )
    from .edges import hot_edges
    from .fileio import read_profile, read_tables
    from .measurement import percentage, size_label
    from .merging import Merger, check_compatible, compact, merge
    from .model import Function, Labels, Line, Location, Mapping, Profile, Sample, ValueType
    from .noinline import BUILTIN_NEVER_INLINE, NOINLINE_SUFFIX, guard_never_inline
    from .parallel import merge_files
    from .precheck import certainly_valid, validate
    from .pruning import prune, simplify_name
    from .summary import summarize
    from .tables import Header, ProfileTables, from_profile, to_profile
    from .trim import check_pgo_usable, pgo_edges, pgo_value_index, trim_for_pgo

__all__ = [
    "BUILTIN_NEVER_INLINE",
    "DEFAULT_MAX_DECOMPRESSED",
    "Function",
    "GZIP_MAGIC",
    "Header",
    "Labels",
    "Line",
    "Location",
    "Mapping",
    "Merger",
    "NOINLINE_SUFFIX",
    "Profile",
    "ProfileTables",
    "Sample",
    "ValueType",
    "certainly_valid",
    "check_compatible",
    "check_pgo_usable",
    "comments_of",
    "compact",
    "compress",
    "decode",
    "decode_tables",
    "decompress",
    "encode",
    "encode_raw",
    "from_profile",
    "guard_never_inline",
    "hot_edges",
    "merge",
    "merge_files",
    "percentage",
    "pgo_edges",
    "pgo_value_index",
    "prune",
    "read_profile",
    "read_tables",
    "simplify_name",
    "size_label",
    "summarize",
    "to_profile",
    "trim_for_pgo",
    "validate",
]

__getattr__ = surface(__name__, __file__)
