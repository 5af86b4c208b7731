"""Scrape targets: where an app's instances serve ``/debug/pprof/profile``.

A ``TargetSource`` lists the current targets. The file source re-reads its
file when it changes; a broken edit keeps the last good list and logs one
error, so a typo never stops the scrape schedule. (Kubernetes, Consul and
Nomad sources implement the same protocol.)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .atomicfile import atomic_write
from .errors import ConfigError
from .yamlfile import load_yaml

log = logging.getLogger(__name__)

DEFAULT_PATH = "/debug/pprof/profile"


@dataclass(frozen=True, slots=True)
class Target:
    address: str  # host:port
    path: str = DEFAULT_PATH
    scheme: str = "http"

    def url(self) -> str:
        return f"{self.scheme}://{self.address}{self.path}"


class TargetSource(Protocol):
    def targets(self) -> list[Target]:
        """The targets now; raises an error saying why when they cannot be listed."""
        ...


def parse_target_list(data: Any, where: str) -> list[Target]:
    """Validate a list of ``{address, path, scheme}`` mappings."""
    if not isinstance(data, list):
        raise ConfigError(f"{where}: expected a list of {{address, path}} entries")
    out = []
    for i, entry in enumerate(data):
        at = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{at}: expected a mapping with address and path")
        unknown = sorted(set(map(str, entry)) - {"address", "path", "scheme"})
        if unknown:
            raise ConfigError(f"{at}: unknown key {unknown[0]!r} (expected address, path, scheme)")
        address, path = entry.get("address"), entry.get("path", DEFAULT_PATH)
        scheme = entry.get("scheme", "http")
        if not isinstance(address, str) or ":" not in address or "/" in address:
            raise ConfigError(f"{at}.address: expected host:port, not {address!r}")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigError(f"{at}.path: expected a path starting with '/', not {path!r}")
        if scheme not in ("http", "https"):
            raise ConfigError(f"{at}.scheme: expected http or https, not {scheme!r}")
        out.append(Target(address, path, scheme))
    return out


class StaticTargets:
    def __init__(self, targets: Sequence[Target]) -> None:
        self._targets = list(targets)

    def targets(self) -> list[Target]:
        return list(self._targets)


class FileTargets:
    """Targets from a YAML or JSON file, re-read whenever it changes.

    With ``saved``, the last good list is also kept in that file, so that a
    process started after the target file broke (each flow run is a new one)
    still has it.
    """

    def __init__(self, path: str | Path, saved: Path | None = None) -> None:
        self.path = Path(path)
        self.saved = saved
        self._stamp: tuple[int, int, int] | None = None
        self._good: list[Target] | None = None

    def targets(self) -> list[Target]:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError as exc:
            return self._keep(f"cannot read {self.path}: {exc.strerror or exc}")
        if stamp == self._stamp and self._good is not None:
            return list(self._good)
        try:
            data = load_yaml(self.path)
            targets = parse_target_list(data if data is not None else [], str(self.path))
        except ConfigError as exc:
            return self._keep(str(exc))
        if targets != self._good:
            self._save(targets)
        self._stamp, self._good = stamp, targets
        return list(targets)

    def _keep(self, problem: str) -> list[Target]:
        if self._good is None:
            self._good = self._load()
        if self._good is None:
            raise ConfigError(problem)
        log.error("%s; keeping the last good list of %d targets", problem, len(self._good))
        return list(self._good)

    def _save(self, targets: list[Target]) -> None:
        if self.saved is None:
            return
        data = [{"address": t.address, "path": t.path, "scheme": t.scheme} for t in targets]
        try:
            self.saved.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.saved, json.dumps({"file": str(self.path), "targets": data}).encode())
        except OSError as exc:  # the scrape goes on; only a later broken edit would miss it
            log.warning("cannot keep the target list of %s in %s: %s", self.path, self.saved, exc.strerror or exc)

    def _load(self) -> list[Target] | None:
        if self.saved is None:
            return None
        try:
            data = json.loads(self.saved.read_bytes())
            return parse_target_list(data["targets"], str(self.saved))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
            log.warning("ignoring the saved target list %s: %s", self.saved, exc)
            return None
