"""Small local stand-ins for the Kubernetes, Consul and Nomad HTTP APIs, and a test CA.

Each fake answers with bodies shaped as the system documents them (a PodList
with ``metadata.continue``; Consul's catalog with ``X-Consul-Index``; Nomad's
service registrations with ``X-Nomad-NextToken``), checks the token header the
real server reads, and can be told to fail: ``fail = "401" | "500" | "slow" |
"malformed"``. Servers bind 127.0.0.1 on a free port, optionally over TLS.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

# -- a test CA, made with the openssl command ---------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    named_cert: Path  # only for DNS name "discovery.service.test"
    named_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing the servers use


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(folder: Path) -> Certs:
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2",
            "-subj", f"/CN=autopgo test {ca}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=folder,
        )  # fmt: skip
    leaves = {
        "server": ("serverAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        "named": ("serverAuth", "subjectAltName=DNS:discovery.service.test"),
        "client": ("clientAuth", ""),
    }
    for name, (usage, san) in leaves.items():
        ext = folder / f"{name}.ext"
        lines = ["basicConstraints=CA:FALSE", f"extendedKeyUsage={usage}", "subjectKeyIdentifier=hash",
                 "authorityKeyIdentifier=keyid,issuer", "keyUsage=critical,digitalSignature,keyEncipherment"]
        ext.write_text("\n".join(lines + ([san] if san else [])) + "\n")
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=autopgo-{name}", cwd=folder)
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", ext.name, cwd=folder,
        )  # fmt: skip
    f = folder
    return Certs(f / "ca.crt", f / "server.crt", f / "server.key", f / "named.crt", f / "named.key",
                 f / "client.crt", f / "client.key", f / "other-ca.crt")  # fmt: skip


def server_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(client_ca)
    return ctx


# -- the server ---------------------------------------------------------------------


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    client_cert: bool


class FakeAPI:
    """A threaded HTTP(S) server on 127.0.0.1 that routes GETs to ``route``."""

    def __init__(self, token: str | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.token, self.tls = token, tls
        self.fail: str | None = None
        self.slow_seconds = 2.0
        self.seen: list[Seen] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # subclasses: ---------------------------------------------------------------
    def authorized(self, seen: Seen) -> bool:
        raise NotImplementedError

    def denied(self) -> tuple[int, Any]:
        return 403, "Permission denied"

    def route(self, seen: Seen) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError

    # ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    @property
    def address(self) -> str:
        return self.url.split("://", 1)[1]

    @contextmanager
    def running(self) -> Iterator[FakeAPI]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                cert = isinstance(self.connection, ssl.SSLSocket) and bool(self.connection.getpeercert())
                seen = Seen(unquote(parts.path), query, {k.lower(): v for k, v in self.headers.items()}, cert)
                api.seen.append(seen)
                try:
                    status, body, headers = api.answer(seen)
                    raw = body if isinstance(body, bytes) else (json.dumps(body) if not isinstance(body, str) else body).encode()
                    self.send_response(status)
                    ctype = "application/json" if not isinstance(body, str) else "text/plain; charset=utf-8"
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(raw)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request: Any, client_address: Any) -> None:
                if api.tls is not None:
                    try:
                        request.settimeout(5)
                        request = api.tls.wrap_socket(request, server_side=True)
                    except (ssl.SSLError, OSError):
                        return
                super().finish_request(request, client_address)

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)

    def answer(self, seen: Seen) -> tuple[int, Any, dict[str, str]]:
        if self.fail == "slow":
            time.sleep(self.slow_seconds)
        if self.fail == "500":
            return 500, "internal error: the leader is gone", {}
        if self.fail == "401" or not self.authorized(seen):
            status, body = (401, self.denied()[1]) if self.fail == "401" else self.denied()
            return status, body, {}
        status, body, headers = self.route(seen)
        if self.fail == "malformed" and status == 200:
            return 200, b"{\"items\": [", {}
        return status, body, headers


def paged(items: list[Any], start: str | None, size: int) -> tuple[list[Any], str]:
    """One page of ``items`` from the opaque token ``start``, and the token of the next ("" at the end)."""
    offset = int(start.removeprefix("page-")) if start else 0
    end = offset + size
    return items[offset:end], (f"page-{end}" if end < len(items) else "")


# -- Kubernetes ---------------------------------------------------------------------


def pod(
    name: str,
    ip: str | None,
    *,
    app: str = "checkout",
    namespace: str = "shop",
    phase: str = "Running",
    ready: bool = True,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    """A Pod as the API returns it (the fields autopgo reads, and some it does not)."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-{name}",
        "resourceVersion": "4711",
        "labels": {"autopgo.scrape": "true", "autopgo.scrape.app": app, **(labels or {})},
        "annotations": {"autopgo.scrape.port": "6060", **(annotations or {})},
    }
    if deleting:
        meta["deletionTimestamp"] = "2024-05-01T10:00:00Z"
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [
            {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": "True" if ready else "False"},
            {"type": "ContainersReady", "status": "True" if ready else "False"},
        ],
        "hostIP": "192.168.1.10",
    }
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return {"metadata": meta, "spec": {"containers": [{"name": "app"}]}, "status": status}


