"""Building an app's target source from its scrape settings, shared by the flows and the API."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

from .consul import ConsulTargetSource
from .kubernetes import KubernetesTargetSource
from .nomad import NomadTargetSource
from .options import TargetsConfig
from .targets import FileTargets, StaticTargets, TargetSource


class Scraped(Protocol):
    """What a source is built from: an app's scrape settings (``profiling.config.ScrapeConfig``)."""

    @property
    def targets(self) -> TargetsConfig:
        """Where the app's instances are listed."""
        ...


class SourceCache:
    """One source per app and settings, kept for the life of the process.

    A file source keeps its last good list across scrapes when an edit breaks
    the file; a discovery source keeps its ``last_error`` for health reports.
    """

    def __init__(self, state_dir: Path | None = None) -> None:
        self._sources: dict[object, TargetSource] = {}
        self._state_dir = state_dir  # where file sources keep their last good list

    def source(self, app: str, cfg: Scraped) -> TargetSource:
        """The source listing ``app``'s instances as ``cfg.targets`` says, made once and then kept."""
        targets = cfg.targets
        if targets.file is None and targets.kubernetes is None and targets.consul is None and targets.nomad is None:
            return StaticTargets(targets.static)
        key = (app, targets)
        if key not in self._sources:
            if targets.file is not None:
                self._sources[key] = FileTargets(targets.file, self._saved_list(app, targets.file))
            elif targets.kubernetes is not None:
                self._sources[key] = KubernetesTargetSource.from_config(app, targets.kubernetes)
            elif targets.consul is not None:
                self._sources[key] = ConsulTargetSource.from_config(app, targets.consul)
            else:
                assert targets.nomad is not None
                self._sources[key] = NomadTargetSource.from_config(app, targets.nomad)
        return self._sources[key]

    def _saved_list(self, app: str, file: Path) -> Path | None:
        if self._state_dir is None:
            return None
        digest = hashlib.sha256(str(file).encode()).hexdigest()[:16]
        return self._state_dir / "targets" / f"{app}-{digest}.json"
