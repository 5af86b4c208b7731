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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..names import is_valid_app_name
from ..pprof import Profile, compact, prune
from ..yamlfile import Problems, Setting, load_yaml


@dataclass(frozen=True, slots=True)
class PruneRule:
    """Prune frames matching ``drop`` unless they match ``keep``."""

    drop: re.Pattern[str]
    keep: re.Pattern[str] | None = None

    @classmethod
    def of(cls, drop: str, keep: str | None = None) -> PruneRule:
        """The rule for these regular expressions; ConfigError if one does not compile."""
        return cls(compile_pattern(drop, "drop"), compile_pattern(keep, "keep") if keep else None)


def compile_pattern(pattern: str, what: str) -> re.Pattern[str]:
    """``pattern`` compiled; ConfigError naming ``what`` if it is not a valid regular expression."""
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
    """Read a prune configuration file; returns the rules of each app.

    Every mistake is reported in one ConfigError, each naming the file, the line and the entry.
    """
    problems = Problems(path)
    config = _prune_config(Setting.root(load_yaml(path), problems, name=""))
    problems.check()
    return config


def parse_prune_config(data: Any) -> dict[str, tuple[PruneRule, ...]]:
    """Validate prune rules given directly (no file, so mistakes name only the entries)."""
    problems = Problems()
    config = _prune_config(Setting.root(data, problems, name=""))
    problems.check()
    return config


def _prune_config(root: Setting) -> dict[str, tuple[PruneRule, ...]]:
    if root.value is None or root.value == []:
        root.fail("no rules: expected a list of {app, rules} entries")
        return {}
    if not isinstance(root.value, list):
        root.fail("expected a list of {app, rules} entries")
        return {}
    out: dict[str, tuple[PruneRule, ...]] = {}
    for n, entry in enumerate(root.items(lambda i: f"entry {i + 1}"), 1):
        if not entry.mapping({"app", "rules"}, "expected a mapping with keys app and rules", noun="key"):
            continue
        app = entry.get("app").value
        valid = is_valid_app_name(app)
        if not valid:
            entry.fail(f"app must be 1 to 63 characters of a-z, 0-9 and '-', not {app!r}", entry.get("app").line)
        where = f"entry {n} (app {app})" if valid else entry.name
        if valid and app in out:
            entry.problems.add(where, f"app {app} is listed twice", entry.get("app").line)
        rules = read_rules(entry.get("rules", name=where))
        if valid:
            out[app] = rules
    return out


def read_rules(rules: Setting) -> tuple[PruneRule, ...]:
    """A list of ``{drop, keep}`` mappings (None: no rules); mistakes are reported under ``rules.name``."""
    if rules.value is None:
        return ()
    if not isinstance(rules.value, list):
        rules.fail("rules must be a list of {drop, keep} mappings")
        return ()
    out = []
    for rule in rules.items(lambda i: f"{rules.name}, rule {i + 1}"):
        if not rule.mapping({"drop", "keep"}, "expected a mapping with keys drop and keep", noun="key"):
            continue
        drop, keep = rule.get("drop"), rule.get("keep")
        if not isinstance(drop.value, str) or not drop.value:
            rule.fail("drop must be a non-empty regular expression", drop.line)
            continue
        if keep.value is not None and not isinstance(keep.value, str):
            rule.fail("keep must be a regular expression", keep.line)
            continue
        drop_rx = _pattern(rule, "drop")
        keep_rx = _pattern(rule, "keep") if keep.value else None
        if drop_rx is not None and (keep_rx is not None or not keep.value):
            out.append(PruneRule(drop_rx, keep_rx))
    return tuple(out)


def _pattern(rule: Setting, key: str) -> re.Pattern[str] | None:
    """The rule's ``drop`` or ``keep`` compiled; None, reported at its line, if it is no regex."""
    part = rule.get(key)
    try:
        return compile_pattern(part.value, key)
    except ConfigError as exc:
        rule.fail(str(exc), part.line)
        return None
