"""autopgo.yaml: loading, defaults, path resolution, and one ConfigError listing every mistake with its line."""

from __future__ import annotations

import re
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from profiling.config import (
    DEFAULT_API_URL,
    AppConfig,
    CleanConfig,
    Config,
    ScrapeConfig,
    load_config,
    parse_config,
    parse_duration,
)
from profiling.discovery import Target, TargetsConfig
from profiling.errors import ConfigError
from profiling.pipeline import PruneRule
from profiling.pprof import BUILTIN_NEVER_INLINE

FULL = """\
blob_store: s3://profiles/pgo?endpoint=http://127.0.0.1:8333&region=us-east-1
api:
  url: http://api.internal:9000/
  token: s3cret
sweep_every: 90s
clean:
  every: 2h
  older_than: 720h
  larger_than: 1048576
apps:
  - name: checkout
    scrape:
      every: 5m
      duration: 30s
      sample_size: 4
      targets:
        file: targets/checkout.yaml
    prune:
      - drop: ^runtime\\.
        keep: ^runtime\\.main$
      - drop: ^internal/
  - name: search-2
    scrape:
      every: 1.5m
      duration: 500ms
      sample_size: 1
      targets:
        static:
          - address: 10.0.0.5:6060
          - address: "[::1]:6060"
            path: /custom/profile
  - name: uploads-only
"""


