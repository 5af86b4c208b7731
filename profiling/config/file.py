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
        never_inline: ['^example\\.com/cache\\.lookup$']   # functions PGO must not inline
        never_inline_defaults: true      # false: without the built-in list (noinline.py)
        window: 72h                      # serve only what was collected this recently (parts.py)
        builds: 2                        # serve only the newest 2 builds' data
        workloads: {api: 3, batch: 1}    # scale each workload's CPU to its weight's share

Durations are written as in Go (``90s``, ``1.5h``, ``1h30m``; also ``d``) and
sizes as bytes or with a binary unit (``50000000``, ``64MiB``): see ``units.py``.
A relative ``blob_store`` or file is relative to the file's folder. Every
mistake is reported, all in one ``ConfigError``, each as a line
``FILE:LINE: SETTING: what is wrong``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..discovery import (
    DEFAULT_DISCOVERY_TIMEOUT,
    ClientTLS,
    ConsulTargets,
    KubernetesTargets,
    NomadTargets,
    TargetsConfig,
    read_target_list,
)
from ..errors import ConfigError
from ..names import WORKLOAD_RULE, is_valid_app_name, is_valid_workload
from ..pipeline import PartsPolicy, PruneRule, compile_pattern, read_rules
from ..pprof import BUILTIN_NEVER_INLINE
from ..storage import DEFAULT_BLOB_STORE, StoreURLError, parse_store_url
from ..units import UnitError, parse_size
from ..units import parse_duration as _parse_duration
from ..yamlfile import Problems, Setting, load_yaml

DEFAULT_API_URL = "http://127.0.0.1:8080"


@dataclass(frozen=True, slots=True)
class ScrapeConfig:
    """How to scrape an app: how often, for how long, how many instances at a time, and where to find them."""

    every: timedelta
    duration: timedelta
    sample_size: int
    targets: TargetsConfig


@dataclass(frozen=True, slots=True)
class AppConfig:
    """One app's settings: how to scrape it, how to prune its profile, what PGO must not inline, what parts to serve."""

    name: str
    scrape: ScrapeConfig | None = None
    prune: tuple[PruneRule, ...] = ()
    # functions PGO must not inline: the built-in list unless turned off, then the app's own
    never_inline: tuple[re.Pattern[str], ...] = BUILTIN_NEVER_INLINE
    # window, builds and workloads: none set, the app's profile is the merge of all its uploads
    parts: PartsPolicy = PartsPolicy()


@dataclass(frozen=True, slots=True)
class CleanConfig:
    """How often to remove merged profiles, and which: not written for ``older_than``, or over ``larger_than`` bytes."""

    every: timedelta
    older_than: timedelta | None
    larger_than: int | None


@dataclass(frozen=True, slots=True)
class Config:
    """The whole of ``autopgo.yaml``, validated; a setting the file leaves out has its default."""

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
    """A positive duration such as ``1h30m`` (see ``units.parse_duration``); ConfigError naming ``where``."""
    try:
        return _parse_duration(value, where)
    except UnitError as exc:
        raise ConfigError(str(exc)) from None


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
    """Read and validate ``autopgo.yaml``; relative paths in it are relative to its folder.

    Every mistake is reported in one ConfigError, each naming the file, the line and the setting.
    """
    path = Path(path)
    data = load_yaml(path)
    problems = Problems(path)
    config = _config(Setting.root({} if data is None else data, problems), path.parent)
    problems.check()
    return config


def parse_config(data: Any, base: Path = Path(".")) -> Config:
    """Validate configuration data given directly (no file, so mistakes name only the settings)."""
    problems = Problems()
    config = _config(Setting.root(data, problems), base)
    problems.check()
    return config


# The readers below report each mistake to the setting's Problems and go on with a stand-in
# value, so that one pass finds every mistake; a Config with stand-ins is never returned.


