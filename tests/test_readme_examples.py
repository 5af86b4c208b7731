"""The README's shell examples, run as written against a real ``autopgo server`` and real Go CPU
profiles.

Every command in a ``sh`` block (including one offered in a comment, ``# or: curl ...``) or in an
inline code span is collected; those that talk to the API or handle profiles are run: every
``curl`` and every ``autopgo upload``, ``download``, ``list``, ``delete``, ``inspect``, ``merge``
and ``--version``. Only the address is changed (``http://autopgo:8080`` and the clients' default
become a test server's, through ``AUTOPGO_API_URL`` when the example names none) and placeholders
are filled in (``FILE``, a token written ``...``). The rest of an ``&&`` chain (``go build``,
``go tool pprof``) and the other commands are run by their own tests (test_go_toolchain,
test_pprof_web, test_scrape_cli, test_supervisor, test_deploy, test_distributed_*).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
from apiserver import AUTOPGO, ServerProcess

from profiling.pipeline import merge_pending, stage_upload
from profiling.pprof import decode
from profiling.storage import BlobStore, open_store

README = Path(__file__).resolve().parent.parent / "README.md"
RUN = ("upload", "download", "list", "delete", "inspect", "merge", "--version")  # autopgo's, run here
ADDRESSES = ("http://autopgo:8080", "http://127.0.0.1:8080", "http://localhost:8080")
TOKEN = "readme-token"
PROFILE_FILES = ("cpu.pb.gz", "cpu1.pb.gz", "cpu2.pb.gz", "cpu3.pb.gz")  # the file names examples use


@dataclass(frozen=True, slots=True)
class Example:
    """One command of the README (a step of an ``&&`` chain), where it is written."""

    line: int
    command: str

    @property
    def words(self) -> list[str]:
        """The command's words without leading ``NAME=value`` assignments, up to a pipe."""
        words = shlex.split(self.command.split(" | ")[0])
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            words.pop(0)
        return words

    @property
    def kind(self) -> str:
        """``curl``, ``autopgo <subcommand>``, or the program for a command not run here."""
        words = self.words
        program = Path(words[0]).name if words else ""
        if program == "autopgo" and len(words) > 1:
            return f"autopgo {words[1]}"
        return program

    @property
    def runnable(self) -> bool:
        return self.kind == "curl" or self.kind in {f"autopgo {c}" for c in RUN}


def examples(text: str) -> list[Example]:
    """Every command in the README's ``sh`` blocks and inline code spans, ``&&`` chains split."""
    found: list[Example] = []
    in_sh = in_block = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            in_block = not in_block
            in_sh = in_block and line == "```sh"
            continue
        if in_sh:
            parts = re.split(r"(?:^|\s+)#\s+", line, maxsplit=1)
            command = parts[0].strip()
            comment = parts[1] if len(parts) > 1 else ""
            offered = re.match(r"or: (.+)", comment)
            for chain in [command, offered.group(1) if offered else ""]:
                found += [Example(number, step.strip()) for step in chain.split(" && ") if step.strip()]
        elif not in_block:
            for span in re.findall(r"`((?:\.venv/bin/)?autopgo [^`]+|curl [^`]+)`", line):
                example = Example(number, span)
                if len(example.words) > 2 or example.kind == "autopgo --version":  # not a command's mere name
                    found.append(example)
    return found


def runnable() -> list[Example]:
    return [e for e in examples(README.read_text()) if e.runnable]


def test_every_client_and_profile_command_has_an_example() -> None:
    kinds = {e.kind for e in runnable()}
    assert kinds >= {"curl"} | {f"autopgo {c}" for c in RUN}
    curls = [e.words for e in runnable() if e.kind == "curl"]
    assert any("--data-binary" in w for w in curls) and any("-o" in w or "-fsSL" in w for w in curls)


# --------------------------------------------------------------------------- the server the examples talk to


@dataclass
class Servers:
    """One store, served openly and with the token required on every request."""

    store: BlobStore
    open: ServerProcess
    protected: ServerProcess
    profiles: list[bytes]  # real Go CPU profiles

    def served(self, app: str, *, trim: bool = False) -> httpx.Response:
        params = {"trim": "pgo"} if trim else {}
        return httpx.get(f"{self.open.url}/api/profile/{app}", params=params, timeout=30)

    def ensure_merged(self, app: str) -> None:
        """Give ``app`` a merged profile, as the pipeline would: staged uploads, then their merge."""
        if self.served(app).status_code == 200:
            return
        for data in self.profiles[:2]:
            stage_upload(self.store, app, data)
        merge_pending(self.store, app)
        assert self.served(app).status_code == 200


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, cpu_profiles: list[Path]) -> Iterator[Servers]:
    blobs = tmp_path_factory.mktemp("readme") / "blobs"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOPGO_", "PREFECT_"))}
    common = ["--blob-store", str(blobs), "--events", "log", "--workers", "0"]
    store = open_store(str(blobs))
    try:
        with ServerProcess(common, env=env) as open_server, ServerProcess(
            [*common, "--token", TOKEN, "--protect-reads"], env=env
        ) as protected:
            yield Servers(store, open_server, protected, [p.read_bytes() for p in cpu_profiles])
    finally:
        store.close()


