"""`autopgo clean` and `autopgo up --help`, run in-process through cli.main."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cli.main import main
from profiling.pipeline import merged_key, new_staging_key
from profiling.storage import open_store

DAY = 24 * 3600


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No configuration from the environment, and a working directory without autopgo.yaml."""
    for name in ("AUTOPGO_BLOB_STORE", "AUTOPGO_CONFIG", "AUTOPGO_DATA", "AUTOPGO_PREFECT_PORT"):
        monkeypatch.delenv(name, raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)


class Blobs:
    """A filesystem store in a folder, with merged profiles and staged uploads of chosen sizes and ages."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def put(self, key: str, size: int, age_days: float = 0) -> str:
        store = open_store(self.url)
        try:
            store.put(key, bytes(range(256)) * (size // 256) + b"\x00" * (size % 256))
        finally:
            store.close()
        if age_days:
            when = time.time() - age_days * DAY
            os.utime(self.root.joinpath(*key.split("/")), (when, when))
        return key

    def merged(self, app: str, size: int, age_days: float = 0) -> str:
        return self.put(merged_key(app), size, age_days)

    def staged(self, app: str, size: int, age_days: float = 0) -> str:
        return self.put(new_staging_key(app), size, age_days)

    def keys(self) -> set[str]:
        store = open_store(self.url)
        try:
            return {info.key for info in store.list()}
        finally:
            store.close()


@pytest.fixture
def blobs(tmp_path: Path) -> Blobs:
    return Blobs(tmp_path / "blobs")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], list[str]]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def test_clean_larger_than(blobs: Blobs, capsys: pytest.CaptureFixture[str]) -> None:
    big = blobs.merged("big", 5000)
    small = blobs.merged("small", 100)
    edge = blobs.merged("edge", 1000)
    staged_big = blobs.staged("big", 9000)
    staged_small = blobs.staged("small", 9000)

    code, out, err = run(capsys, "clean", "--blob-store", blobs.url, "--larger-than", "1000")

    assert code == 0 and err == []
    assert len(out) == 1 and out[0].startswith(f"removed {big} (5000 bytes, last written ")
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert out[0].endswith("Z)") and today in out[0]
    assert blobs.keys() == {small, edge, staged_big, staged_small}  # staged uploads never cleaned


def test_clean_older_than(blobs: Blobs, capsys: pytest.CaptureFixture[str]) -> None:
    old = blobs.merged("old", 100, age_days=10)
    recent = blobs.merged("recent", 100, age_days=1)
    fresh = blobs.merged("fresh", 100)
    staged_old = blobs.staged("old", 100, age_days=30)

    code, out, err = run(capsys, "clean", "--blob-store", blobs.url, "--older-than", "72h")

    assert code == 0 and err == []
    ten_days_ago = datetime.fromtimestamp(time.time() - 10 * DAY, timezone.utc).strftime("%Y-%m-%d")
    assert len(out) == 1
    assert out[0].startswith(f"removed {old} (100 bytes, last written {ten_days_ago} ")
    assert blobs.keys() == {recent, fresh, staged_old}


@pytest.mark.parametrize(("size", "removed"), [("4KiB", ["big"]), ("4k", ["big"]), ("1KB", ["big", "mid"]), ("0.5K", ["big", "mid"])])
def test_clean_larger_than_with_a_unit(blobs: Blobs, capsys: pytest.CaptureFixture[str], size: str, removed: list[str]) -> None:
    """K, KB and KiB are all 1024 bytes, as --max-body and pprof count them."""
    made = {"big": blobs.merged("big", 4097), "mid": blobs.merged("mid", 1025), "edge": blobs.merged("edge", 512)}
    code, out, err = run(capsys, "clean", "--blob-store", blobs.url, "--larger-than", size, "--dry-run")
    assert code == 0 and err == []
    assert sorted(line.split()[2] for line in out) == sorted(made[app] for app in removed)


@pytest.mark.parametrize("duration", ["3d", "2d12h", "60h30m", "2.5d"])
def test_clean_older_than_go_duration(blobs: Blobs, capsys: pytest.CaptureFixture[str], duration: str) -> None:
    old = blobs.merged("old", 10, age_days=4)
    recent = blobs.merged("recent", 10, age_days=2)
    code, out, err = run(capsys, "clean", "--blob-store", blobs.url, "--older-than", duration)
    assert code == 0 and err == [] and len(out) == 1 and out[0].startswith(f"removed {old} ")
    assert blobs.keys() == {recent}


@pytest.mark.parametrize("url", ["file://./blobs", "file://./sub/../blobs", "blobs", "./blobs"])
def test_clean_relative_blob_store_from_the_current_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    blobs = Blobs(Path.cwd() / "blobs")  # the server's default is file://./data/blobs: clean takes the same form
    big = blobs.merged("big", 5000)
    code, out, err = run(capsys, "clean", "--blob-store", url, "--larger-than", "1000")
    assert (code, err) == (0, [])
    assert len(out) == 1 and out[0].startswith(f"removed {big} ")
    assert blobs.keys() == set()


def test_clean_relative_blob_store_from_env(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    blobs = Blobs(Path.cwd() / "data" / "blobs")
    big = blobs.merged("big", 5000)
    monkeypatch.setenv("AUTOPGO_BLOB_STORE", "file://./data/blobs")
    code, out, err = run(capsys, "clean", "--larger-than", "1000", "--dry-run")
    assert (code, err) == (0, []) and len(out) == 1 and big in out[0]


def test_clean_older_or_larger(blobs: Blobs, capsys: pytest.CaptureFixture[str]) -> None:
    old = blobs.merged("old", 10, age_days=5)
    big = blobs.merged("big", 10_000)
    keep = blobs.merged("keep", 10, age_days=1)

    code, out, err = run(capsys, "clean", "--blob-store", blobs.url, "--older-than", "48h", "--larger-than", "5000")

    assert code == 0 and err == []
    assert sorted(line.split()[1] for line in out) == sorted([old, big])
    assert all(line.startswith("removed ") for line in out)
    assert blobs.keys() == {keep}


def test_clean_dry_run_lists_and_removes_nothing(blobs: Blobs, capsys: pytest.CaptureFixture[str]) -> None:
    old = blobs.merged("old", 100, age_days=40)
    big = blobs.merged("big", 5000)
    keep = blobs.merged("keep", 100)
    staged = blobs.staged("old", 8000, age_days=40)
    before = blobs.keys()

    code, out, err = run(
        capsys, "clean", "--blob-store", blobs.url, "--older-than", "720h", "--larger-than", "1000", "--dry-run"
    )

    assert code == 0 and err == []
    assert len(out) == 2
    assert all(line.startswith("would remove ") for line in out)
    assert {line.split()[2] for line in out} == {old, big}
    assert f"would remove {big} (5000 bytes, " in "\n".join(out)
    assert blobs.keys() == before == {old, big, keep, staged}


def test_clean_nothing_to_remove(blobs: Blobs, capsys: pytest.CaptureFixture[str]) -> None:
    keep = blobs.merged("keep", 100)
    staged = blobs.staged("keep", 1 << 16, age_days=100)
    code, out, err = run(capsys, "clean", "--blob-store", blobs.url, "--larger-than", "100", "--older-than", "1h")
    assert code == 0 and out == [] and err == ["nothing to remove"]
    assert blobs.keys() == {keep, staged}


def test_clean_empty_or_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "clean", "--blob-store", str(tmp_path / "never-written"), "--larger-than", "1")
    assert code == 0 and out == [] and err == ["nothing to remove"]


def test_clean_larger_than_zero_removes_every_non_empty_merged_profile(
    blobs: Blobs, capsys: pytest.CaptureFixture[str]
) -> None:
    one = blobs.merged("one", 1)
    empty = blobs.merged("empty", 0)
    code, out, _ = run(capsys, "clean", "--blob-store", blobs.url, "--larger-than", "0", "--dry-run")
    assert code == 0 and [line.split()[2] for line in out] == [one]
    assert blobs.keys() == {one, empty}


def test_clean_blob_store_from_env(blobs: Blobs, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    big = blobs.merged("big", 5000)
    monkeypatch.setenv("AUTOPGO_BLOB_STORE", f"file://{blobs.root}")
    code, out, err = run(capsys, "clean", "--larger-than", "10")
    assert code == 0 and err == [] and len(out) == 1 and big in out[0]
    assert blobs.keys() == set()


def test_clean_blob_store_from_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    config = conf / "autopgo.yaml"
    config.write_text("blob_store: file://./store\nclean:\n  older_than: 720h\n")
    blobs = Blobs(conf / "store")  # relative to the config file, not to the working directory
    big = blobs.merged("big", 5000)
    small = blobs.merged("small", 10)

    code, out, err = run(capsys, "clean", "-c", str(config), "--larger-than", "1000")

    assert code == 0 and err == []
    assert len(out) == 1 and out[0].startswith(f"removed {big} ")
    assert blobs.keys() == {small}


def test_clean_config_from_env(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "elsewhere.yaml"
    config.write_text("blob_store: blobs-here\n")
    blobs = Blobs(tmp_path / "blobs-here")
    blobs.merged("big", 5000)
    monkeypatch.setenv("AUTOPGO_CONFIG", str(config))
    code, out, _ = run(capsys, "clean", "--larger-than", "1000", "--dry-run")
    assert code == 0 and len(out) == 1 and out[0].startswith("would remove big/default.pgo ")


def test_clean_blob_store_flag_overrides_config(tmp_path: Path, blobs: Blobs, capsys: pytest.CaptureFixture[str]) -> None:
    other = Blobs(tmp_path / "other")
    in_other = other.merged("big", 5000)
    big = blobs.merged("big", 5000)
    config = tmp_path / "autopgo.yaml"
    config.write_text(f"blob_store: {other.root}\n")
    code, out, _ = run(capsys, "clean", "-c", str(config), "--blob-store", blobs.url, "--larger-than", "1000")
    assert code == 0 and len(out) == 1
    assert blobs.keys() == set() and other.keys() == {in_other}
    assert big == in_other


def test_clean_bad_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "autopgo.yaml"
    config.write_text("blob_store: /x\nsweep_every: soon\n")
    code, out, err = run(capsys, "clean", "-c", str(config), "--larger-than", "1")
    assert code == 1 and out == []
    assert len(err) == 1 and err[0].startswith("autopgo clean: ")
    assert str(config) in err[0] and "sweep_every" in err[0]


def test_clean_reports_every_config_mistake_counted_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "autopgo.yaml"
    config.write_text("blob_store: gs://bucket/pgo\nsweep_every: 60\nclean:\n  every: 5x\n  older_than: 720h\n")
    code, out, err = run(capsys, "clean", "-c", str(config), "--larger-than", "1")
    assert code == 1 and out == []
    assert err == [
        f"autopgo clean: {config}: 3 mistakes",
        f"autopgo clean: {config}:1: blob_store: invalid blob store URL 'gs://bucket/pgo':"
        " unknown scheme 'gs' (use file:// or s3://, or a plain path)",
        f"autopgo clean: {config}:2: sweep_every: 60 has no unit: write 60s, 1m or 1h30m",
        f"autopgo clean: {config}:4: clean.every: expected a duration such as 90s, 5m or 1h30m, not '5x'",
    ]


def test_clean_config_that_is_not_yaml_shows_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """pyyaml's problem, line and column, and the lines it points at, each under a caret."""
    config = tmp_path / "autopgo.yaml"
    config.write_text("blob_store: /x\napps: [\n  {name: a},\n  {name: b}\nclean: {older_than: 1h}\n")
    code, out, err = run(capsys, "clean", "-c", str(config), "--larger-than", "1")
    assert code == 1 and out == []
    assert err == [
        f"autopgo clean: {config}:5:1: not valid YAML: expected ',' or ']', but got '<scalar>'",
        "autopgo clean:   2 | apps: [",
        "autopgo clean:     |       ^ while parsing a flow sequence",
        "autopgo clean:   5 | clean: {older_than: 1h}",
        "autopgo clean:     | ^",
    ]