def _config(root: Setting, base: Path) -> Config:
    if not root.mapping({"blob_store", "api", "sweep_every", "clean", "apps"}):
        return Config()
    api = root.get("api", {})
    api_ok = api.mapping({"url", "token", "protect_reads"})
    api_url, token, protect_reads = _api(api) if api_ok else (DEFAULT_API_URL, None, False)
    return Config(
        blob_store=_blob_store(root.get("blob_store", DEFAULT_BLOB_STORE), base),
        api_url=api_url,
        api_token=token,
        api_protect_reads=protect_reads,
        sweep_every=_duration(root.get("sweep_every", "60s")),
        clean=_clean(root.get("clean")) if root.has("clean") else None,
        apps=_apps(root.get("apps", []), base),
        given=frozenset([*root.value, *(f"api.{key}" for key in (api.value if api_ok else ()))]),
    )


def _api(api: Setting) -> tuple[str, str | None, bool]:
    url = api.get("url", DEFAULT_API_URL)
    if not isinstance(url.value, str) or not _is_http_url(url.value):
        url.fail(f"expected http://host[:port] or https://host[:port], not {url.value!r}")
    token = api.get("token")
    if token.value and not isinstance(token.value, str):
        token.fail("expected a string")
    protect_reads = api.get("protect_reads", False)
    if not isinstance(protect_reads.value, bool):
        protect_reads.fail(f"expected true or false, not {protect_reads.value!r}")
    return str(url.value).rstrip("/"), token.value or None, protect_reads.value is True


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _blob_store(setting: Setting, base: Path) -> str:
    """The store URL, checked now (a bad one is a mistake in this file) and with a relative
    location made absolute against ``base``."""
    if not isinstance(setting.value, str) or not setting.value:
        setting.fail(f"expected a URL, not {setting.value!r}")
        return DEFAULT_BLOB_STORE
    try:
        return parse_store_url(setting.value, base).url
    except StoreURLError as exc:
        setting.fail(str(exc))
        return DEFAULT_BLOB_STORE


def _duration(setting: Setting) -> timedelta:
    try:
        return _parse_duration(setting.value, setting.name)
    except UnitError as exc:
        setting.fail(exc.problem)
        return timedelta(0)


def _apps(setting: Setting, base: Path) -> tuple[AppConfig, ...]:
    if not isinstance(setting.value, list):
        setting.fail("expected a list of apps")
        return ()
    apps: list[AppConfig] = []
    for entry in setting.items():
        app = _app(entry, base)
        if app is None:
            continue
        if any(other.name == app.name for other in apps):
            entry.get("name").fail(f"{app.name} is listed twice")
        apps.append(app)
    return tuple(apps)


def _app(entry: Setting, base: Path) -> AppConfig | None:
    keys = {"name", "scrape", "prune", "never_inline", "never_inline_defaults", "window", "builds", "workloads"}
    if not entry.mapping(keys):
        return None
    name = entry.get("name")
    valid = isinstance(name.value, str) and is_valid_app_name(name.value)
    if not valid:
        name.fail(f"use 1 to 63 characters of a-z, 0-9 and '-', not {name.value!r}")
    label = f"app {name.value}" if valid else entry.name  # settings below are named after the app
    scrape = entry.get("scrape", name=f"{label}: scrape")
    prune = entry.get("prune", name=f"{label}: prune")
    app = AppConfig(
        name.value,
        _scrape(scrape, base) if scrape.value is not None else None,
        read_rules(prune),
        _never_inline(entry, label),
        _parts(entry, label),
    )
    return app if valid else None


