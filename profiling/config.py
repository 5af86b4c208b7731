"""The pipeline's configuration file, ``autopgo.yaml``.

One YAML file names the blob store, the API, and per app how to scrape it and
how to prune its merged profile::

    blob_store: file://./data/blobs      # or s3://bucket/prefix?endpoint=...&region=...
    api:
      url: http://127.0.0.1:8080         # where scrapers upload and builds download
      token: ""                          # optional bearer token (or AUTOPGO_API_TOKEN)
      protect_reads: false               # true: the token guards downloads and listings too
    sweep_every: 60s                     # how often pending uploads are merged anyway
    clean:
      every: 1h
      older_than: 720h                   # remove merged profiles not written for 30 days
      larger_than: 50000000              # and/or larger than this many bytes
    apps:
      - name: checkout
        scrape:
          every: 5m                      # how often to scrape
          duration: 30s                  # /debug/pprof/profile?seconds=...
          sample_size: 3                 # instances per scrape, picked at random
          targets:
            file: targets.yaml           # a list of {address, path}; or inline:
            # static: [{address: "10.0.0.5:6060", path: /debug/pprof/profile}]
            # kubernetes: {namespace: shop, kubeconfig: ~/.kube/config}   # or in_cluster: true
            # consul: {address: "https://consul:8501", token: ..., ca_file: ca.pem}
            # nomad: {address: "https://nomad:4646", namespace: shop, region: eu}
        prune:
          - drop: ^runtime\\.
            keep: ^runtime\\.main$

Durations are a number with a unit (``ms``, ``s``, ``m``, ``h``). Every mistake
is reported as one ``ConfigError`` naming the file and the setting.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .names import is_valid_app_name
from .rules import PruneRule, parse_rules
from .targets import Target, parse_target_list
from .yamlfile import load_yaml

DEFAULT_API_URL = "http://127.0.0.1:8080"
DEFAULT_BLOB_STORE = "file://./data/blobs"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


DEFAULT_DISCOVERY_TIMEOUT = timedelta(seconds=10)


@dataclass(frozen=True, slots=True)
class KubernetesTargets:
    """Pods labelled for the app, found in-cluster or through a kubeconfig; no namespace = all."""

    namespace: str | None = None
    kubeconfig: Path | None = None
    in_cluster: bool = True
    timeout: float = DEFAULT_DISCOVERY_TIMEOUT.total_seconds()


@dataclass(frozen=True, slots=True)
class ClientTLS:
    """How a Consul or Nomad client uses TLS (keys ``ca_file``, ``cert_file``, ``key_file``,
    ``tls_skip_verify`` and ``tls_server_name`` in the file); unset ones come from the
    environment, as the Consul and Nomad CLIs take them."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    skip_verify: bool | None = None
    server_name: str | None = None


@dataclass(frozen=True, slots=True)
class ConsulTargets:
    """Consul catalog services tagged for the app; unset settings come from ``CONSUL_*``."""

    address: str | None = None
    token: str | None = None
    datacenter: str | None = None
    tls: ClientTLS = ClientTLS()
    timeout: float = DEFAULT_DISCOVERY_TIMEOUT.total_seconds()


@dataclass(frozen=True, slots=True)
class NomadTargets:
    """Nomad service registrations tagged for the app; unset settings come from ``NOMAD_*``."""

    address: str | None = None
    token: str | None = None
    namespace: str | None = None
    region: str | None = None
    tls: ClientTLS = ClientTLS()
    timeout: float = DEFAULT_DISCOVERY_TIMEOUT.total_seconds()


@dataclass(frozen=True, slots=True)
class TargetsConfig:
    """Where an app's instances are listed: exactly one of a file, a static list,
    Kubernetes, Consul or Nomad."""

    file: Path | None = None
    static: tuple[Target, ...] = ()
    kubernetes: KubernetesTargets | None = None
    consul: ConsulTargets | None = None
    nomad: NomadTargets | None = None


