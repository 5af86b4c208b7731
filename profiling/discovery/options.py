"""How each discovery source is configured: the settings ``autopgo.yaml`` gives an app's ``targets``.

The config file builds these (``profiling.config``); the sources read them. They live here, beside the
sources, so that discovery does not depend on the whole configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from .targets import Target

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