def _parts(entry: Setting, label: str) -> PartsPolicy:
    """The app's ``window`` (a duration), ``builds`` (how many of the newest builds) and
    ``workloads`` (workload name -> weight)."""
    window = entry.get("window", name=f"{label}: window")
    builds = entry.get("builds", name=f"{label}: builds")
    if builds.value is not None and (
        not isinstance(builds.value, int) or isinstance(builds.value, bool) or builds.value < 1
    ):
        builds.fail(f"expected a whole number of at least 1, not {builds.value!r}")
    workloads = entry.get("workloads", name=f"{label}: workloads")
    weights: dict[str, float] = {}
    if workloads.value is not None and (not isinstance(workloads.value, dict) or not workloads.value):
        workloads.fail("expected a mapping of workload names to weights, such as {api: 3, batch: 1}")
    elif workloads.value is not None:
        for name in workloads.value:
            weight = workloads.get(name, name=f"{workloads.name}.{name}")
            if not is_valid_workload(name):
                weight.fail(f"a workload name is {WORKLOAD_RULE}")
            elif isinstance(weight.value, bool) or not isinstance(weight.value, (int, float)) or not weight.value > 0:
                weight.fail(f"expected a positive number, not {weight.value!r}")
            elif weight.value == float("inf"):
                weight.fail("expected a finite number")
            else:
                weights[name] = float(weight.value)
    return PartsPolicy.of(
        _duration(window) if window.value is not None else None,
        builds.value if isinstance(builds.value, int) and not isinstance(builds.value, bool) and builds.value > 0 else None,
        weights,
    )


def _never_inline(entry: Setting, label: str) -> tuple[re.Pattern[str], ...]:
    """The app's ``never_inline`` regexes, after the built-in ones unless ``never_inline_defaults``
    is false."""
    defaults = entry.get("never_inline_defaults", True, name=f"{label}: never_inline_defaults")
    if not isinstance(defaults.value, bool):
        defaults.fail(f"expected true or false, not {defaults.value!r}")
    patterns = entry.get("never_inline", name=f"{label}: never_inline")
    own: list[re.Pattern[str]] = []
    if patterns.value is not None and not isinstance(patterns.value, list):
        patterns.fail("expected a list of regular expressions")
    elif patterns.value is not None:
        for item in patterns.items():
            if not isinstance(item.value, str) or not item.value:
                item.fail(f"expected a non-empty regular expression, not {item.value!r}")
                continue
            try:
                own.append(compile_pattern(item.value, item.name))
            except ConfigError as exc:
                item.problems.add("", str(exc), item.line)  # the message names the setting
    return (*(BUILTIN_NEVER_INLINE if defaults.value is not False else ()), *own)