class FakeKubernetes(FakeAPI):
    def __init__(self, pods: list[dict[str, Any]], token: str | None = "k8s-token", **kw: Any) -> None:
        super().__init__(token, **kw)
        self.pods = pods
        self.accept_client_cert = False

    def authorized(self, seen: Seen) -> bool:
        if self.accept_client_cert and seen.client_cert:
            return True
        return seen.headers.get("authorization") == f"Bearer {self.token}"

    def denied(self) -> tuple[int, Any]:
        return 401, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                     "message": "Unauthorized", "reason": "Unauthorized", "code": 401}  # fmt: skip

    def route(self, seen: Seen) -> tuple[int, Any, dict[str, str]]:
        parts = seen.path.strip("/").split("/")
        if parts == ["api", "v1", "pods"]:
            namespace = None
        elif len(parts) == 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
            namespace = parts[3]
        else:
            return 404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}, {}
        selector = dict(term.split("=", 1) for term in seen.query.get("labelSelector", "").split(",") if term)
        matching = [
            p for p in self.pods
            if (namespace is None or p["metadata"]["namespace"] == namespace)
            and all(p["metadata"]["labels"].get(k) == v for k, v in selector.items())
        ]  # fmt: skip
        limit = int(seen.query.get("limit") or 0) or len(matching) or 1
        items, following = paged(matching, seen.query.get("continue"), limit)
        meta: dict[str, Any] = {"resourceVersion": "4712"}
        if following:
            meta["continue"] = following
            meta["remainingItemCount"] = len(matching) - int(following.removeprefix("page-"))
        return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": items}, {}


def kubeconfig(path: Path, server: str, **user: Any) -> Path:
    """A kubeconfig at ``path`` whose current context is ``server`` in namespace shop, as user ``user``
    (``token=...`` or client certificate keys; ``cluster=`` adds cluster keys such as a CA)."""
    cluster = user.pop("cluster", {})
    data = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "test",
        "contexts": [
            {"name": "other", "context": {"cluster": "nowhere", "user": "nobody"}},
            {"name": "test", "context": {"cluster": "local", "user": "me", "namespace": "shop"}},
        ],
        "clusters": [{"name": "local", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "me", "user": user}],
    }
    path.write_text(yaml.safe_dump(data))
    return path


# -- Consul -------------------------------------------------------------------------


def consul_entry(service: str, port: int, tags: list[str], *, address: str = "", node_address: str = "10.1.0.1") -> dict[str, Any]:
    """An entry of ``GET /v1/catalog/service/:service``."""
    return {
        "ID": "40e4a748-2192-161a-0510-9bf59fe950b5",
        "Node": f"node-{node_address}",
        "Address": node_address,
        "Datacenter": "dc1",
        "TaggedAddresses": {"lan": node_address, "wan": node_address},
        "NodeMeta": {},
        "ServiceKind": "",
        "ServiceID": f"{service}-{address or node_address}-{port}",
        "ServiceName": service,
        "ServiceTags": tags,
        "ServiceAddress": address,
        "ServiceMeta": {},
        "ServicePort": port,
        "ServiceEnableTagOverride": False,
        "CreateIndex": 10,
        "ModifyIndex": 10,
    }