@dataclass(frozen=True, slots=True)
class ScrapeConfig:
    every: timedelta
    duration: timedelta
    sample_size: int
    targets: TargetsConfig


@dataclass(frozen=True, slots=True)
class AppConfig:
    name: str
    scrape: ScrapeConfig | None = None
    prune: tuple[PruneRule, ...] = ()


@dataclass(frozen=True, slots=True)
class CleanConfig:
    every: timedelta
    older_than: timedelta | None
    larger_than: int | None


@dataclass(frozen=True, slots=True)
class Config:
    blob_store: str = DEFAULT_BLOB_STORE
    api_url: str = DEFAULT_API_URL
    api_token: str | None = None
    api_protect_reads: bool = False  # the token guards downloads and listings too
    sweep_every: timedelta = timedelta(seconds=60)
    clean: CleanConfig | None = None
    apps: tuple[AppConfig, ...] = field(default_factory=tuple)
    given: frozenset[str] = frozenset()  # the dotted settings the file gives, e.g. "api.url"

    def listen_address(self) -> tuple[str, int]:
        """Where the API answering at ``api_url`` listens: its host, and its port or the scheme's."""
        parts = urlsplit(self.api_url)
        return parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)

    def app(self, name: str) -> AppConfig:
        """The app's settings; an app without any (uploaded to directly) gets the defaults."""
        for app in self.apps:
            if app.name == name:
                return app
        return AppConfig(name)


def parse_duration(value: Any, where: str) -> timedelta:
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    try:
        duration = timedelta(seconds=seconds) if seconds is not None else None
    except (OverflowError, ValueError):
        duration = None
    if duration is None or duration <= timedelta(0):
        raise ConfigError(f"{where}: expected a positive duration such as 30s, 5m or 1h, not {value!r}")
    return duration


DEFAULT_CONFIG = Path("autopgo.yaml")


def find_config(path: str | Path | None = None) -> tuple[Config, Path | None]:
    """The configuration at ``path`` (which must exist), else ./autopgo.yaml if there is one,
    else the defaults (relative to the current folder); and the file it came from, if any."""
    if path is not None:
        return load_config(path), Path(path).resolve()
    if DEFAULT_CONFIG.exists():
        return load_config(DEFAULT_CONFIG), DEFAULT_CONFIG.resolve()
    return parse_config({}, base=Path.cwd()), None


