"""Scrape side: which instances an app has, when it is due, and fetching their profiles.

Targets come from a file or a static list (``targets.py``) or are discovered
in Kubernetes, Consul or Nomad (``kubernetes.py``, ``consul.py``, ``nomad.py``),
configured by ``options.py`` and built per app by ``sources.py``. ``schedule.py``
spreads apps over their interval and ``scraping.py`` fetches
``/debug/pprof/profile`` from the instances picked.

Instances opt in with the same labels (Kubernetes labels and annotations) or
tags (Consul, Nomad):

=============================  ===========================================
``autopgo.scrape=true``        scrape this instance
``autopgo.scrape.app=<app>``   for this app (as named in ``autopgo.yaml``)
``autopgo.scrape.port=<n>``    Kubernetes only (an annotation): the pprof port
``autopgo.scrape.path=/...``   optional, default ``/debug/pprof/profile``
``autopgo.scrape.scheme=...``  optional, ``http`` (default) or ``https``
``autopgo.scrape.workload=..`` optional (Kubernetes: a label): the workload its profiles are for
=============================  ===========================================

Every failure to list raises one ``DiscoveryError`` whose one-line message
names the source and the URL; an instance whose labels are wrong is skipped
with one warning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import surface

if TYPE_CHECKING:  # each name is imported from its module when first used (see profiling/lazy.py)
    from .base import DiscoveryError, HttpSource
    from .consul import ConsulTargetSource
    from .kubernetes import KubernetesTargetSource
    from .nomad import NomadTargetSource
    from .options import (
        DEFAULT_DISCOVERY_TIMEOUT,
        ClientTLS,
        ConsulTargets,
        KubernetesTargets,
        NomadTargets,
        TargetsConfig,
    )
    from .schedule import EPOCH, Due, due_in, next_due, phase, tick_for, tick_start
    from .scraping import (
        DEFAULT_FETCH_LIMIT,
        ScrapeError,
        ScrapeReport,
        fetch_profile,
        new_client,
        pick,
        profile_seconds,
        scrape,
        scrape_async,
    )
    from .sources import SourceCache
    from .targets import (
        DEFAULT_PATH,
        FileTargets,
        StaticTargets,
        Target,
        TargetSource,
        parse_target_list,
        read_target_list,
    )
    from .tls import TLSSettings

__all__ = [
    "ClientTLS",
    "ConsulTargetSource",
    "ConsulTargets",
    "DEFAULT_DISCOVERY_TIMEOUT",
    "DEFAULT_FETCH_LIMIT",
    "DEFAULT_PATH",
    "DiscoveryError",
    "Due",
    "EPOCH",
    "FileTargets",
    "HttpSource",
    "KubernetesTargetSource",
    "KubernetesTargets",
    "NomadTargetSource",
    "NomadTargets",
    "ScrapeError",
    "ScrapeReport",
    "SourceCache",
    "StaticTargets",
    "TLSSettings",
    "Target",
    "TargetSource",
    "TargetsConfig",
    "due_in",
    "fetch_profile",
    "new_client",
    "next_due",
    "parse_target_list",
    "phase",
    "pick",
    "profile_seconds",
    "read_target_list",
    "scrape",
    "scrape_async",
    "tick_for",
    "tick_start",
]

__getattr__ = surface(__name__, __file__)