class FakeConsul(FakeAPI):
    def __init__(self, entries: list[dict[str, Any]], token: str | None = "consul-token", **kw: Any) -> None:
        super().__init__(token, **kw)
        self.entries = entries
        self.index = 1234

    def authorized(self, seen: Seen) -> bool:
        return seen.headers.get("x-consul-token") == self.token

    def denied(self) -> tuple[int, Any]:
        return 403, "ACL not found"

    def route(self, seen: Seen) -> tuple[int, Any, dict[str, str]]:
        headers = {"X-Consul-Index": str(self.index), "X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0"}
        if seen.path == "/v1/catalog/services":
            services: dict[str, list[str]] = {"consul": []}
            for e in self.entries:
                tags = services.setdefault(e["ServiceName"], [])
                tags.extend(t for t in e["ServiceTags"] if t not in tags)
            return 200, services, headers
        if seen.path.startswith("/v1/catalog/service/"):
            name, tag = seen.path.removeprefix("/v1/catalog/service/"), seen.query.get("tag")
            found = [e for e in self.entries if e["ServiceName"] == name and (tag is None or tag in e["ServiceTags"])]
            return 200, found, headers
        return 404, "Invalid URL path", {}


# -- Nomad --------------------------------------------------------------------------


def nomad_registration(service: str, address: str, port: int, tags: list[str], *, namespace: str = "default") -> dict[str, Any]:
    """An entry of ``GET /v1/service/:service_name``."""
    return {
        "ID": f"_nomad-task-{service}-{address}-{port}",
        "ServiceName": service,
        "Namespace": namespace,
        "NodeID": "7dd66d5f-7c4e-4bfa-a2a7-6ba9e3b1b0bd",
        "Datacenter": "dc1",
        "JobID": service,
        "AllocID": f"alloc-{address}-{port}",
        "Tags": tags,
        "Address": address,
        "Port": port,
        "CreateIndex": 29,
        "ModifyIndex": 29,
    }


class FakeNomad(FakeAPI):
    def __init__(self, registrations: list[dict[str, Any]], token: str | None = "nomad-token", **kw: Any) -> None:
        super().__init__(token, **kw)
        self.registrations = registrations
        self.page_size: int | None = None  # None: honour per_page

    def authorized(self, seen: Seen) -> bool:
        return seen.headers.get("x-nomad-token") == self.token

    def route(self, seen: Seen) -> tuple[int, Any, dict[str, str]]:
        ns = seen.query.get("namespace") or "default"
        regs = [r for r in self.registrations if ns == "*" or r["Namespace"] == ns]
        if seen.path == "/v1/services":
            listing: dict[str, dict[str, list[str]]] = {}
            for r in regs:
                tags = listing.setdefault(r["Namespace"], {}).setdefault(r["ServiceName"], [])
                tags.extend(t for t in r["Tags"] if t not in tags)
            body: list[Any] = [
                {"Namespace": n, "Services": [{"ServiceName": s, "Tags": t} for s, t in sorted(services.items())]}
                for n, services in sorted(listing.items())
            ]
        elif seen.path.startswith("/v1/service/"):
            name = seen.path.removeprefix("/v1/service/")
            body = [r for r in regs if r["ServiceName"] == name]
        else:
            return 404, "Invalid URL path", {}
        size = self.page_size or int(seen.query.get("per_page") or 0) or len(body) or 1
        page, following = paged(body, seen.query.get("next_token"), size)
        headers = {"X-Nomad-Index": "29", "X-Nomad-KnownLeader": "true", "X-Nomad-LastContact": "0"}
        if following:
            headers["X-Nomad-NextToken"] = following
        return 200, page, headers