def _scrape(setting: Setting, base: Path) -> ScrapeConfig | None:
    if not setting.mapping({"every", "duration", "sample_size", "targets"}):
        return None
    sample_size = setting.get("sample_size", 3)
    value = sample_size.value
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        sample_size.fail(f"expected a whole number of at least 1, not {value!r}")
    targets = setting.get("targets")
    if not setting.has("targets"):
        targets.fail(f"missing (one of {', '.join(TARGET_MODES)})")
    return ScrapeConfig(
        every=_duration(setting.get("every", "5m")),
        duration=_duration(setting.get("duration", "30s")),
        sample_size=value,
        targets=_targets(targets, base) if setting.has("targets") else TargetsConfig(),
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


def _targets(setting: Setting, base: Path) -> TargetsConfig:
    if not setting.mapping(TARGET_MODES):
        return TargetsConfig()
    modes = [mode for mode in TARGET_MODES if setting.has(mode)]
    if len(modes) != 1:
        if len(modes) > 1 or not setting.value:  # unknown keys alone are reported already
            setting.fail(f"give exactly one of {', '.join(TARGET_MODES)}")
        return TargetsConfig()
    mode = setting.get(modes[0])
    if modes[0] == "file":
        if not isinstance(mode.value, str) or not mode.value:
            mode.fail(f"expected a path, not {mode.value!r}")
            return TargetsConfig()
        return TargetsConfig(file=(base / mode.value).resolve())
    if modes[0] == "static":
        return TargetsConfig(static=tuple(read_target_list(mode)))
    if mode.value is None:  # "kubernetes:" alone: every setting from the environment
        mode = mode.with_value({})
    if modes[0] == "kubernetes":
        return TargetsConfig(kubernetes=_kubernetes(mode, base))
    if modes[0] == "consul":
        keys = {"address", "token", "datacenter", "timeout", *_TLS_KEYS}
        return TargetsConfig(consul=ConsulTargets(**_api_settings(mode, keys, base)))
    keys = {"address", "token", "namespace", "region", "timeout", *_TLS_KEYS}
    return TargetsConfig(nomad=NomadTargets(**_api_settings(mode, keys, base)))


def _kubernetes(setting: Setting, base: Path) -> KubernetesTargets:
    if not setting.mapping({"namespace", "kubeconfig", "in_cluster", "timeout"}):
        return KubernetesTargets()
    namespace = _text(setting.get("namespace"))
    if namespace is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", namespace):
        setting.get("namespace").fail(f"expected a Kubernetes namespace name, not {namespace!r}")
    in_cluster = setting.get("in_cluster")
    if in_cluster.value is not None and not isinstance(in_cluster.value, bool):
        in_cluster.fail(f"expected true or false, not {in_cluster.value!r}")
    kubeconfig = _text(setting.get("kubeconfig"))
    if kubeconfig is not None and in_cluster.value is True:
        setting.fail("give kubeconfig or in_cluster: true, not both")
    if kubeconfig is None and in_cluster.value is False:
        setting.get("kubeconfig").fail("missing (needed unless in_cluster is true)")
    return KubernetesTargets(
        namespace=namespace,
        kubeconfig=_config_path(kubeconfig, base),
        in_cluster=kubeconfig is None,
        timeout=_timeout(setting),
    )


def _api_settings(setting: Setting, keys: set[str], base: Path) -> dict[str, Any]:
    """Consul and Nomad settings: strings, file paths, a flag and a timeout, all optional."""
    if not setting.mapping(keys):
        return {}
    out: dict[str, Any] = {"timeout": _timeout(setting)}
    for key in sorted(keys & set(setting.value) - {"timeout"}):
        value = setting.get(key)
        if key == "tls_skip_verify":
            if value.value is not None and not isinstance(value.value, bool):
                value.fail(f"expected true or false, not {value.value!r}")
            out[key] = value.value
        elif key.endswith("_file"):
            out[key] = _config_path(_text(value), base)
        else:
            out[key] = _text(value)
    if out.get("key_file") and not out.get("cert_file"):
        setting.get("cert_file").fail("missing (key_file is given)")
    address = out.get("address")
    if address is not None and ("://" in address and not address.startswith(("http://", "https://"))):
        setting.get("address").fail(
            f"expected host:port, http://host:port or https://host:port, not {address!r}"
        )
    out["tls"] = ClientTLS(**{field: out.pop(key) for key, field in _TLS_KEYS.items() if key in out})
    return out


def _text(setting: Setting) -> str | None:
    value = setting.value
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        setting.fail(f"expected a non-empty string, not {value!r}")
        return None
    return value.strip()


def _config_path(value: str | None, base: Path) -> Path | None:
    return None if value is None else (base / Path(value).expanduser()).resolve()


def _timeout(setting: Setting) -> float:
    timeout = setting.get("timeout")
    if timeout.value is None:
        return DEFAULT_DISCOVERY_TIMEOUT.total_seconds()
    return _duration(timeout).total_seconds()


def _clean(setting: Setting) -> CleanConfig | None:
    if not setting.mapping({"every", "older_than", "larger_than"}):
        return None
    older = setting.get("older_than")
    larger = setting.get("larger_than")
    if older.value is None and larger.value is None:
        setting.fail("give older_than, larger_than or both")
    return CleanConfig(
        every=_duration(setting.get("every", "1h")),
        older_than=_duration(older) if older.value is not None else None,
        larger_than=_size(larger) if larger.value is not None else None,
    )


def _size(setting: Setting) -> int:
    try:
        return parse_size(setting.value, setting.name)
    except UnitError as exc:
        setting.fail(exc.problem)
        return 0
