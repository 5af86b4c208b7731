"""Targets from Kubernetes: running, ready pods labelled for the app.

Lists ``GET /api/v1/namespaces/<ns>/pods`` (or ``/api/v1/pods`` for every
namespace) with ``labelSelector=autopgo.scrape=true,autopgo.scrape.app=<app>``,
page by page (``limit`` / ``metadata.continue``). A pod counts when its phase is
``Running``, its ``Ready`` condition is ``True``, it has a ``podIP`` and is not
being deleted; the port comes from its annotation ``autopgo.scrape.port``, and
optional ``autopgo.scrape.path`` / ``autopgo.scrape.scheme`` annotations; an
optional ``autopgo.scrape.workload`` label names the workload its profiles are for.

Credentials come in-cluster (the service account's token and CA, and
``KUBERNETES_SERVICE_HOST`` / ``KUBERNETES_SERVICE_PORT``) or from a kubeconfig
file's current context (server, CA, and a token or client certificate). Both
are re-read at every listing, so rotated tokens and certificates are picked up.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import yaml

from .base import APP, DEFAULT_TIMEOUT, PORT, SCRAPE, WORKLOAD, DiscoveryError, HttpSource, host_port, make_target
from .targets import Target
from .tls import TLSSettings

if TYPE_CHECKING:
    from .options import KubernetesTargets

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
PAGE_SIZE = 500
MAX_PAGES = 10_000


@dataclass(frozen=True, slots=True)
class Credentials:
    """How to reach a Kubernetes API server: its URL, the bearer token (if any) and the TLS settings."""

    server: str
    token: str | None
    tls: TLSSettings


class KubernetesTargetSource(HttpSource):
    """The app's instances as Kubernetes lists them: running, ready pods labelled for the app."""

    kind = "kubernetes"

    def __init__(
        self,
        app: str,
        *,
        namespace: str | None = None,
        kubeconfig: str | Path | None = None,
        context: str | None = None,
        service_account_dir: str | Path = SERVICE_ACCOUNT_DIR,
        env: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        page_size: int = PAGE_SIZE,
    ) -> None:
        super().__init__(timeout)
        self.app, self.namespace, self.context = app, namespace, context
        self.kubeconfig = Path(kubeconfig) if kubeconfig else None
        self.service_account_dir = Path(service_account_dir)
        self.env = os.environ if env is None else env
        self.page_size = page_size

    @classmethod
    def from_config(cls, app: str, cfg: KubernetesTargets, env: Mapping[str, str] | None = None) -> KubernetesTargetSource:
        """The source ``cfg`` describes: through its kubeconfig if it names one, else in-cluster."""
        return cls(app, namespace=cfg.namespace, kubeconfig=cfg.kubeconfig, env=env, timeout=cfg.timeout)

    def credentials(self) -> Credentials:
        """The credentials, read afresh from the kubeconfig or the service account; ``DiscoveryError`` if unreadable."""
        return load_kubeconfig(self.kubeconfig, self.context) if self.kubeconfig else self._in_cluster()

    def _in_cluster(self) -> Credentials:
        host, port = self.env.get("KUBERNETES_SERVICE_HOST"), self.env.get("KUBERNETES_SERVICE_PORT") or "443"
        if not host:
            raise DiscoveryError("kubernetes: not in a cluster: KUBERNETES_SERVICE_HOST is not set (give a kubeconfig instead)")
        token_file, ca_file = self.service_account_dir / "token", self.service_account_dir / "ca.crt"
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise DiscoveryError(f"kubernetes: cannot read the service account token {token_file}: {exc.strerror or exc}") from None
        return Credentials(f"https://{host_port(host, int(port) if port.isdigit() else 443)}", token or None, TLSSettings(ca_file=ca_file))

    def _list(self) -> list[Target]:
        creds = self.credentials()
        server = creds.server.rstrip("/")
        path = f"/api/v1/namespaces/{quote(self.namespace, safe='')}/pods" if self.namespace else "/api/v1/pods"
        url = server + path
        headers = {"Authorization": f"Bearer {creds.token}"} if creds.token else {}
        verify = creds.tls.context("kubernetes") if server.startswith("https://") else True
        selector = f"{SCRAPE}=true,{APP}={self.app}"
        found: list[Target] = []
        with self._client(verify) as client:
            cont = ""
            for _ in range(MAX_PAGES):
                params = {"labelSelector": selector, "limit": str(self.page_size)}
                if cont:
                    params["continue"] = cont
                data, _headers = self._get(client, url, params=params, headers=headers, extensions=creds.tls.extensions)
                if not isinstance(data, dict) or not isinstance(data.get("items"), list):
                    raise self._fail(url, "expected a PodList with items")
                for pod in data["items"]:
                    if not isinstance(pod, dict):
                        raise self._fail(url, "expected each item to be a Pod")
                    target = self._target(pod)
                    if target is not None:
                        found.append(target)
                following = _mapping(data.get("metadata")).get("continue") or ""
                if not following:
                    return found
                if following == cont:
                    raise self._fail(url, "paging does not advance (continue token repeated)")
                cont = following
        raise self._fail(url, f"more than {MAX_PAGES} pages")

    def _target(self, pod: dict[str, Any]) -> Target | None:
        meta, status = _mapping(pod.get("metadata")), _mapping(pod.get("status"))
        labels = _strings(meta.get("labels"))
        if labels.get(SCRAPE) != "true" or labels.get(APP) != self.app:
            return None  # the selector already said so; a server ignoring it is no reason to scrape
        if meta.get("deletionTimestamp") or status.get("phase") != "Running" or not status.get("podIP"):
            return None
        conditions = status.get("conditions")
        if not isinstance(conditions, list) or not any(
            isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
        ):
            return None
        notes = _strings(meta.get("annotations"))
        if WORKLOAD in labels:  # a label, like the app's, so that a selector can pick a workload's pods
            notes[WORKLOAD] = labels[WORKLOAD]
        what = f"kubernetes pod {meta.get('namespace', '?')}/{meta.get('name', '?')}"
        if PORT not in notes:
            return make_target(status["podIP"], None, notes, f"{what} (no {PORT} annotation)")
        return make_target(status["podIP"], notes[PORT], notes, what)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> dict[str, str]:
    return {str(k): v for k, v in value.items() if isinstance(v, str)} if isinstance(value, dict) else {}