def load_config(path: str | Path) -> Config:
    """Read and validate ``autopgo.yaml``; relative paths in it are relative to its folder."""
    path = Path(path)
    data = load_yaml(path)
    try:
        return parse_config({} if data is None else data, base=path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_config(data: Any, base: Path = Path(".")) -> Config:
    root = _mapping(data, "the file", {"blob_store", "api", "sweep_every", "clean", "apps"})
    api = _mapping(root.get("api", {}), "api", {"url", "token", "protect_reads"})
    apps = root.get("apps", [])
    if not isinstance(apps, list):
        raise ConfigError("apps: expected a list of apps")
    parsed = tuple(_app(entry, f"apps[{i}]", base) for i, entry in enumerate(apps))
    names = [a.name for a in parsed]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"apps: {name} is listed twice")
    blob_store = root.get("blob_store", DEFAULT_BLOB_STORE)
    api_url = api.get("url", DEFAULT_API_URL)
    for what, value in (("blob_store", blob_store), ("api.url", api_url)):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{what}: expected a URL")
    if not _is_http_url(api_url):
        raise ConfigError(f"api.url: expected http://host[:port] or https://host[:port], not {api_url!r}")
    token = api.get("token") or None
    if token is not None and not isinstance(token, str):
        raise ConfigError("api.token: expected a string")
    protect_reads = api.get("protect_reads", False)
    if not isinstance(protect_reads, bool):
        raise ConfigError(f"api.protect_reads: expected true or false, not {protect_reads!r}")
    return Config(
        blob_store=_resolve_store(blob_store, base),
        api_url=api_url.rstrip("/"),
        api_token=token,
        api_protect_reads=protect_reads,
        sweep_every=parse_duration(root.get("sweep_every", "60s"), "sweep_every"),
        clean=_clean(root["clean"]) if "clean" in root else None,
        apps=parsed,
        given=frozenset([*root, *(f"api.{key}" for key in api)]),
    )


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _mapping(value: Any, where: str, keys: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = sorted(map(str, set(value) - keys))
    if unknown:
        raise ConfigError(f"{where}: unknown setting {unknown[0]!r} (expected one of {', '.join(sorted(keys))})")
    return value


def _app(entry: Any, where: str, base: Path) -> AppConfig:
    raw = _mapping(entry, where, {"name", "scrape", "prune"})
    name = raw.get("name")
    if not isinstance(name, str) or not is_valid_app_name(name):
        raise ConfigError(f"{where}.name: use 1 to 63 characters of a-z, 0-9 and '-', not {name!r}")
    where = f"app {name}"
    scrape = _scrape(raw["scrape"], f"{where}: scrape", base) if raw.get("scrape") is not None else None
    return AppConfig(name, scrape, parse_rules(raw.get("prune"), f"{where}: prune"))


def _scrape(value: Any, where: str, base: Path) -> ScrapeConfig:
    raw = _mapping(value, where, {"every", "duration", "sample_size", "targets"})
    sample_size = raw.get("sample_size", 3)
    if not isinstance(sample_size, int) or isinstance(sample_size, bool) or sample_size < 1:
        raise ConfigError(f"{where}.sample_size: expected a whole number of at least 1, not {sample_size!r}")
    if "targets" not in raw:
        raise ConfigError(f"{where}.targets: missing (one of {', '.join(TARGET_MODES)})")
    return ScrapeConfig(
        every=parse_duration(raw.get("every", "5m"), f"{where}.every"),
        duration=parse_duration(raw.get("duration", "30s"), f"{where}.duration"),
        sample_size=sample_size,
        targets=_targets(raw["targets"], f"{where}.targets", base),
    )


TARGET_MODES = ("file", "static", "kubernetes", "consul", "nomad")
# file key -> ClientTLS field
_TLS_KEYS = {
    "ca_file": "ca_file",
    "cert_file": "cert_file",
    "key_file": "key_file",
    "tls_skip_verify": "skip_verify",
    "tls_server_name": "server_name",
}


def _targets(value: Any, where: str, base: Path) -> TargetsConfig:
    raw = _mapping(value, where, set(TARGET_MODES))
    if len(raw) != 1:
        raise ConfigError(f"{where}: give exactly one of {', '.join(TARGET_MODES)}")
    if "file" in raw:
        if not isinstance(raw["file"], str) or not raw["file"]:
            raise ConfigError(f"{where}.file: expected a path")
        return TargetsConfig(file=(base / raw["file"]).resolve())
    if "static" in raw:
        return TargetsConfig(static=tuple(parse_target_list(raw["static"], f"{where}.static")))
    if "kubernetes" in raw:
        return TargetsConfig(kubernetes=_kubernetes(raw["kubernetes"], f"{where}.kubernetes", base))
    if "consul" in raw:
        keys = {"address", "token", "datacenter", "timeout", *_TLS_KEYS}
        consul = _mapping({} if raw["consul"] is None else raw["consul"], f"{where}.consul", keys)
        return TargetsConfig(consul=ConsulTargets(**_api_settings(consul, f"{where}.consul", base)))
    keys = {"address", "token", "namespace", "region", "timeout", *_TLS_KEYS}
    nomad = _mapping({} if raw["nomad"] is None else raw["nomad"], f"{where}.nomad", keys)
    return TargetsConfig(nomad=NomadTargets(**_api_settings(nomad, f"{where}.nomad", base)))


def _kubernetes(value: Any, where: str, base: Path) -> KubernetesTargets:
    raw = _mapping({} if value is None else value, where, {"namespace", "kubeconfig", "in_cluster", "timeout"})
    namespace = _text(raw, "namespace", where)
    if namespace is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", namespace):
        raise ConfigError(f"{where}.namespace: expected a Kubernetes namespace name, not {namespace!r}")
    in_cluster = raw.get("in_cluster")
    if in_cluster is not None and not isinstance(in_cluster, bool):
        raise ConfigError(f"{where}.in_cluster: expected true or false, not {in_cluster!r}")
    kubeconfig = _text(raw, "kubeconfig", where)
    if kubeconfig is not None and in_cluster:
        raise ConfigError(f"{where}: give kubeconfig or in_cluster: true, not both")
    if kubeconfig is None and in_cluster is False:
        raise ConfigError(f"{where}.kubeconfig: missing (needed unless in_cluster is true)")
    return KubernetesTargets(
        namespace=namespace,
        kubeconfig=_config_path(kubeconfig, base),
        in_cluster=kubeconfig is None,
        timeout=_timeout(raw, where),
    )


def _api_settings(raw: Mapping[str, Any], where: str, base: Path) -> dict[str, Any]:
    """Consul and Nomad settings: strings, file paths, a flag and a timeout, all optional."""
    out: dict[str, Any] = {"timeout": _timeout(raw, where)}
    for key in sorted(set(raw) - {"timeout"}):
        if key == "tls_skip_verify":
            if raw[key] is not None and not isinstance(raw[key], bool):
                raise ConfigError(f"{where}.{key}: expected true or false, not {raw[key]!r}")
            out[key] = raw[key]
        elif key.endswith("_file"):
            out[key] = _config_path(_text(raw, key, where), base)
        else:
            out[key] = _text(raw, key, where)
    if out.get("key_file") and not out.get("cert_file"):
        raise ConfigError(f"{where}.cert_file: missing (key_file is given)")
    address = out.get("address")
    if address is not None and ("://" in address and not address.startswith(("http://", "https://"))):
        raise ConfigError(f"{where}.address: expected host:port, http://host:port or https://host:port, not {address!r}")
    out["tls"] = ClientTLS(**{field: out.pop(key) for key, field in _TLS_KEYS.items() if key in out})
    return out


def _text(raw: Mapping[str, Any], key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}.{key}: expected a non-empty string, not {value!r}")
    return value.strip()


def _config_path(value: str | None, base: Path) -> Path | None:
    return None if value is None else (base / Path(value).expanduser()).resolve()


def _timeout(raw: Mapping[str, Any], where: str) -> float:
    if raw.get("timeout") is None:
        return DEFAULT_DISCOVERY_TIMEOUT.total_seconds()
    return parse_duration(raw["timeout"], f"{where}.timeout").total_seconds()


def _clean(value: Any) -> CleanConfig:
    raw = _mapping(value, "clean", {"every", "older_than", "larger_than"})
    older = parse_duration(raw["older_than"], "clean.older_than") if raw.get("older_than") is not None else None
    larger = raw.get("larger_than")
    if larger is not None and (not isinstance(larger, int) or isinstance(larger, bool) or larger < 0):
        raise ConfigError(f"clean.larger_than: expected a number of bytes, not {larger!r}")
    if older is None and larger is None:
        raise ConfigError("clean: give older_than, larger_than or both")
    return CleanConfig(parse_duration(raw.get("every", "1h"), "clean.every"), older, larger)


def _resolve_store(url: str, base: Path) -> str:
    """Make a relative filesystem store absolute against the config file's folder."""
    if url.startswith("file://"):
        rest = url[len("file://") :]
        if rest.startswith(("/", "localhost/")):
            return url
        return f"file://{(base / rest).resolve()}"
    if "://" not in url:
        return f"file://{(base / url).resolve()}"
    return url
