"""What every command does the same way: no silent no-ops, `-` for standard output, errors that
name what the user gave, the version, several uploads at once."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from apiserver import RecordingSink, closed_port, thread_server
from sample_profiles import cpu_profile

from cli.main import main
from profiling.pipeline import merged_key
from profiling.pprof import Function, Line, Location, Profile, Sample, ValueType, decode, encode
from profiling.storage import open_store

AUTOPGO = Path(sys.executable).with_name("autopgo")


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def usage_error(capsys: pytest.CaptureFixture[str], *argv: object) -> str:
    """The problem argparse reports for a bad command line, which exits with status 2."""
    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in argv])
    assert exited.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    path = tmp_path / "cpu.pb.gz"
    path.write_bytes(encode(cpu_profile()))
    return path


# --------------------------------------------------------------------------- silent no-ops


def test_prune_config_without_the_app_is_an_error(
    tmp_path: Path, profile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "prune.yaml"
    rules.write_text("- app: svc\n  rules:\n    - drop: ^runtime\\.\n- app: web\n  rules: []\n")
    out = tmp_path / "out.pgo"
    code, _, err = run(capsys, "merge", "-o", out, "--prune-config", rules, "--app", "nosuchapp", profile)
    assert code == 1
    assert err == f"autopgo merge: {rules} has no rules for app 'nosuchapp' (it has: svc, web)\n"
    assert not out.exists()


@pytest.mark.parametrize("content", ["", "# nothing yet\n", "[]\n"])
def test_an_empty_rules_file_is_an_error(
    tmp_path: Path, profile: Path, content: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "prune.yaml"
    rules.write_text(content)
    code, _, err = run(capsys, "merge", "-o", tmp_path / "out.pgo", "--prune-config", rules, "--app", "svc", profile)
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"autopgo merge: {rules}") and "no rules: expected a list" in err


@pytest.mark.parametrize("jobs", ["-1", "0", "two"])
def test_jobs_must_be_at_least_one(
    tmp_path: Path, profile: Path, jobs: str, capsys: pytest.CaptureFixture[str]
) -> None:
    problem = usage_error(capsys, "merge", "-o", tmp_path / "out.pgo", "-j", jobs, profile)
    assert problem.endswith(f"argument -j/--jobs: expected a whole number of at least 1, not '{jobs}'")


@pytest.mark.parametrize("top", ["-3", "x"])
def test_top_must_not_be_negative(profile: Path, top: str, capsys: pytest.CaptureFixture[str]) -> None:
    problem = usage_error(capsys, "inspect", "-n", top, profile)
    assert problem.endswith(f"argument -n/--top: expected a whole number of at least 0, not '{top}'")


def test_top_zero_lists_no_functions(profile: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "inspect", "-n", "0", profile)
    assert code == 0 and "Top functions" not in out and "main.leaf" not in out


# --------------------------------------------------------------------------- conventions


def test_merge_to_standard_output(tmp_path: Path, profile: Path) -> None:
    result = subprocess.run(
        [str(AUTOPGO), "merge", "-o", "-", str(profile), str(profile)], capture_output=True, cwd=tmp_path, timeout=60
    )
    assert (result.returncode, result.stderr) == (0, b"")
    assert not (tmp_path / "-").exists()
    assert sum(s.values[0] for s in decode(result.stdout).samples) == 2 * sum(
        s.values[0] for s in cpu_profile().samples
    )


def test_merge_refuses_to_write_to_a_terminal(
    profile: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, err = run(capsys, "merge", "-o", "-", profile)
    assert (code, out) == (1, "")
    assert err == "autopgo merge: will not write a binary profile to a terminal: redirect it or use -o FILE\n"


def test_scrape_output_of_dash_is_refused_not_a_folder_named_dash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "autopgo.yaml").write_text(
        "apps:\n  - name: checkout\n    scrape:\n      every: 1m\n      duration: 1s\n"
        f"      targets:\n        static: [{{address: '127.0.0.1:{closed_port()}'}}]\n"
    )
    code, out, err = run(capsys, "scrape", "checkout", "--output", "-")
    assert (code, out) == (1, "")
    assert err == "autopgo scrape: --output names a folder for the profiles; standard output ('-') cannot hold them\n"
    assert not (tmp_path / "-").exists()


def test_an_unwritable_output_names_the_file_given(
    tmp_path: Path, profile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "nodir" / "x.pgo"
    code, _, err = run(capsys, "merge", "-o", target, profile)
    assert code == 1
    assert err == f"autopgo merge: {target}: No such file or directory\n"


def test_an_output_that_is_a_directory_names_it(
    tmp_path: Path, profile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "adir"
    target.mkdir()
    code, _, err = run(capsys, "merge", "-o", target, profile)
    assert code == 1
    assert err == f"autopgo merge: {target}: Is a directory\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_an_output_that_is_no_regular_file_is_written_not_replaced(tmp_path: Path, profile: Path) -> None:
    """``-o /dev/stdout`` or a named pipe: written into, as a shell redirection would, never replaced
    by a regular file (as root, replacing /dev/stdout would break it for every later process)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader is there, so opening to write does not wait
    try:
        result = subprocess.run(
            [str(AUTOPGO), "merge", "-o", str(fifo), str(profile)], capture_output=True, cwd=tmp_path, timeout=60
        )
        received = os.read(reader, 1 << 16)
    finally:
        os.close(reader)
    assert (result.returncode, result.stderr) == (0, b"")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    regular = tmp_path / "merged.pgo"
    subprocess.run([str(AUTOPGO), "merge", "-o", str(regular), str(profile)], check=True, timeout=60)
    assert received == regular.read_bytes()