# --------------------------------------------------------------------------- each example


def as_run_here(example: Example, url: str) -> str:
    """The example with the test server's address and the placeholders filled in."""
    command = example.command.replace(".venv/bin/autopgo", "autopgo")
    for address in ADDRESSES:
        command = command.replace(address, url)
    command = command.replace("AUTOPGO_API_TOKEN=...", f"AUTOPGO_API_TOKEN={TOKEN}")
    return re.sub(r"\bFILE\b", "cpu.pb.gz", command)


def app_of(example: Example) -> str | None:
    """The app an example reads or deletes, if any."""
    words = example.words
    if example.kind == "curl":
        urls = [w for w in words if "/api/profile/" in w]
        return urls[0].split("/api/profile/")[1].split("?")[0] if urls else None
    if example.kind in ("autopgo download", "autopgo delete"):
        return next(w for w in words[2:] if not w.startswith("-"))
    return None


def option(words: list[str], *names: str) -> str | None:
    for i, word in enumerate(words[:-1]):
        if word in names:
            return words[i + 1]
    return None


def total_samples(data: bytes) -> int:
    return sum(s.values[0] for s in decode(data).samples)


@pytest.mark.slow
@pytest.mark.parametrize("example", runnable(), ids=lambda e: f"line{e.line}:{e.command[:60]}")
def test_the_example_works_as_written(example: Example, servers: Servers, tmp_path: Path) -> None:
    for name, data in zip(PROFILE_FILES, servers.profiles):
        (tmp_path / name).write_bytes(data)
    app = app_of(example)
    if app is not None:
        servers.ensure_merged(app)
    server = servers.protected if "AUTOPGO_API_TOKEN=" in example.command else servers.open
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOPGO_", "PREFECT_"))}
    env.update(PATH=f"{AUTOPGO.parent}{os.pathsep}{env['PATH']}", AUTOPGO_API_URL=server.url)
    command = as_run_here(example, server.url)
    result = subprocess.run(["sh", "-c", command], cwd=tmp_path, env=env, capture_output=True, timeout=60)
    assert result.returncode == 0, f"README line {example.line}: {command}\n{result.stderr.decode()}"
    check_result(example, servers, tmp_path, result.stdout)


def check_result(example: Example, servers: Servers, work: Path, out: bytes) -> None:
    """That the example did what the README says it does."""
    words, kind = example.words, example.kind
    staged = {info.key for info in servers.store.list()}
    if kind == "curl" and "--data-binary" in words:
        reply = json.loads(out)
        assert reply.get("key") in staged, reply
    elif kind == "curl":
        saved = option(words, "-o", "--output")
        assert saved is not None, "a curl example that neither uploads nor saves"
        assert (work / saved).read_bytes() == servers.served(app_of(example) or "").content
    elif kind == "autopgo upload":
        keys = out.decode().split()
        assert len(keys) == len([w for w in words[2:] if w.endswith(".pb.gz")]) and set(keys) <= staged
    elif kind == "autopgo download":
        saved = work / (option(words, "-o", "--output") or "default.pgo")
        assert saved.read_bytes() == servers.served(app_of(example) or "", trim="--trim" in words).content
    elif kind == "autopgo delete":
        assert servers.served(app_of(example) or "").status_code == 404
    elif kind == "autopgo list":
        header, *rows = out.decode().splitlines()
        assert header.split() == ["APP", "SIZE", "LAST", "MODIFIED"] and rows
    elif kind == "autopgo merge":
        inputs = [work / w for w in words[2:] if w.endswith(".pb.gz")]
        output = option(words, "-o", "--output")
        assert output is not None, "a merge example without -o"
        assert total_samples((work / output).read_bytes()) == sum(total_samples(p.read_bytes()) for p in inputs)
    elif kind == "autopgo inspect":
        assert out.decode().startswith("Sample types: ")
    elif kind == "autopgo --version":
        assert out.decode() == f"autopgo {version('autopgo')}\n"
    else:
        raise AssertionError(f"no check for {kind}")
