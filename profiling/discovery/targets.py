"""Scrape targets: where an app's instances serve ``/debug/pprof/profile``.

A ``TargetSource`` lists the current targets, and says for health reports
whether it can now. The file source re-reads its file when it changes; a
broken edit keeps the last good list and logs one error, so a typo never
stops the scrape schedule. (Kubernetes, Consul and Nomad sources implement
the same protocol.)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..atomicfile import atomic_write
from ..errors import ConfigError
from ..names import WORKLOAD_RULE, is_valid_workload
from ..yamlfile import Problems, Setting, load_yaml

log = logging.getLogger(__name__)

DEFAULT_PATH = "/debug/pprof/profile"


@dataclass(frozen=True, slots=True)
class Target:
    """One instance to scrape: where it serves its CPU profile, and the workload its profiles are for."""

    address: str  # host:port
    path: str = DEFAULT_PATH
    scheme: str = "http"
    workload: str = ""  # the workload its profiles are uploaded for (none: "")

    def url(self) -> str:
        """The profile's URL, without the ``seconds`` query."""
        return f"{self.scheme}://{self.address}{self.path}"


class TargetSource(Protocol):
    """Where an app's targets come from: a file, a static list, Kubernetes, Consul or Nomad."""

    kind: str  # how autopgo.yaml names the source: file, static, kubernetes, consul or nomad

    def targets(self) -> list[Target]:
        """The targets now; raises an error saying why when they cannot be listed."""
        ...

    def check(self) -> None:
        """Raise an error with a one-line message if the targets cannot be listed now."""
        ...


def parse_target_list(data: Any, where: str) -> list[Target]:
    """Validate a list of ``{address, path, scheme, workload}`` mappings given directly; mistakes name ``where``."""
    problems = Problems()
    targets = read_target_list(Setting.root(data, problems, name=where))
    problems.check()
    return targets


def read_target_list(setting: Setting) -> list[Target]:
    """The targets of a list of ``{address, path, scheme, workload}`` mappings, reporting each mistake."""
    if not isinstance(setting.value, list):
        setting.fail("expected a list of {address, path} entries")
        return []
    out = []
    for entry in setting.items():
        keys = {"address", "path", "scheme", "workload"}
        if not entry.mapping(keys, "expected a mapping with address and path", noun="key"):
            continue
        address, path, scheme = entry.get("address"), entry.get("path", DEFAULT_PATH), entry.get("scheme", "http")
        workload = entry.get("workload", "")
        valid = True
        if not isinstance(address.value, str) or ":" not in address.value or "/" in address.value:
            address.fail(f"expected host:port, not {address.value!r}")
            valid = False
        if not isinstance(path.value, str) or not path.value.startswith("/"):
            path.fail(f"expected a path starting with '/', not {path.value!r}")
            valid = False
        if scheme.value not in ("http", "https"):
            scheme.fail(f"expected http or https, not {scheme.value!r}")
            valid = False
        if workload.value != "" and not is_valid_workload(workload.value):
            workload.fail(f"expected {WORKLOAD_RULE}, not {workload.value!r}")
            valid = False
        if valid:
            out.append(Target(address.value, path.value, scheme.value, workload.value))
    return out


class StaticTargets:
    """A fixed list of targets, given inline in ``autopgo.yaml``."""

    kind = "static"

    def __init__(self, targets: Sequence[Target]) -> None:
        self._targets = list(targets)

    def targets(self) -> list[Target]:
        """The list, as given."""
        return list(self._targets)

    def check(self) -> None:
        """Always fine: the list was checked with the configuration."""


class FileTargets:
    """Targets from a YAML or JSON file, re-read whenever it changes.

    With ``saved``, the last good list is also kept in that file, so that a
    process started after the target file broke (each flow run is a new one)
    still has it.
    """

    kind = "file"

    def __init__(self, path: str | Path, saved: Path | None = None) -> None:
        self.path = Path(path)
        self.saved = saved
        self._stamp: tuple[int, int, int] | None = None
        self._good: list[Target] | None = None

    def targets(self) -> list[Target]:
        """The file's targets now; after a broken edit the last good list, or ConfigError if there is none."""
        try:
            return self._read()
        except ConfigError as exc:
            return self._keep(exc)

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
        problems = Problems(self.path)
        targets = read_target_list(Setting.root([] if data is None else data, problems, name=""))
        problems.check()
        if targets != self._good:
            self._save(targets)
        self._stamp, self._good = stamp, targets
        return list(targets)

    def _keep(self, error: ConfigError) -> list[Target]:
        """The last good list, after logging ``error`` in one line; ``error`` itself if there is none."""
        if self._good is None:
            self._good = self._load()
        if self._good is None:
            raise error
        log.error("%s; keeping the last good list of %d targets", "; ".join(error.problems), len(self._good))
        return list(self._good)

    def _save(self, targets: list[Target]) -> None:
        if self.saved is None:
            return
        data = [
            {"address": t.address, "path": t.path, "scheme": t.scheme, **({"workload": t.workload} if t.workload else {})}
            for t in targets
        ]
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
