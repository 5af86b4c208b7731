"""Targets from Consul's catalog: services tagged ``autopgo.scrape=true`` and ``autopgo.scrape.app=<app>``.

Lists ``GET /v1/catalog/services`` (service name -> tags), then for each
matching service ``GET /v1/catalog/service/<name>?tag=autopgo.scrape=true``;
an entry's ``ServiceAddress`` (or the node's ``Address`` when empty) and
``ServicePort`` make the target. Settings not in ``autopgo.yaml`` come from the
environment as the Consul CLI reads it: ``CONSUL_HTTP_ADDR``,
``CONSUL_HTTP_TOKEN`` (or ``CONSUL_HTTP_TOKEN_FILE``), ``CONSUL_HTTP_SSL``,
``CONSUL_HTTP_SSL_VERIFY``, ``CONSUL_CACERT``, ``CONSUL_CAPATH``,
``CONSUL_CLIENT_CERT``, ``CONSUL_CLIENT_KEY`` and ``CONSUL_TLS_SERVER_NAME``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .base import DEFAULT_TIMEOUT, SCRAPE, DiscoveryError, HttpSource, make_target, tag_map, wanted
from .targets import Target
from .tls import TLSSettings, client_tls, env_bool

if TYPE_CHECKING:
    from .options import ConsulTargets

DEFAULT_ADDR = "127.0.0.1:8500"


class ConsulTargetSource(HttpSource):
    """The app's instances as Consul's catalog lists them: services tagged for the app."""

    kind = "consul"

    def __init__(
        self,
        app: str,
        address: str = DEFAULT_ADDR,
        *,
        token: str | None = None,
        datacenter: str | None = None,
        tls: TLSSettings = TLSSettings(),
        use_tls: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(timeout)
        self.app, self.token, self.datacenter, self.tls = app, token, datacenter, tls
        self.base = base_url(address, use_tls, "consul")
        self.last_index: dict[str, int] = {}  # X-Consul-Index per endpoint, for blocking queries

    @classmethod
    def from_config(cls, app: str, cfg: ConsulTargets, env: Mapping[str, str] = os.environ) -> ConsulTargetSource:
        """The source ``cfg`` describes, its unset settings taken from ``CONSUL_*`` in ``env``; ``DiscoveryError``
        if the address is unusable or ``CONSUL_HTTP_TOKEN_FILE`` is needed and cannot be read."""

        def pick(value: Any, name: str) -> Any:
            return value if value is not None else (env.get(name) or None)

        token = pick(cfg.token, "CONSUL_HTTP_TOKEN")
        token_file = env.get("CONSUL_HTTP_TOKEN_FILE")
        if token is None and token_file:
            try:
                token = Path(token_file).read_text().strip() or None
            except OSError as exc:
                raise DiscoveryError(f"consul: cannot read CONSUL_HTTP_TOKEN_FILE {token_file}: {exc.strerror}") from None
        tls = client_tls(cfg.tls, env, "CONSUL", verify=env_bool(env.get("CONSUL_HTTP_SSL_VERIFY"), True))
        return cls(
            app,
            pick(cfg.address, "CONSUL_HTTP_ADDR") or DEFAULT_ADDR,
            token=token,
            datacenter=cfg.datacenter,
            tls=tls,
            use_tls=env_bool(env.get("CONSUL_HTTP_SSL"), False),
            timeout=cfg.timeout,
        )

    def _list(self) -> list[Target]:
        headers = {"X-Consul-Token": self.token} if self.token else {}
        params = {"dc": self.datacenter} if self.datacenter else {}
        verify = self.tls.context("consul") if self.base.startswith("https://") else True
        found: list[Target] = []
        with self._client(verify) as client:
            url = f"{self.base}/v1/catalog/services"
            services, response_headers = self._get(client, url, params=params, headers=headers, extensions=self.tls.extensions)
            self._note_index(url, response_headers)
            if not isinstance(services, dict):
                raise self._fail(url, "expected a mapping of service names to tags")
            names = sorted(name for name, tags in services.items() if isinstance(tags, list) and wanted(tag_map(tags), self.app))
            for name in names:
                url = f"{self.base}/v1/catalog/service/{quote(name, safe='')}"
                entries, response_headers = self._get(
                    client, url, params={**params, "tag": f"{SCRAPE}=true"}, headers=headers, extensions=self.tls.extensions
                )
                self._note_index(url, response_headers)
                if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                    raise self._fail(url, "expected a list of catalog service entries")
                for entry in entries:
                    tags = tag_map(entry.get("ServiceTags"))
                    if not wanted(tags, self.app):
                        continue
                    host = entry.get("ServiceAddress") or entry.get("Address")
                    what = f"consul service {name} instance {entry.get('ServiceID') or entry.get('Node') or '?'}"
                    target = make_target(host, entry.get("ServicePort"), tags, what)
                    if target is not None:
                        found.append(target)
        return found

    def _note_index(self, url: str, headers: Any) -> None:
        value = headers.get("X-Consul-Index")
        if value and value.isdigit():
            self.last_index[url] = int(value)


def base_url(address: str, use_tls: bool, source: str) -> str:
    """``host:port`` or ``scheme://host:port`` as a base URL (``use_tls`` picks https when no scheme)."""
    address = address.strip().rstrip("/")
    if "://" in address:
        scheme = address.split("://", 1)[0].lower()
        if scheme not in ("http", "https"):
            raise DiscoveryError(f"{source}: address {address!r}: only http:// and https:// addresses are supported")
        if scheme == "http" and use_tls:
            address = "https://" + address.split("://", 1)[1]
        return address
    if not address:
        raise DiscoveryError(f"{source}: no address")
    return f"{'https' if use_tls else 'http'}://{address}"
