"""Per-app prune rules: loading them from YAML or JSON and applying them.

The file is a list of ``{app, rules: [{drop, keep}]}`` entries, as autopgo's
prune configuration::

    - app: checkout
      rules:
        - drop: ^runtime\\.
          keep: ^runtime\\.main$
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .merge import compact
from .model import Profile
from .names import is_valid_app_name
from .prune import prune
from .yamlfile import load_yaml


@dataclass(frozen=True, slots=True)
class PruneRule:
    """Prune frames matching ``drop`` unless they match ``keep``."""

    drop: re.Pattern[str]
    keep: re.Pattern[str] | None = None

    @classmethod
    def of(cls, drop: str, keep: str | None = None) -> PruneRule:
        return cls(compile_pattern(drop, "drop"), compile_pattern(keep, "keep") if keep else None)


def compile_pattern(pattern: str, what: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{what}: bad regular expression {pattern!r}: {exc}") from None


def apply_rules(p: Profile, rules: Iterable[PruneRule]) -> Profile:
    """Apply ``rules`` in order, then drop what no sample references any more."""
    rules = list(rules)
    if not rules:
        return p
    for rule in rules:
        p = prune(p, rule.drop, rule.keep)
    return compact(p)


def load_prune_config(path: str | Path) -> dict[str, tuple[PruneRule, ...]]:
    """Read a prune configuration file; returns the rules of each app."""
    data = load_yaml(path)
    try:
        return parse_prune_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_prune_config(data: Any) -> dict[str, tuple[PruneRule, ...]]:
    if data is None or data == []:
        raise ConfigError("no rules: expected a list of {app, rules} entries")
    if not isinstance(data, list):
        raise ConfigError("expected a list of {app, rules} entries")
    out: dict[str, tuple[PruneRule, ...]] = {}
    for n, entry in enumerate(data, 1):
        where = f"entry {n}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: expected a mapping with keys app and rules")
        _check_keys(entry, {"app", "rules"}, where)
        app = entry.get("app")
        if not is_valid_app_name(app):
            raise ConfigError(f"{where}: app must be 1 to 63 characters of a-z, 0-9 and '-', not {app!r}")
        where = f"entry {n} (app {app})"
        if app in out:
            raise ConfigError(f"{where}: app {app} is listed twice")
        out[app] = parse_rules(entry.get("rules"), where)
    return out


def parse_rules(rules: Any, where: str) -> tuple[PruneRule, ...]:
    """Validate a list of ``{drop, keep}`` mappings; errors name ``where``."""
    if rules is None:
        return ()
    if not isinstance(rules, list):
        raise ConfigError(f"{where}: rules must be a list of {{drop, keep}} mappings")
    out = []
    for i, rule in enumerate(rules, 1):
        at = f"{where}, rule {i}"
        if not isinstance(rule, Mapping):
            raise ConfigError(f"{at}: expected a mapping with keys drop and keep")
        _check_keys(rule, {"drop", "keep"}, at)
        drop, keep = rule.get("drop"), rule.get("keep")
        if not isinstance(drop, str) or not drop:
            raise ConfigError(f"{at}: drop must be a non-empty regular expression")
        if keep is not None and not isinstance(keep, str):
            raise ConfigError(f"{at}: keep must be a regular expression")
        try:
            out.append(PruneRule.of(drop, keep))
        except ConfigError as exc:
            raise ConfigError(f"{at}: {exc}") from None
    return tuple(out)


def _check_keys(entry: Mapping, allowed: set[str], where: str) -> None:
    unknown = sorted(map(str, set(entry) - allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (expected {', '.join(sorted(allowed))})")