def test_clean_without_bounds(blobs: Blobs, capsys: pytest.CaptureFixture[str]) -> None:
    merged = blobs.merged("big", 5000, age_days=100)
    code, out, err = run(capsys, "clean", "--blob-store", blobs.url)
    assert code == 1 and out == []
    assert err == ["autopgo clean: give --older-than, --larger-than or both"]
    code, out, err = run(capsys, "clean", "--blob-store", blobs.url, "--dry-run")
    assert code == 1 and out == [] and len(err) == 1
    assert blobs.keys() == {merged}


@pytest.mark.parametrize(
    ("duration", "problem"),
    [
        ("10", "10 has no unit: write 10s, 1m or 1h30m"),
        ("-5s", "must be positive, not '-5s'"),
        ("5x", "expected a duration such as 90s, 5m or 1h30m, not '5x'"),
        ("30 days", "expected a duration such as 90s, 5m or 1h30m, not '30 days'"),
        ("0s", "must be positive, not '0s'"),
        ("", "expected a duration such as 90s, 5m or 1h30m, not ''"),
    ],
)
def test_clean_bad_duration(blobs: Blobs, capsys: pytest.CaptureFixture[str], duration: str, problem: str) -> None:
    merged = blobs.merged("big", 5000, age_days=100)
    code, out, err = run(capsys, "clean", "--blob-store", blobs.url, f"--older-than={duration}")
    assert code == 1 and out == []
    assert err == [f"autopgo clean: --older-than: {problem}"]
    assert blobs.keys() == {merged}


