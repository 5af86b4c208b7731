"""The README's examples, run as a user would run them."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from apiserver import RecordingSink, thread_server
from sample_profiles import cpu_profile

from profiling.pipeline import merged_key
from profiling.pprof import encode
from profiling.storage import open_store

README = Path(__file__).resolve().parent.parent / "README.md"


def headline() -> list[str]:
    """The download half of the README's first command: ``curl ... && go build ...``."""
    block = re.search(r"```sh\n(curl .*?)\n```", README.read_text())
    assert block, "the README opens with a curl command"
    download, _, build = block.group(1).partition(" && ")
    assert build.startswith("go build -pgo=default.pgo ")
    return shlex.split(download)


def test_the_headline_download_fails_without_writing_the_error_into_the_profile(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "blobs"))
    profile = encode(cpu_profile())
    store.put(merged_key("checkout"), profile)
    try:
        with thread_server(store, RecordingSink()) as running:
            argv = [a.replace("http://autopgo:8080", running.url) for a in headline()]
            missing = [a.replace("/checkout", "/no-such-app") for a in argv]
            work = tmp_path / "build"
            work.mkdir()
            failed = subprocess.run(missing, cwd=work, capture_output=True, text=True, timeout=60)
            assert failed.returncode != 0 and "404" in failed.stderr
            assert not (work / "default.pgo").exists()  # go build never sees a JSON error as a profile

            (work / "default.pgo").write_bytes(b"the committed profile")
            assert subprocess.run(missing, cwd=work, capture_output=True, timeout=60).returncode != 0
            assert (work / "default.pgo").read_bytes() == b"the committed profile"

            fetched = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=60)
            assert fetched.returncode == 0, fetched.stderr
            assert (work / "default.pgo").read_bytes() == profile
    finally:
        store.close()


def block_after(heading: str, language: str = "yaml") -> str:
    text = README.read_text()
    start = text.index(heading)
    match = re.compile(rf"```{language}\n(.*?)\n```", re.S).search(text, start)
    assert match, f"no {language} block after {heading!r}"
    return match.group(1) + "\n"


def test_the_configuration_example_loads(tmp_path: Path) -> None:
    from profiling.config import load_config

    path = tmp_path / "autopgo.yaml"
    path.write_text(block_after("### `autopgo.yaml`"))
    config = load_config(path)
    assert config.blob_store == f"file://{tmp_path / 'data' / 'blobs'}"
    assert config.clean is not None and config.clean.larger_than == 50_000_000
    checkout = config.app("checkout")
    assert checkout.scrape is not None and checkout.scrape.targets.file == tmp_path / "targets.yaml"
    assert len(checkout.prune) == 1
    assert [rx.search("example.com/cache.(*LRU).get") is not None for rx in checkout.never_inline] == [False, False, True]


def test_the_configuration_error_example_is_what_autopgo_says(tmp_path: Path) -> None:
    from profiling.config import load_config
    from profiling.errors import ConfigError

    # The example with two mistakes, as the README describes them.
    text = block_after("### `autopgo.yaml`").replace("sweep_every: 60s ", "sweep_every: 60  ")
    text = text.replace("every: 5m ", "every: 5x ")
    (tmp_path / "autopgo.yaml").write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "autopgo.yaml")
    shown = [line.replace(str(tmp_path / "autopgo.yaml"), "autopgo.yaml") for line in error.value.report().splitlines()]
    assert shown == block_after("Every mistake in the file is reported", language="").splitlines()


def test_the_yaml_syntax_error_example_is_what_autopgo_says(tmp_path: Path) -> None:
    from profiling.config import load_config
    from profiling.errors import ConfigError

    (tmp_path / "autopgo.yaml").write_text("blob_store: ./blobs\napps: [\n  {name: a},\n  {name: b}\nclean: {older_than: 1h}\n")
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "autopgo.yaml")
    shown = [line.replace(str(tmp_path / "autopgo.yaml"), "autopgo.yaml") for line in error.value.report().splitlines()]
    assert shown == block_after("A file that is not valid YAML", language="").splitlines()


def test_the_prune_rules_example_loads(tmp_path: Path) -> None:
    from profiling.pipeline import load_prune_config

    path = tmp_path / "prune.yaml"
    path.write_text(block_after("### Prune rules"))
    assert [len(rules) for rules in load_prune_config(path).values()] == [2]
