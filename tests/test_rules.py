"""Prune configuration files (profiling.pipeline.rules) and upstream's name simplification (profiling.pprof.pruning)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from profiling.errors import ConfigError
from profiling.pipeline import PruneRule, load_prune_config, parse_prune_config
from profiling.pprof import simplify_name

VALID_YAML = r"""
# prune rules per app
- app: checkout
  rules:
    - drop: ^runtime\.
      keep: ^runtime\.main$
    - drop: ^internal/poll\.
- app: search-api
  rules: []
- app: no-rules
"""

VALID_DATA = [
    {"app": "checkout", "rules": [{"drop": r"^runtime\.", "keep": r"^runtime\.main$"}, {"drop": r"^internal/poll\."}]},
    {"app": "search-api", "rules": []},
    {"app": "no-rules"},
]


def as_plain(config: dict[str, tuple[PruneRule, ...]]) -> dict[str, list[tuple[str, str | None]]]:
    return {
        app: [(r.drop.pattern, r.keep.pattern if r.keep else None) for r in rules] for app, rules in config.items()
    }


EXPECTED = {
    "checkout": [(r"^runtime\.", r"^runtime\.main$"), (r"^internal/poll\.", None)],
    "search-api": [],
    "no-rules": [],
}


def test_valid_yaml_loads(tmp_path: Path) -> None:
    path = tmp_path / "prune.yaml"
    path.write_text(VALID_YAML)
    config = load_prune_config(path)
    assert list(config) == ["checkout", "search-api", "no-rules"]
    assert as_plain(config) == EXPECTED
    drop, keep = config["checkout"][0].drop, config["checkout"][0].keep
    assert drop.search("runtime.mallocgc") and keep is not None and keep.search("runtime.main")


def test_valid_json_loads(tmp_path: Path) -> None:
    path = tmp_path / "prune.json"
    path.write_text(json.dumps(VALID_DATA, indent=2))
    assert as_plain(load_prune_config(str(path))) == EXPECTED


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="empty.yaml: no rules"):
        load_prune_config(path)


def test_longest_valid_app_name_loads() -> None:
    assert list(parse_prune_config([{"app": "a" * 63}])) == ["a" * 63]


GOOD_ENTRY = {"app": "first", "rules": [{"drop": "^x"}]}

# (id, YAML-able data, entry number the message must name or None, regex for what is wrong)
BAD_CONFIGS = [
    ("bad-drop-regex", [GOOD_ENTRY, {"app": "b", "rules": [{"drop": "^ok"}, {"drop": "(unclosed"}]}], 2,
     r"rule 2: drop: bad regular expression"),
    ("bad-keep-regex", [GOOD_ENTRY, {"app": "b", "rules": [{"drop": "^x", "keep": "[z-a]"}]}], 2,
     r"rule 1: keep: bad regular expression"),
    ("unknown-entry-key", [GOOD_ENTRY, {"app": "b", "rules": [], "rule": []}], 2, r"unknown key 'rule'"),
    ("unknown-rule-key", [GOOD_ENTRY, {"app": "b", "rules": [{"drop": "^x", "kep": "^y"}]}], 2,
     r"rule 1: unknown key 'kep'"),
    ("rules-not-a-list", [GOOD_ENTRY, {"app": "b", "rules": {"drop": "^x"}}], 2, r"rules must be a list"),
    ("rules-a-string", [GOOD_ENTRY, {"app": "b", "rules": "^x"}], 2, r"rules must be a list"),
    ("rule-not-a-mapping", [GOOD_ENTRY, {"app": "b", "rules": ["^x"]}], 2, r"rule 1: expected a mapping"),
    ("entry-not-a-mapping", [GOOD_ENTRY, "checkout"], 2, r"expected a mapping"),
    ("entry-a-list", [GOOD_ENTRY, ["app", "b"]], 2, r"expected a mapping"),
    ("top-level-a-mapping", {"app": "b", "rules": []}, None, r"expected a list"),
    ("top-level-a-string", "checkout", None, r"expected a list"),
    ("drop-missing", [GOOD_ENTRY, {"app": "b", "rules": [{"keep": "^x"}]}], 2, r"rule 1: drop must be"),
    ("drop-empty", [GOOD_ENTRY, {"app": "b", "rules": [{"drop": ""}]}], 2, r"rule 1: drop must be"),
    ("drop-not-a-string", [GOOD_ENTRY, {"app": "b", "rules": [{"drop": 5}]}], 2, r"rule 1: drop must be"),
    ("keep-not-a-string", [GOOD_ENTRY, {"app": "b", "rules": [{"drop": "^x", "keep": ["^y"]}]}], 2,
     r"rule 1: keep must be"),
    ("keep-a-number", [GOOD_ENTRY, {"app": "b", "rules": [{"drop": "^x", "keep": 3}]}], 2, r"rule 1: keep must be"),
    ("app-upper-case", [GOOD_ENTRY, {"app": "Foo", "rules": []}], 2, r"app must be .*'Foo'"),
    ("app-64-chars", [GOOD_ENTRY, {"app": "a" * 64, "rules": []}], 2, r"app must be .*'a{64}'"),
    ("app-empty", [GOOD_ENTRY, {"app": "", "rules": []}], 2, r"app must be"),
    ("app-underscore", [GOOD_ENTRY, {"app": "my_app", "rules": []}], 2, r"app must be"),
    ("app-missing", [GOOD_ENTRY, {"rules": []}], 2, r"app must be"),
    ("app-a-number", [GOOD_ENTRY, {"app": 42, "rules": []}], 2, r"app must be"),
    ("duplicate-app", [GOOD_ENTRY, {"app": "b"}, {"app": "first", "rules": []}], 3, r"listed twice"),
]


def check_config_error(exc: ConfigError, path: Path, entry: int | None, pattern: str) -> None:
    message = str(exc)
    assert type(exc) is ConfigError
    assert "\n" not in message, repr(message)
    assert str(path) in message, message
    if entry is not None:
        assert re.search(rf"\bentry {entry}\b", message), message
        others = set(re.findall(r"\bentry (\d+)\b", message)) - {str(entry)}
        assert not others, message
    assert re.search(pattern, message), f"{message!r} does not match {pattern!r}"


@pytest.mark.parametrize("fmt", ["yaml", "json"])
@pytest.mark.parametrize(("data", "entry", "pattern"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_names_file_and_entry(tmp_path: Path, fmt: str, data: object, entry: int | None, pattern: str) -> None:
    import yaml

    path = tmp_path / f"prune.{fmt}"
    path.write_text(json.dumps(data) if fmt == "json" else yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_prune_config(path)
    check_config_error(info.value, path, entry, pattern)


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        load_prune_config(path)
    check_config_error(info.value, path, None, r"cannot read")


def test_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_prune_config(tmp_path)
    check_config_error(info.value, tmp_path, None, r"cannot read")


@pytest.mark.parametrize(
    "text",
    ["- app: [unclosed\n", "- app: a\n  rules:\n\t- drop: x\n", '[{"app": "a",}'],
    ids=["unclosed-flow", "tab-indent", "bad-json"],
)
def test_invalid_yaml(tmp_path: Path, text: str) -> None:
    path = tmp_path / "prune.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_prune_config(path)
    check_config_error(info.value, path, None, r"not valid YAML")


def test_invalid_yaml_keeps_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "prune.yaml"
    path.write_text("- app: a\n  rules:\n    - drop: x\n     keep: y\n")
    with pytest.raises(ConfigError) as info:
        load_prune_config(path)
    assert str(info.value) == f"{path}:4:6: not valid YAML: expected <block end>, but found '<block mapping start>'"


def test_every_mistake_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "prune.yaml"
    path.write_text(
        "- app: checkout\n"  # 1
        "  rules:\n"
        "    - drop: '(unclosed'\n"  # 3
        "    - drop: ^ok\n"
        "      kep: ^x\n"  # 5
        "- app: Bad_Name\n"  # 6
        "- app: checkout\n"  # 7
        "  rules: [{drop: ^a, keep: '[z-a]'}]\n"  # 8
    )
    with pytest.raises(ConfigError) as info:
        load_prune_config(path)
    assert type(info.value) is ConfigError
    assert info.value.problems == str(info.value).split("\n") == [
        f"{path}:3: entry 1 (app checkout), rule 1: drop: bad regular expression '(unclosed':"
        " missing ), unterminated subpattern at position 0",
        f"{path}:5: entry 1 (app checkout), rule 2: unknown key 'kep' (expected one of drop, keep)",
        f"{path}:6: entry 2: app must be 1 to 63 characters of a-z, 0-9 and '-', not 'Bad_Name'",
        f"{path}:7: entry 3 (app checkout): app checkout is listed twice",
        f"{path}:8: entry 3 (app checkout), rule 1: keep: bad regular expression '[z-a]':"
        " bad character range z-a at position 1",
    ]


def test_parse_prune_config_reports_every_mistake_without_lines() -> None:
    with pytest.raises(ConfigError) as info:
        parse_prune_config([{"app": "a", "rules": [{"drop": ""}]}, {"app": "A"}])
    assert info.value.problems == [
        "entry 1 (app a), rule 1: drop must be a non-empty regular expression",
        "entry 2: app must be 1 to 63 characters of a-z, 0-9 and '-', not 'A'",
    ]


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "prune.yaml"
    path.write_bytes(b"- app: caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_prune_config(path)
    check_config_error(info.value, path, None, r"")


def test_parse_errors_name_the_entry_without_a_file() -> None:
    with pytest.raises(ConfigError, match=r"^entry 2 \(app b\), rule 1: drop must be"):
        parse_prune_config([GOOD_ENTRY, {"app": "b", "rules": [{"drop": None}]}])


# ----------------------------------------------------------------------------------------------
# simplify_name: google/pprof's simplifyFunc


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("main.(*T).M", "main."),
        ("main.(*T).M.func1", "main."),
        (".foo", "foo"),
        ("..foo", ".foo"),
        ("(anonymous namespace)::f(int)", "(anonymous namespace)::f"),
        ("(anonymous namespace)::(anonymous namespace)::g()", "(anonymous namespace)::(anonymous namespace)::g"),
        ("operator()(x)", "operator()"),
        ("Foo::operator()(int) const", "Foo::operator()"),
        ("std::vector<int>::push_back(int const&)", "std::vector<int>::push_back"),
        ("foo(bar)(baz)", "foo"),
        ("(", ""),
        ("main.main", "main.main"),
        ("runtime.gcBgMarkWorker.func2", "runtime.gcBgMarkWorker.func2"),
        ("net/http.(*conn).serve", "net/http."),
        ("(anonymous namespace)", "(anonymous namespace)"),
        ("operator()", "operator()"),
        ("", ""),
    ],
)
def test_simplify_name(name: str, expected: str) -> None:
    assert simplify_name(name) == expected
