"""Scrape targets: where an app's instances serve ``/debug/pprof/profile``.

A ``TargetSource`` lists the current targets, and says for health reports
whether it can now. The file source re-reads its file when it changes; a
broken edit keeps the last good list and logs one error, so a typo never
stops the scrape schedule. (Kubernetes, Consul and Nomad sources implement
the same protocol.)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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
    kind: str  # how autopgo.yaml names the source: file, static, kubernetes, consul or nomad

    def targets(self) -> list[Target]:
        """The targets now; raises an error saying why when they cannot be listed."""
        ...

    def check(self) -> None:
        """Raise an error with a one-line message if the targets cannot be listed now."""
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
    kind = "static"

    def __init__(self, targets: Sequence[Target]) -> None:
        self._targets = list(targets)

    def targets(self) -> list[Target]:
        return list(self._targets)

    def check(self) -> None:
        """Always fine: the list was checked with the configuration."""


class FileTargets:
    """Targets from a YAML or JSON file, re-read whenever it changes."""

    kind = "file"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._good: list[Target] | None = None

    def targets(self) -> list[Target]:
        try:
            return self._read()
        except ConfigError as exc:
            return self._keep(str(exc))

    def check(self) -> None:
        """ConfigError saying why if the file, as it is now, cannot be read or parsed
        (even while the scrapes go on with the last good list)."""
        self._read()

    def _read(self) -> list[Target]:
        """The file's targets now (parsed again only if it changed); ConfigError saying why not."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise ConfigError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp and self._good is not None:
            return list(self._good)
        data = load_yaml(self.path)
        targets = parse_target_list(data if data is not None else [], str(self.path))
        self._stamp, self._good = stamp, targets
        return list(targets)

    def _keep(self, problem: str) -> list[Target]:
        if self._good is None:
            raise ConfigError(problem)
        log.error("%s; keeping the last good list of %d targets", problem, len(self._good))
        return list(self._good)