def load_kubeconfig(path: Path, context: str | None = None) -> Credentials:
    """The server, token and TLS settings of the kubeconfig's current (or given) context."""
    where = f"kubernetes: kubeconfig {path}"
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise DiscoveryError(f"{where}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise DiscoveryError(" ".join(f"{where}: not valid YAML: {exc}".split())) from None
    if not isinstance(data, dict):
        raise DiscoveryError(f"{where}: expected a mapping")
    name = context or data.get("current-context")
    if not name:
        raise DiscoveryError(f"{where}: no current-context")
    ctx = _named(data, "contexts", "context", name, where)
    cluster = _named(data, "clusters", "cluster", ctx.get("cluster"), where)
    user = _named(data, "users", "user", ctx.get("user"), where) if ctx.get("user") else {}
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise DiscoveryError(f"{where}: cluster {ctx.get('cluster')!r} has no http(s) server")
    for unsupported in ("exec", "auth-provider"):
        if user.get(unsupported) and not (user.get("token") or user.get("tokenFile") or user.get("client-certificate") or user.get("client-certificate-data")):
            raise DiscoveryError(f"{where}: user {ctx.get('user')!r}: {unsupported} credentials are not supported; use a token or client certificate")
    base = path.parent
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token_file = _file(base, user["tokenFile"])
        try:
            token = token_file.read_text().strip() if token_file else None
        except OSError as exc:
            raise DiscoveryError(f"{where}: cannot read tokenFile {token_file}: {exc.strerror or exc}") from None
    tls = TLSSettings(
        ca_file=_file(base, cluster.get("certificate-authority")),
        ca_data=_data(cluster.get("certificate-authority-data"), f"{where}: certificate-authority-data"),
        cert_file=_file(base, user.get("client-certificate")),
        key_file=_file(base, user.get("client-key")),
        cert_data=_data(user.get("client-certificate-data"), f"{where}: client-certificate-data"),
        key_data=_data(user.get("client-key-data"), f"{where}: client-key-data"),
        verify=not cluster.get("insecure-skip-tls-verify", False),
        server_name=cluster.get("tls-server-name") or None,
    )
    return Credentials(server, token or None, tls)


def _named(data: dict[str, Any], section: str, key: str, name: Any, where: str) -> dict[str, Any]:
    for entry in data.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name and isinstance(entry.get(key), dict):
            return entry[key]
    raise DiscoveryError(f"{where}: no {key} named {name!r} in {section}")


def _file(base: Path, value: Any) -> Path | None:
    return (base / value) if isinstance(value, str) and value else None


def _data(value: Any, where: str) -> bytes | None:
    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise DiscoveryError(f"{where}: not base64") from None