def test_version() -> None:
    from importlib.metadata import version

    result = subprocess.run([str(AUTOPGO), "--version"], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, f"autopgo {version('autopgo')}\n")


def test_usage_errors_exit_with_status_two() -> None:
    result = subprocess.run([str(AUTOPGO), "merge", "--no-such-flag"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: autopgo merge")
    assert result.stderr.splitlines()[-1].startswith("autopgo merge: error: ")


def test_upload_takes_several_files(tmp_path: Path, profile: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.pb.gz"
    other.write_bytes(encode(cpu_profile(scale=2)))
    missing = tmp_path / "missing.pb.gz"
    store = open_store(str(tmp_path / "blobs"))
    try:
        with thread_server(store, RecordingSink()) as running:
            code, out, err = run(capsys, "upload", "--app", "svc", "--api-url", running.url, profile, missing, other)
        staged = sorted(info.key for info in store.list("svc/staging/"))
    finally:
        store.close()
    assert code == 1
    assert sorted(out.split()) == staged and len(staged) == 2
    assert err == f"autopgo upload: {missing}: No such file or directory\n"


def test_upload_reads_standard_input_once(profile: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "upload", "--app", "svc", "-", "-")
    assert (code, err) == (1, "autopgo upload: standard input can be read only once\n")


# --------------------------------------------------------------------------- closed pipes


def wide_profile(functions: int) -> Profile:
    """A CPU profile of ``functions`` leaf functions, one sample each: ``inspect -n`` lists them all."""
    names = [f"example.com/some/long/package/path.handler{i:05d}" for i in range(functions)]
    return Profile(
        sample_types=[ValueType("samples", "count"), ValueType("cpu", "nanoseconds")],
        samples=[Sample((i + 1,), (i + 1, (i + 1) * 10_000_000)) for i in range(functions)],
        locations=[Location(i + 1, 0, 0, (Line(i + 1, 10),)) for i in range(functions)],
        functions=[Function(i + 1, name, name, "handler.go", 1) for i, name in enumerate(names)],
        duration_nanos=10_000_000_000,
        period_type=ValueType("cpu", "nanoseconds"),
        period=10_000_000,
    )


def read_one_line_and_close(argv: list[str], cwd: Path) -> tuple[int, bytes, str]:
    """Run ``autopgo argv`` as ``... | head -1`` would: read a line of its output, close the pipe, wait.

    The output must be larger than a pipe's buffer and Python's, so that the command is still
    writing when the pipe closes.
    """
    with subprocess.Popen(
        [str(AUTOPGO), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()
        process.stdout.close()
        err = process.stderr.read().decode()
        return process.wait(timeout=60), first, err


def test_inspect_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    path = tmp_path / "wide.pb.gz"
    path.write_bytes(encode(wide_profile(3000)))
    code, first, err = read_one_line_and_close(["inspect", "-n", "3000", str(path)], tmp_path)
    assert first.startswith(b"Sample types: ")
    assert (code, err) == (0, "")


def test_clean_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "blobs"))
    try:
        for i in range(2000):
            store.put(merged_key(f"app-{i:04d}"), b"x")
    finally:
        store.close()
    argv = ["clean", "--blob-store", str(tmp_path / "blobs"), "--larger-than", "0", "--dry-run"]
    code, first, err = read_one_line_and_close(argv, tmp_path)
    assert first.startswith(b"would remove app-")
    assert (code, err) == (0, "")