def write(folder: Path, text: str, name: str = "autopgo.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def expect_error(path: Path, *settings: str, count: int = 1) -> str:
    """load_config(path) raises exactly one ConfigError: ``count`` lines (one per mistake), each
    naming the file (and the line, where there is one), together naming every setting."""
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert type(info.value) is ConfigError
    message = str(info.value)
    lines = message.split("\n")
    assert info.value.problems == lines and len(lines) == count, message
    for line in lines:
        assert line.strip() == line and re.match(rf"{re.escape(str(path))}(:\d+)*: ", line), line
    for setting in settings:
        assert setting in message, f"{setting!r} not in {message!r}"
    return message


# -- a full, valid file -------------------------------------------------------------


def test_full_config_loads_with_values_and_types(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    config = load_config(path)

    assert isinstance(config, Config)
    assert config.blob_store == "s3://profiles/pgo?endpoint=http://127.0.0.1:8333&region=us-east-1"
    assert config.api_url == "http://api.internal:9000"  # trailing slash dropped
    assert config.api_token == "s3cret"
    assert config.sweep_every == timedelta(seconds=90)

    assert config.clean == CleanConfig(every=timedelta(hours=2), older_than=timedelta(hours=720), larger_than=1048576)
    assert isinstance(config.clean.larger_than, int)

    assert isinstance(config.apps, tuple)
    assert [a.name for a in config.apps] == ["checkout", "search-2", "uploads-only"]

    checkout = config.apps[0]
    assert isinstance(checkout, AppConfig)
    assert checkout.scrape == ScrapeConfig(
        every=timedelta(minutes=5),
        duration=timedelta(seconds=30),
        sample_size=4,
        targets=TargetsConfig(file=(tmp_path / "targets" / "checkout.yaml").resolve()),
    )
    assert isinstance(checkout.scrape.targets.file, Path) and checkout.scrape.targets.file.is_absolute()
    assert checkout.scrape.targets.static == ()
    assert isinstance(checkout.prune, tuple) and len(checkout.prune) == 2
    assert all(isinstance(rule, PruneRule) for rule in checkout.prune)
    first, second = checkout.prune
    assert first.drop.pattern == r"^runtime\." and first.keep is not None and first.keep.pattern == r"^runtime\.main$"
    assert first.drop.search("runtime.mallocgc") and first.keep.search("runtime.main")
    assert second.drop.pattern == "^internal/" and second.keep is None

    search = config.apps[1]
    assert search.scrape is not None
    assert search.scrape.every == timedelta(seconds=90)
    assert search.scrape.duration == timedelta(milliseconds=500)
    assert search.scrape.sample_size == 1 and type(search.scrape.sample_size) is int
    assert search.scrape.targets.file is None
    assert search.scrape.targets.static == (Target("10.0.0.5:6060"), Target("[::1]:6060", "/custom/profile"))
    assert search.prune == ()

    assert config.apps[2] == AppConfig("uploads-only")
    assert config.apps[2].scrape is None


def test_config_app_listed_and_unlisted(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    assert config.app("checkout") is config.apps[0]
    assert config.app("search-2") is config.apps[1]
    other = config.app("not-listed")
    assert other == AppConfig("not-listed")
    assert other.scrape is None and other.prune == ()
    assert Config().app("anything") == AppConfig("anything")


# -- defaults -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_empty_file_gives_defaults(tmp_path: Path, text: str) -> None:
    config = load_config(write(tmp_path, text))
    assert config.blob_store == f"file://{(tmp_path / 'data' / 'blobs').resolve()}"
    assert config.api_url == DEFAULT_API_URL
    assert config.api_token is None
    assert config.sweep_every == timedelta(seconds=60)
    assert config.clean is None
    assert config.apps == ()


def test_section_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        api:
          token: ""
        clean:
          older_than: 24h
        apps:
          - name: a
            scrape:
              targets:
                static: []
          - name: b
            scrape: null
            prune: null
        """,
    )
    config = load_config(path)
    assert config.api_url == DEFAULT_API_URL
    assert config.api_token is None  # an empty token is no token
    assert config.clean == CleanConfig(every=timedelta(hours=1), older_than=timedelta(hours=24), larger_than=None)
    a = config.app("a")
    assert a.scrape == ScrapeConfig(
        every=timedelta(minutes=5), duration=timedelta(seconds=30), sample_size=3, targets=TargetsConfig()
    )
    assert config.app("b") == AppConfig("b")


NEVER_INLINE = """\
apps:
  - name: own
    never_inline:
      - ^example\\.com/cache\\.\\(\\*LRU\\)\\.get$
      - ^main\\.hot
  - name: own-only
    never_inline: ['^main\\.hot$']
    never_inline_defaults: false
  - name: none
    never_inline_defaults: false
  - name: defaults
    never_inline: null
"""


def test_never_inline_adds_to_the_built_in_list_unless_turned_off(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, NEVER_INLINE))
    own = config.app("own").never_inline
    assert own[: len(BUILTIN_NEVER_INLINE)] == BUILTIN_NEVER_INLINE
    assert [rx.pattern for rx in own[len(BUILTIN_NEVER_INLINE) :]] == [r"^example\.com/cache\.\(\*LRU\)\.get$", r"^main\.hot"]
    assert own[-2].search("example.com/cache.(*LRU).get") and own[-1].search("main.hotter")  # searched, as prune's
    assert [rx.pattern for rx in config.app("own-only").never_inline] == [r"^main\.hot$"]
    assert config.app("none").never_inline == ()
    assert config.app("defaults").never_inline == BUILTIN_NEVER_INLINE
    # Apps without an entry, or without the keys, get the built-in list.
    assert config.app("not-listed").never_inline == BUILTIN_NEVER_INLINE
    assert AppConfig("x").never_inline == BUILTIN_NEVER_INLINE


def test_the_built_in_list_matches_the_full_go_names_only() -> None:
    def guarded(name: str) -> bool:
        return any(rx.search(name) for rx in BUILTIN_NEVER_INLINE)

    assert guarded("google.golang.org/grpc/internal/transport.(*loopyWriter).processData")
    assert guarded("runtime.gopark")
    for name in ("runtime.goparkunlock", "runtime.gopark.func1", "xruntime.gopark",
                 "google.golang.org/grpc/internal/transport.(*loopyWriter).processDataFrame",
                 "google.golang.org/grpc/internal/transport.loopyWriter.processData"):
        assert not guarded(name), name


def test_bad_never_inline_regex_names_the_file_line_and_setting(tmp_path: Path) -> None:
    path = write(tmp_path, "apps:\n  - name: a\n    never_inline:\n      - ok\n      - '(unclosed'\n")
    assert expect_error(path) == (
        f"{path}:5: app a: never_inline[1]: bad regular expression '(unclosed':"
        " missing ), unterminated subpattern at position 0"
    )


def test_clean_larger_than_alone_and_zero_as_on_the_command_line(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "clean: {larger_than: 4096}\n"))
    assert config.clean == CleanConfig(every=timedelta(hours=1), older_than=None, larger_than=4096)
    # As `autopgo clean --larger-than 0`: every non-empty merged profile.
    config = load_config(write(tmp_path, "clean: {older_than: 1h, larger_than: 0}\n"))
    assert config.clean is not None and config.clean.larger_than == 0


# -- relative paths -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        ("file://./blobs", "conf/blobs"),
        ("file://./blobs/x", "conf/blobs/x"),
        ("file://.", "conf"),
        ("file://../shared/blobs", "shared/blobs"),
        ("blobs", "conf/blobs"),
        ("../shared/blobs", "shared/blobs"),
    ],
)
def test_relative_blob_store_resolves_against_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str, expected: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(write(tmp_path / "conf", f"blob_store: {store}\n"))
    assert config.blob_store == f"file://{(tmp_path / expected).resolve()}"


@pytest.mark.parametrize("store", ["file:///srv/blobs", "s3://bucket/prefix?region=eu-west-1", "/srv/plain"])
def test_absolute_blob_store_kept(tmp_path: Path, store: str) -> None:
    config = load_config(write(tmp_path, f"blob_store: {store}\n"))
    assert config.blob_store == (f"file://{store}" if store.startswith("/") else store)


def test_file_localhost_url_is_absolute(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "blob_store: file://localhost/srv/blobs\n"))
    assert config.blob_store in ("file://localhost/srv/blobs", "file:///srv/blobs")


def test_relative_target_file_resolves_against_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(
        tmp_path / "conf",
        """\
        apps:
          - name: a
            scrape: {targets: {file: targets.yaml}}
          - name: b
            scrape: {targets: {file: ../other/t.json}}
          - name: c
            scrape: {targets: {file: /abs/t.yaml}}
        """,
    )
    config = load_config(path)
    assert config.app("a").scrape.targets.file == (tmp_path / "conf" / "targets.yaml").resolve()
    assert config.app("b").scrape.targets.file == (tmp_path / "other" / "t.json").resolve()
    assert config.app("c").scrape.targets.file == Path("/abs/t.yaml")


def test_relative_config_path_resolves_against_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "conf", "blob_store: blobs\napps: [{name: a, scrape: {targets: {file: t.yaml}}}]\n")
    monkeypatch.chdir(tmp_path)
    config = load_config("conf/autopgo.yaml")
    assert config.blob_store == f"file://{(tmp_path / 'conf' / 'blobs').resolve()}"
    assert config.app("a").scrape.targets.file == (tmp_path / "conf" / "t.yaml").resolve()


def test_parse_config_base_defaults_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = parse_config({"blob_store": "b", "apps": [{"name": "a", "scrape": {"targets": {"file": "t"}}}]})
    assert config.blob_store == f"file://{(tmp_path / 'b').resolve()}"
    assert config.app("a").scrape.targets.file == (tmp_path / "t").resolve()


def test_static_target_scheme_is_kept(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'apps: [{name: a, scrape: {targets: {static: [{address: "10.0.0.1:443", scheme: https}]}}}]\n',
    )
    config = load_config(path)
    assert "https" in repr(config.app("a").scrape.targets.static)


# -- one ConfigError per mistake ----------------------------------------------------

APP = "apps:\n  - name: a\n    scrape:\n"


def scrape_with(lines: str) -> str:
    return APP + textwrap.indent(textwrap.dedent(lines), "      ")


BAD = [
    ("unknown-top-level", "blobstore: /x\n", ["blobstore"]),
    ("top-level-list", "- name: a\n", ["the file", "mapping"]),
    ("top-level-scalar", "just words\n", ["the file", "mapping"]),
    ("unknown-app-key", "apps: [{name: a, scrap: {}}]\n", ["apps[0]", "scrap"]),
    ("bad-app-name", "apps: [{name: ok}, {name: Bad_Name}]\n", ["apps[1].name", "Bad_Name"]),
    ("app-name-missing", "apps: [{prune: []}]\n", ["apps[0].name"]),
    ("app-name-number", "apps: [{name: 42}]\n", ["apps[0].name"]),
    ("app-name-too-long", f"apps: [{{name: {'a' * 64}}}]\n", ["apps[0].name"]),
    ("app-not-mapping", "apps: [checkout]\n", ["apps[0]"]),
    ("duplicate-app", "apps: [{name: checkout}, {name: web}, {name: checkout}]\n", ["apps", "checkout", "twice"]),
    ("apps-not-list", "apps: {name: a}\n", ["apps"]),
    ("apps-null", "apps:\n", ["apps"]),
    ("scrape-not-mapping", "apps: [{name: a, scrape: 5}]\n", ["app a: scrape"]),
    ("scrape-unknown-key", scrape_with("targets: {static: []}\nperiod: 5m\n"), ["app a: scrape", "period"]),
    ("targets-missing", scrape_with("every: 5m\n"), ["app a: scrape.targets"]),
    ("targets-empty", scrape_with("targets: {}\n"), ["app a: scrape.targets"]),
    ("targets-both", scrape_with("targets: {file: t.yaml, static: []}\n"), ["app a: scrape.targets"]),
    ("targets-unknown", scrape_with("targets: {consul: svc}\n"), ["app a: scrape.targets", "consul"]),
    ("targets-file-empty", scrape_with('targets: {file: ""}\n'), ["app a: scrape.targets.file"]),
    ("targets-file-number", scrape_with("targets: {file: 5}\n"), ["app a: scrape.targets.file"]),
    ("static-not-list", scrape_with('targets: {static: "10.0.0.1:80"}\n'), ["app a: scrape.targets.static"]),
    ("static-no-port", scrape_with("targets: {static: [{address: 10.0.0.5}]}\n"), ["app a: scrape.targets.static[0].address"]),
    ("static-no-address", scrape_with("targets: {static: [{path: /x}]}\n"), ["app a: scrape.targets.static[0].address"]),
    (
        "static-bad-path",
        scrape_with("targets: {static: [{address: 'h:1'}, {address: 'h:2', path: debug/pprof}]}\n"),
        ["app a: scrape.targets.static[1].path"],
    ),
    (
        "static-bad-scheme",
        scrape_with("targets: {static: [{address: 'h:1', scheme: ftp}]}\n"),
        ["app a: scrape.targets.static[0].scheme"],
    ),
    ("static-unknown-key", scrape_with("targets: {static: [{address: 'h:1', port: 2}]}\n"), ["static[0]", "port"]),
    ("sample-size-0", scrape_with("sample_size: 0\ntargets: {static: []}\n"), ["app a: scrape.sample_size"]),
    ("sample-size-str", scrape_with("sample_size: '3'\ntargets: {static: []}\n"), ["app a: scrape.sample_size"]),
    ("sample-size-true", scrape_with("sample_size: true\ntargets: {static: []}\n"), ["app a: scrape.sample_size"]),
    ("sample-size-float", scrape_with("sample_size: 2.5\ntargets: {static: []}\n"), ["app a: scrape.sample_size"]),
    ("duration-no-unit", scrape_with("duration: '10'\ntargets: {static: []}\n"), ["app a: scrape.duration"]),
    ("duration-negative", scrape_with("duration: -5s\ntargets: {static: []}\n"), ["app a: scrape.duration"]),
    ("duration-zero", scrape_with("duration: 0\ntargets: {static: []}\n"), ["app a: scrape.duration"]),
    ("duration-zero-s", scrape_with("duration: 0s\ntargets: {static: []}\n"), ["app a: scrape.duration"]),
    ("every-bad-unit", scrape_with("every: 5x\ntargets: {static: []}\n"), ["app a: scrape.every"]),
    ("every-negative-number", scrape_with("every: -5\ntargets: {static: []}\n"), ["app a: scrape.every"]),
    ("sweep-every-no-unit", "sweep_every: '10'\n", ["sweep_every"]),
    ("sweep-every-bare-number", "sweep_every: 60\n", ["sweep_every: 60 has no unit: write 60s, 1m or 1h30m"]),
    ("sweep-every-bare-float", "sweep_every: 1.5\n", ["sweep_every: 1.5 has no unit"]),
    ("every-bare-number", scrape_with("every: 300\ntargets: {static: []}\n"), ["app a: scrape.every: 300 has no unit"]),
    ("timeout-bare-number", scrape_with("targets: {consul: {timeout: 5}}\n"), ["scrape.targets.consul.timeout: 5 has no unit"]),
    ("sweep-every-bool", "sweep_every: true\n", ["sweep_every"]),
    ("clean-no-bounds", "clean: {every: 1h}\n", ["clean", "older_than"]),
    ("clean-null", "clean:\n", ["clean"]),
    ("clean-unknown", "clean: {older_than: 1h, max_size: 5}\n", ["clean", "max_size"]),
    ("clean-larger-negative", "clean: {larger_than: -1}\n", ["clean.larger_than"]),
    ("clean-larger-string", "clean: {larger_than: 10 apples}\n", ["clean.larger_than", "10 apples"]),
    ("clean-larger-fraction", "clean: {larger_than: 0.3K}\n", ["clean.larger_than", "whole number of bytes"]),
    ("clean-larger-float", "clean: {larger_than: 2.5}\n", ["clean.larger_than", "whole number of bytes"]),
    ("clean-older-bad", "clean: {older_than: 30 days}\n", ["clean.older_than"]),
    ("clean-older-no-unit", "clean: {older_than: 720}\n", ["clean.older_than: 720 has no unit"]),
    ("clean-every-bad", "clean: {every: soon, older_than: 1h}\n", ["clean.every"]),
    ("prune-bad-regex", "apps: [{name: a, prune: [{drop: '(unclosed'}]}]\n", ["app a: prune", "drop"]),
    ("prune-bad-keep-regex", "apps: [{name: a, prune: [{drop: x, keep: '[z-a]'}]}]\n", ["app a: prune", "keep"]),
    ("prune-unknown-key", "apps: [{name: a, prune: [{dorp: x}]}]\n", ["app a: prune", "dorp"]),
    ("prune-not-list", "apps: [{name: a, prune: {drop: x}}]\n", ["app a: prune"]),
    ("prune-no-drop", "apps: [{name: a, prune: [{keep: x}]}]\n", ["app a: prune", "drop"]),
    ("never-inline-bad-regex", "apps: [{name: a, never_inline: ['[z-a]']}]\n", ["app a: never_inline[0]", "bad regular"]),
    ("never-inline-not-list", "apps: [{name: a, never_inline: '^x$'}]\n", ["app a: never_inline", "list"]),
    ("never-inline-number", "apps: [{name: a, never_inline: [5]}]\n", ["app a: never_inline[0]", "5"]),
    ("never-inline-empty", "apps: [{name: a, never_inline: ['']}]\n", ["app a: never_inline[0]"]),
    ("never-inline-defaults-str", "apps: [{name: a, never_inline_defaults: 'no'}]\n", ["app a: never_inline_defaults"]),
    ("never-inline-typo", "apps: [{name: a, never_inlined: [x]}]\n", ["apps[0]", "never_inlined"]),
    ("api-not-mapping", "api: http://127.0.0.1:8080\n", ["api"]),
    ("api-unknown-key", "api: {uri: http://x}\n", ["api", "uri"]),
    ("api-token-number", "api: {token: 12345}\n", ["api.token"]),
    ("api-token-list", "api: {token: [a, b]}\n", ["api.token"]),
    ("api-url-empty", "api: {url: ''}\n", ["api.url"]),
    ("api-url-number", "api: {url: 8080}\n", ["api.url"]),
    ("blob-store-number", "blob_store: 5\n", ["blob_store"]),
    ("blob-store-empty", "blob_store: ''\n", ["blob_store"]),
    ("blob-store-gs", "blob_store: gs://bucket/pgo\n", [":1: blob_store: ", "'gs://bucket/pgo'", "unknown scheme 'gs'"]),
    ("blob-store-file-host", "blob_store: file://blobs/x\n", [":1: blob_store: ", "cannot name a host", "file://./"]),
    ("blob-store-bad-s3", "blob_store: s3://Bad_Bucket\n", [":1: blob_store: ", "invalid bucket name"]),
]
# A typo in a required key is two mistakes: the unknown key and the missing one.
BAD_COUNT = {"prune-unknown-key": 2}


@pytest.mark.parametrize(("text", "settings"), [(t, s) for _, t, s in BAD], ids=[i for i, _, _ in BAD])
def test_bad_config_is_one_config_error(request: pytest.FixtureRequest, tmp_path: Path, text: str, settings: list[str]) -> None:
    expect_error(write(tmp_path, text), *settings, count=BAD_COUNT.get(request.node.callspec.id, 1))


def test_bad_config_table_is_large() -> None:
    assert len(BAD) >= 20


def test_not_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "apps: [\n  - name: a\n  bad: {\n")
    message = expect_error(path, "not valid YAML")
    assert message.startswith(f"{path}:2:3: not valid YAML: ")  # where in the file: line and column


def test_not_yaml_keeps_pyyamls_problem_and_position(tmp_path: Path) -> None:
    """One line, FILE:LINE:COLUMN and pyyaml's problem, without its context snippet squashed into it."""
    path = write(tmp_path, "api:\n  url: http://x\nsweep_every: 60s\nclean: older_than: 1h\n")
    message = expect_error(path)
    assert message == f"{path}:4:18: not valid YAML: mapping values are not allowed here"


def test_not_yaml_report_shows_the_line_under_a_caret(tmp_path: Path) -> None:
    """The report a person reads: that line, then the line it points at and a caret at the column."""
    path = write(tmp_path, "api:\n  url: http://x\nsweep_every: 60s\nclean: older_than: 1h\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.report().split("\n") == [
        f"{path}:4:18: not valid YAML: mapping values are not allowed here",
        "  4 | clean: older_than: 1h",
        "    |                  ^",
    ]


@pytest.mark.parametrize(
    ("text", "report"),
    [
        (  # pyyaml's context has a place of its own: both lines, in the file's order
            "a: 'unterminated\n",
            ["2:1: not valid YAML: found unexpected end of stream",
             "  1 | a: 'unterminated", "    |    ^ while scanning a quoted scalar", "  2 | ", "    | ^"],
        ),
        (  # the same place: one line, its caret saying what pyyaml was doing
            "apps: [\n  - name: a\n",
            ["2:3: not valid YAML: expected the node content, but found '-'",
             "  2 |   - name: a", "    |   ^ while parsing a flow node"],
        ),
        (  # two places on one line: the line once, a caret for each; a tab is kept so that the caret lines up
            'k: "\t\\q"\n',
            ["1:7: not valid YAML: found unknown escape character 'q'",
             '  1 | k: "\t\\q"', "    |    ^ while scanning a double-quoted scalar", "    |     \t ^"],
        ),
        (  # a character YAML does not allow, which pyyaml places by its offset alone
            "apps:\n  - name: a\x0c\n",
            ["2:12: not valid YAML: unacceptable character #x000c: special characters are not allowed",
             "  2 |   - name: a\x0c", "    |            ^"],
        ),
        (  # pyyaml's context without a place of its own: it says what the caret's place was being read as
            "apps:\n\t- name: a\n",
            ["2:1: not valid YAML: found character '\\t' that cannot start any token",
             "  2 | \t- name: a", "    | ^ while scanning for the next token"],
        ),
    ],
)
def test_not_yaml_report_keeps_pyyamls_context(tmp_path: Path, text: str, report: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.report().split("\n") == [f"{path}:{report[0]}", *report[1:]]
    assert str(info.value) == f"{path}:{report[0]}"  # one line wherever one line is wanted (logs, health)


def test_not_yaml_report_of_a_very_long_line_shows_the_part_around_each_column(tmp_path: Path) -> None:
    path = write(tmp_path, '{"apps": [' + '{"name": "a"}, ' * 100 + '{"name": "b"} "x", ' + '{"name": "c"}, ' * 100 + "]}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    summary, start, start_caret, middle, middle_caret = info.value.report().split("\n")
    assert summary == f"{path}:1:1525: not valid YAML: expected ',' or ']', but got '<scalar>'"
    assert start.startswith('  1 | {"apps": [') and start_caret == "    |          ^ while parsing a flow sequence"
    assert middle.startswith("  1 | ...") and middle.endswith("...") and len(middle) < 120
    assert middle[middle_caret.index("^") :].startswith('"x", {"name": "c"}')


def test_not_yaml_tab_indent(tmp_path: Path) -> None:
    expect_error(write(tmp_path, "apps:\n\t- name: a\n"), "not valid YAML")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "autopgo.yaml"
    path.write_bytes(b"blob_store: /data/\xff\xfe\n")
    expect_error(path, "UTF-8")


def test_missing_file(tmp_path: Path) -> None:
    expect_error(tmp_path / "nope.yaml", "cannot read")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    (tmp_path / "autopgo.yaml").mkdir()
    expect_error(tmp_path / "autopgo.yaml", "cannot read")


def test_unsafe_yaml_tag_is_refused(tmp_path: Path) -> None:
    expect_error(write(tmp_path, "blob_store: !!python/object/apply:os.getcwd []\n"), "not valid YAML")


@pytest.mark.parametrize("text", ["[]\n", "false\n", "0\n"])
def test_falsy_non_mapping_top_level_is_refused(tmp_path: Path, text: str) -> None:
    expect_error(write(tmp_path, text), "the file")


@pytest.mark.parametrize("value", [".inf", "1.0e+30", "99999999999999999", "'99999999999999h'"])
def test_overflowing_duration_is_config_error(tmp_path: Path, value: str) -> None:
    expect_error(write(tmp_path, f"sweep_every: {value}\n"), "sweep_every")


THREE_MISTAKES = """\
blob_store: gs://bucket/pgo
sweep_every: 60
apps:
  - name: checkout
    scrape:
      every: 5x
      targets: {static: []}
"""


def test_every_mistake_is_reported_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, THREE_MISTAKES)
    message = expect_error(path, count=3)
    assert message.split("\n") == [
        f"{path}:1: blob_store: invalid blob store URL 'gs://bucket/pgo':"
        " unknown scheme 'gs' (use file:// or s3://, or a plain path)",
        f"{path}:2: sweep_every: 60 has no unit: write 60s, 1m or 1h30m",
        f"{path}:6: app checkout: scrape.every: expected a duration such as 90s, 5m or 1h30m, not '5x'",
    ]


def test_several_mistakes_are_counted_first_in_the_report(tmp_path: Path) -> None:
    path = write(tmp_path, THREE_MISTAKES)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.report().split("\n") == [f"{path}: 3 mistakes", *str(info.value).split("\n")]
    one = write(tmp_path, "sweep_every: 60\n", name="one.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(one)
    assert info.value.report() == str(info.value) == f"{one}:1: sweep_every: 60 has no unit: write 60s, 1m or 1h30m"


def test_mistakes_anywhere_in_the_file_are_all_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        api: {uri: x}
        clean:
          every: 1h
        apps:
          - name: Bad
            prune: [{drop: '(x'}]
          - name: ok
            scrape:
              sample_size: 0
              targets:
                static:
                  - address: nohost
                  - {address: 'h:1', path: nope}
          - name: ok
        """,
    )
    lines = expect_error(path, count=8).split("\n")
    assert [line.split(": ")[0].rpartition(":")[2] for line in lines] == ["1", "2", "5", "6", "9", "12", "13", "14"]
    assert "api: unknown setting 'uri'" in lines[0]
    assert "clean: give older_than, larger_than or both" in lines[1]  # the parent mapping's line
    assert "apps[0].name: " in lines[2] and "apps[0]: prune, rule 1: drop: bad regular expression" in lines[3]
    assert "app ok: scrape.sample_size" in lines[4]
    assert "app ok: scrape.targets.static[0].address" in lines[5]
    assert "app ok: scrape.targets.static[1].path" in lines[6]
    assert "apps[2].name: ok is listed twice" in lines[7]


def test_missing_setting_points_at_its_parent_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "apps:\n  - name: a\n    scrape:\n      every: 5m\n      duration: 30s\n")
    assert expect_error(path) == f"{path}:3: app a: scrape.targets: missing (one of file, static, kubernetes, consul, nomad)"


def test_parse_config_errors_without_file_name() -> None:
    with pytest.raises(ConfigError, match=re.escape("apps[0].name")):
        parse_config({"apps": [{"name": "UPPER"}]})
    with pytest.raises(ConfigError, match="the file: expected a mapping"):
        parse_config(["a"])
    with pytest.raises(ConfigError) as info:
        parse_config({"sweep_every": 60, "blob_store": "gs://b", "clean": {"larger_than": "1x"}})
    assert sorted(info.value.problems) == [
        "blob_store: invalid blob store URL 'gs://b': unknown scheme 'gs' (use file:// or s3://, or a plain path)",
        "clean.larger_than: expected a size such as 1048576, 64MiB or 1G, not '1x'",
        "sweep_every: 60 has no unit: write 60s, 1m or 1h30m",
    ]


# -- durations and sizes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("250ms", timedelta(milliseconds=250)),
        ("1ms", timedelta(milliseconds=1)),
        ("300ms", timedelta(milliseconds=300)),
        ("30s", timedelta(seconds=30)),
        ("90s", timedelta(seconds=90)),
        ("1.5s", timedelta(seconds=1.5)),
        ("5m", timedelta(minutes=5)),
        ("0.5m", timedelta(seconds=30)),
        ("2h", timedelta(hours=2)),
        ("1.5h", timedelta(minutes=90)),
        ("1h30m", timedelta(minutes=90)),
        ("1h0m30s", timedelta(hours=1, seconds=30)),
        ("2h45m10.5s", timedelta(hours=2, minutes=45, seconds=10.5)),
        ("720h", timedelta(days=30)),
        ("30d", timedelta(days=30)),
        ("1d12h", timedelta(hours=36)),
        (".5s", timedelta(milliseconds=500)),
        ("1500us", timedelta(microseconds=1500)),
        ("1500µs", timedelta(microseconds=1500)),
        ("1500μs", timedelta(microseconds=1500)),
        ("2000000ns", timedelta(milliseconds=2)),
        ("+5s", timedelta(seconds=5)),
        (" 10s ", timedelta(seconds=10)),
    ],
)
def test_parse_duration(value: object, expected: timedelta) -> None:
    result = parse_duration(value, "x")
    assert isinstance(result, timedelta)
    assert result == expected


@pytest.mark.parametrize(
    "value",
    ["-5s", "5x", "", "s", "5 s", "1h 30m", "5S", "1H", "1.5.s", "1h-30m", "0s", "0ms", "0h0m", "-0s", "1ns", True, False, None, [5],
     float("nan"), float("inf"), "2562048h"],
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(value, "where.setting")
    assert type(info.value) is ConfigError
    message = str(info.value)
    assert message.startswith("where.setting: ") and "\n" not in message
    assert repr(value) in message


@pytest.mark.parametrize("value", ["10", 10, 0.25, "1.5", 60])
def test_parse_duration_refuses_a_number_without_unit(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(value, "sweep_every")
    assert str(info.value) == f"sweep_every: {value} has no unit: write {value}s, 1m or 1h30m"


@pytest.mark.parametrize("value", [0, "0", -5, "-5"])
def test_parse_duration_refuses_zero_and_negative_numbers(value: object) -> None:
    with pytest.raises(ConfigError, match="^x: must be positive"):
        parse_duration(value, "x")


@pytest.mark.parametrize("value", ["0.0001ms", "999ns", 1e-9])
def test_parse_duration_never_returns_zero(value: object) -> None:
    try:
        result = parse_duration(value, "x")
    except ConfigError:
        return  # refusing it is fine too
    assert result > timedelta(0)


def test_go_durations_and_sizes_in_every_setting(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        sweep_every: 1m30s
        clean:
          every: 1.5h
          older_than: 30d
          larger_than: 50MiB
        apps:
          - name: a
            scrape:
              every: 1h30m
              duration: 2500ms
              targets: {kubernetes: {timeout: 1m0.5s}}
        """,
    )
    config = load_config(path)
    assert config.sweep_every == timedelta(seconds=90)
    assert config.clean == CleanConfig(timedelta(minutes=90), timedelta(days=30), 50 << 20)
    scrape = config.app("a").scrape
    assert scrape is not None and (scrape.every, scrape.duration) == (timedelta(minutes=90), timedelta(seconds=2.5))
    assert scrape.targets.kubernetes is not None and scrape.targets.kubernetes.timeout == 60.5


@pytest.mark.parametrize(
    ("value", "expected"),
    [("50000000", 50000000), ("0", 0), ("7B", 7), ("4k", 4096), ("4KB", 4096), ("4KiB", 4096), ("64mb", 64 << 20),
     ("64MiB", 64 << 20), ("1.5G", 3 << 29), ("2 GB", 2 << 30), ("1TiB", 1 << 40), ("0.5K", 512)],
)
def test_clean_larger_than_sizes(tmp_path: Path, value: str, expected: int) -> None:
    config = load_config(write(tmp_path, f"clean: {{larger_than: {value}}}\n"))
    assert config.clean is not None and config.clean.larger_than == expected


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://127.0.0.1:9000", ("127.0.0.1", 9000)),
        ("http://autopgo.internal", ("autopgo.internal", 80)),
        ("https://[::1]:8443/", ("::1", 8443)),
    ],
)
def test_listen_address_comes_from_api_url(url: str, address: tuple[str, int]) -> None:
    assert parse_config({"api": {"url": url}}).listen_address() == address


@pytest.mark.parametrize("url", ["ftp://x", "http://", "http://h:99999", "localhost:8080"])
def test_api_url_must_be_http(url: str) -> None:
    with pytest.raises(ConfigError, match="api.url: expected http://host"):
        parse_config({"api": {"url": url}})
