"""The pipeline's protocol over a blob store: stage, merge exactly once, delete, clean, tell.

``layout.py`` names every key an app has; ``staging.py`` makes an upload
durable; ``batches.py`` merges staged uploads exactly once (``parts.py`` when an
app keeps a window, builds or workloads), with the app's prune rules
(``rules.py``); ``generations.py`` and ``deletion.py`` order deletes against
uploads; ``cleaning.py`` removes old or large profiles; ``events.py`` and
``prefect_events.py`` tell Prefect; ``reports.py`` writes what a merge did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import surface

if TYPE_CHECKING:  # each name is imported from its module when first used (see profiling/lazy.py)
    from .batches import (
        DEFAULT_RECOVER_AFTER,
        LABEL_COMMENTS,
        Batch,
        Labels,
        MergeReport,
        find_pending,
        labels_of,
        merge_pending,
        read_merged,
        read_parts,
        refresh_due,
    )
    from .cleaning import CleanRule, clean
    from .deletion import delete_app, has_data, mark_deleted, needs_cleanup
    from .events import DELETED, UPLOADED, Event, EventError, EventSink, merged_event
    from .generations import AppGeneration, Generation, read_app_generation, read_generation
    from .layout import (
        MERGED_NAME,
        REJECTED,
        STAGING,
        app_of,
        batch_key,
        generation_key,
        generation_of,
        is_merged_key,
        merged_key,
        new_staging_key,
        parts_key,
        rejected_prefix,
        staging_prefix,
        time_of,
        tombstone_key,
        tombstone_prefix,
        workload_of,
    )
    from .parts import BUCKETS, PartsPolicy, decode_parts, encode_parts, go_round, scale
    from .prefect_events import RESOURCE_PREFIX, PrefectEventSink, prefect_event
    from .reports import merge_failure_markdown, merge_markdown
    from .rules import PruneRule, apply_rules, compile_pattern, load_prune_config, parse_prune_config, read_rules
    from .staging import Clock, stage_upload

__all__ = [
    "AppGeneration",
    "BUCKETS",
    "Batch",
    "CleanRule",
    "Clock",
    "DEFAULT_RECOVER_AFTER",
    "DELETED",
    "Event",
    "EventError",
    "EventSink",
    "Generation",
    "LABEL_COMMENTS",
    "Labels",
    "MERGED_NAME",
    "MergeReport",
    "PartsPolicy",
    "PrefectEventSink",
    "PruneRule",
    "REJECTED",
    "RESOURCE_PREFIX",
    "STAGING",
    "UPLOADED",
    "app_of",
    "apply_rules",
    "batch_key",
    "clean",
    "compile_pattern",
    "decode_parts",
    "delete_app",
    "encode_parts",
    "find_pending",
    "generation_key",
    "generation_of",
    "go_round",
    "has_data",
    "is_merged_key",
    "labels_of",
    "load_prune_config",
    "mark_deleted",
    "merge_failure_markdown",
    "merge_markdown",
    "merge_pending",
    "merged_event",
    "merged_key",
    "needs_cleanup",
    "new_staging_key",
    "parse_prune_config",
    "parts_key",
    "prefect_event",
    "read_app_generation",
    "read_generation",
    "read_merged",
    "read_parts",
    "read_rules",
    "refresh_due",
    "rejected_prefix",
    "scale",
    "stage_upload",
    "staging_prefix",
    "time_of",
    "tombstone_key",
    "tombstone_prefix",
    "workload_of",
]

__getattr__ = surface(__name__, __file__)