def test_clean_huge_duration_is_one_line(blobs: Blobs, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "clean", "--blob-store", blobs.url, "--older-than", "99999999999999h")
    assert code == 1 and len(err) == 1


@pytest.mark.parametrize(
    ("size", "problem"),
    [
        ("-5", "must not be negative, not '-5'"),
        ("10 apples", "expected a size such as 1048576, 64MiB or 1G, not '10 apples'"),
        ("1.5", "1.5 is not a whole number of bytes"),
        ("0.3K", "0.3K is not a whole number of bytes"),
        ("5iB", "expected a size such as 1048576, 64MiB or 1G, not '5iB'"),
    ],
)
def test_clean_bad_larger_than(blobs: Blobs, capsys: pytest.CaptureFixture[str], size: str, problem: str) -> None:
    merged = blobs.merged("big", 5000)
    code, out, err = run(capsys, "clean", "--blob-store", blobs.url, f"--larger-than={size}")
    assert code == 1 and out == []
    assert err == [f"autopgo clean: --larger-than: {problem}"]
    assert blobs.keys() == {merged}


@pytest.mark.parametrize(
    ("flag", "value", "removed"),
    [
        ("--older-than", "1h30m", ["old", "hours"]),
        ("--older-than", "90s", ["old", "hours", "minutes"]),
        ("--older-than", "2d", ["old"]),
        ("--larger-than", "64MiB", []),
        ("--larger-than", "1048576", ["big"]),  # a bare number is bytes, as it always was
        ("--larger-than", "1MiB", ["big"]),
    ],
)
def test_clean_sizes_and_durations_as_go_users_write_them(
    blobs: Blobs, capsys: pytest.CaptureFixture[str], flag: str, value: str, removed: list[str]
) -> None:
    made = {
        "old": blobs.merged("old", 10, age_days=3),
        "hours": blobs.merged("hours", 10, age_days=2 / 24),
        "minutes": blobs.merged("minutes", 10, age_days=5 / 1440),
        "big": blobs.merged("big", (1 << 20) + 1),
    }
    code, out, err = run(capsys, "clean", "--blob-store", blobs.url, flag, value)
    assert (code, err) == (0, [] if removed else ["nothing to remove"])
    assert sorted(line.split()[1] for line in out) == sorted(made[app] for app in removed)
    assert blobs.keys() == {key for app, key in made.items() if app not in removed}


def test_clean_bad_blob_store_url(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "clean", "--blob-store", "ftp://host/x", "--larger-than", "1")
    assert code == 1 and out == []
    assert len(err) == 1 and err[0].startswith("autopgo clean: invalid blob store URL")


def test_clean_without_config_uses_default_store(capsys: pytest.CaptureFixture[str]) -> None:
    blobs = Blobs(Path.cwd() / "data" / "blobs")
    big = blobs.merged("big", 5000)
    code, out, err = run(capsys, "clean", "--larger-than", "10")
    assert (code, err) == (0, [])
    assert len(out) == 1 and big in out[0]


def test_up_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["up", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: autopgo up")
    for option in ("--config", "--data", "--prefect-port"):
        assert option in out


def test_clean_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["clean", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--blob-store", "--config", "--older-than", "--larger-than", "--dry-run"):
        assert option in out
